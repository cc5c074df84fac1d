"""What a search reports beyond metrics.jsonl: plots and TensorBoard (the deterministic-algorithms mode is
:func:`nasbench.engine.device.deterministic_mode`).

The trainer calls ``reporter.epoch_end(trainer, record, genotype)`` after each epoch's metrics record,
``run_end`` after best.json, and ``close`` when the run stops (normally or not).
"""

from __future__ import annotations

import contextlib
from typing import Any

from nasbench.errors import ConfigError

TENSORBOARD_HINT = "pip install 'nasbench[tensorboard]' (or: pip install tensorboard)"


class Reporter:
    def epoch_end(self, trainer: Any, record: dict[str, Any], genotype: Any) -> None:
        pass

    def run_end(self, trainer: Any, genotype: Any) -> None:
        pass

    def close(self) -> None:
        pass


class PlotReporter(Reporter):
    """RUN_DIR/plots/*.png at the end of the run (see :mod:`nasbench.report.plots`)."""

    def __init__(self, console: Any):
        self.console = console

    def run_end(self, trainer: Any, genotype: Any) -> None:
        from nasbench.report import plots

        written = plots.write_run_plots(trainer.run, trainer.cfg, say=lambda m: self.console.print(m))
        if written:
            self.console.print(f"plots: {trainer.run.path / 'plots'}")


def check_tensorboard() -> None:
    """Raise ConfigError with the install line when torch.utils.tensorboard cannot be used."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--tensorboard needs the tensorboard package, which is not installed: "
                          f"{TENSORBOARD_HINT}") from exc


class TensorBoardReporter(Reporter):
    """Scalars of every metrics record, histograms of the architecture weights, the genotype as text."""

    def __init__(self, run: Any):
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run.path / "tensorboard"))

    def epoch_end(self, trainer: Any, record: dict[str, Any], genotype: Any) -> None:
        step = int(record["epoch"])
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self.writer.add_scalar(f"search/{key}", value, step)
        s = trainer.strategy
        for t in s.spec.cell_types:
            self.writer.add_histogram(f"arch/{t}_alpha", s.alpha(t).detach().cpu(), step)
            self.writer.add_histogram(f"arch/{t}_op_weights", s.op_probabilities(t).cpu(), step)
        self.writer.add_text("genotype", f"epoch {step}: `{s.space.format_text(genotype)}`", step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def make_reporters(cfg: Any, run: Any, console: Any) -> list[Reporter]:
    reporters: list[Reporter] = []
    if cfg.get("plots", True):
        reporters.append(PlotReporter(console))
    if cfg.get("tensorboard", False):
        reporters.append(TensorBoardReporter(run))
    return reporters


def run_end(reporters: list[Reporter], trainer: Any, genotype: Any) -> None:
    for r in reporters:
        r.run_end(trainer, genotype)


def close_all(reporters: list[Reporter]) -> None:
    for r in reporters:
        with contextlib.suppress(Exception):
            r.close()
