"""What a search reports beyond metrics.jsonl: plots, TensorBoard, and the deterministic-algorithms mode.

The trainer calls ``reporter.epoch_end(trainer, record, genotype)`` after each epoch's metrics record,
``run_end`` after best.json, and ``close`` when the run stops (normally or not).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Iterator, Optional

import torch

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
        from nasbench.spaces.darts.genotype import format_genotype_text

        self.writer.add_text("genotype", f"epoch {step}: `{format_genotype_text(genotype)}`", step)
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


@contextlib.contextmanager
def deterministic_mode(on: bool, device: torch.device, console: Any) -> Iterator[list[str]]:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` while the block runs.

    Ops with no deterministic implementation warn instead of failing; each such op is reported once.
    """
    seen: list[str] = []
    if not on:
        yield seen
        return
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    console.print("deterministic algorithms on (torch.use_deterministic_algorithms, warn_only)")
    old_show = warnings.showwarning

    def show(message: Any, category: Any, filename: str, lineno: int, file: Optional[Any] = None,
             line: Optional[str] = None) -> None:
        text = str(message)
        if "deterministic" in text:
            op = text.split(" does not have a deterministic implementation")[0].strip()
            if op not in seen:
                seen.append(op)
                console.print(f"[yellow]deterministic:[/] {op} has no deterministic implementation and runs "
                              "nondeterministically", highlight=False)
            return
        old_show(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.filterwarnings("always", message=".*deterministic.*")
        warnings.showwarning = show
        try:
            yield seen
        finally:
            warnings.showwarning = old_show
            torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn
    if seen:
        console.print(f"deterministic: {len(seen)} op(s) ran nondeterministically: {', '.join(seen)}")
    else:
        console.print("deterministic: every op ran a deterministic implementation")
