"""What every training loop of a run shares: :class:`RunEngine`, the base of the search and train-final
trainers.

The engine holds the device and the distributed context, the console (quiet on ranks other than 0), the
progress bar, Ctrl-C handling (a flag set by the handler; all ranks agree on the step at which they stop),
the checkpoint codec (the fields every checkpoint carries: version, kind, world, elapsed time and each
rank's random state), the divergence check, and the :class:`Recorder` through which rank 0, and only
rank 0, writes the run directory (the other ranks hold a :class:`NullRecorder`). A trainer adds its own
steps and epochs. :func:`run_directory` is the start of a run: rank 0 creates the directory and tells
the other ranks where it is, or every rank opens the directory a resume continues. Everything the engine's
console prints on rank 0 also goes to the run's ``log.txt`` (:class:`RunLog`), with a line every
``report_freq`` steps (on the console too when there is no progress bar, as the original scripts log).

The engine knows no search space, algorithm or command: it never imports those packages.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nasbench.engine import distributed
from nasbench.engine.device import apply_threads, autocast, keep_freed_memory, resolve_device
from nasbench.engine.rng import restore_rank_rng, rng_state
from nasbench.engine.rundir import RunDir, append_jsonl, atomic_torch_save, atomic_write_text, torch_load
from nasbench.errors import NasError

CHECKPOINT_VERSION = 1
LOG = "log.txt"


class TrainingDiverged(NasError):
    """The loss became NaN or infinite."""


class Recorder:
    """Rank 0's writes into the run directory: records, genotypes, tensors, text."""

    def __init__(self, run: RunDir):
        self.run = run

    def metrics(self, record: dict[str, Any]) -> None:
        """One epoch's record, appended to metrics.jsonl."""
        append_jsonl(self.run.metrics_path, record)

    def event(self, record: dict[str, Any]) -> None:
        """One event's record, appended to events.jsonl."""
        append_jsonl(self.run.events_path, record)

    def save_genotype(self, genotype: Any, path: str | Path) -> None:
        """``genotype`` (anything with ``to_dict()``) as JSON, indent 2 and a trailing newline, atomically."""
        self.write_text(path, json.dumps(genotype.to_dict(), indent=2) + "\n")

    def save_torch(self, obj: Any, path: str | Path) -> None:
        atomic_torch_save(obj, path)

    def write_text(self, path: str | Path, text: str) -> None:
        atomic_write_text(path, text)

    def rewind(self, epoch: int) -> None:
        """Before a resume at ``epoch``: drop the records of epochs from ``epoch`` on (see RunDir.rewind)."""
        self.run.rewind(epoch)


class NullRecorder(Recorder):
    """The recorder of ranks other than 0: every write is a no-op."""

    def __init__(self) -> None:
        pass

    def metrics(self, record: dict[str, Any]) -> None:
        pass

    def event(self, record: dict[str, Any]) -> None:
        pass

    def save_genotype(self, genotype: Any, path: str | Path) -> None:
        pass

    def save_torch(self, obj: Any, path: str | Path) -> None:
        pass

    def write_text(self, path: str | Path, text: str) -> None:
        pass

    def rewind(self, epoch: int) -> None:
        pass


class RunLog:
    """A console for the run: what it prints goes to ``console`` (the terminal) and, as plain text, to the
    run's log.txt, appended line by line (a resumed run continues the same file; a crash keeps every line
    printed before it). ``log_only`` writes the file alone (the step lines when a progress bar shows them).
    Everything else (``width``, ``is_terminal``, ...) is the terminal console's."""

    def __init__(self, console: Console, path: Path):
        self.console = console
        self.path = path
        self._file = open(path, "a", encoding="utf-8")
        self._text = Console(file=io.StringIO(), width=120, color_system=None, highlight=False, soft_wrap=True,
                             emoji=False)

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self.console.print(*objects, **kwargs)
        self.log_only(*objects, **kwargs)

    def log_only(self, *objects: Any, **kwargs: Any) -> None:
        if self._file.closed:
            return
        kwargs.pop("style", None)
        with self._text.capture() as cap:
            self._text.print(*objects, **kwargs)
        self._file.write(cap.get())
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


class RunEngine:
    """Device, ranks, console, progress bar, Ctrl-C, checkpoints and records of a run in ``run``.

    A subclass sets ``self.amp`` (the autocast dtype, or None) and ``self.memory_format`` before its steps.
    """

    amp: Optional[torch.dtype] = None
    memory_format: torch.memory_format = torch.contiguous_format

    def __init__(self, cfg: DictConfig, run: RunDir, *, console: Optional[Console] = None,
                 show_progress: bool = True):
        self.cfg = cfg
        self.run = run
        device = resolve_device(cfg.device)
        self.dist = distributed.context(device.type)
        self.device = self.dist.device(device)
        self.threads = apply_threads(cfg.get("threads"), self.dist.world)
        if self.device.type == "cpu":  # a CPU step's activations are the heap's: keep their pages
            keep_freed_memory()
        # only rank 0 prints and writes the run directory
        self.console = console or Console(stderr=True)
        if not self.dist.is_main:
            self.console = Console(stderr=True, quiet=True)
        self.show_progress = show_progress and self.dist.is_main
        self.log: Optional[RunLog] = None
        if self.dist.is_main and run.path.is_dir():  # the run's log.txt: every line the run prints
            self.log = RunLog(self.console, run.path / LOG)
            self.console = self.log  # type: ignore[assignment]
            started = _dt.datetime.now().isoformat(timespec="seconds")
            self.log.log_only(f"--- {started}: {' '.join(_command_line())}")
        self.recorder: Recorder = Recorder(run) if self.dist.is_main else NullRecorder()
        self._interrupted = False
        self.elapsed, self._t0 = 0.0, time.time()

    # ------------------------------------------------------------------ time
    def start_clock(self) -> None:
        """The run (or this resumed part of it) starts now; ``elapsed`` is the time of earlier parts."""
        self.elapsed, self._t0 = 0.0, time.time()

    def elapsed_total(self) -> float:
        return self.elapsed + (time.time() - self._t0)

    # ------------------------------------------------------------------ steps
    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return x, y.to(self.device, non_blocking=True)

    def _autocast(self) -> Any:
        return autocast(self.device, self.amp)

    def check_finite(self, loss: torch.Tensor, what: str, where: Callable[[], str]) -> None:
        """Raise TrainingDiverged when ``loss`` (the ``what`` loss at ``where()``, say "epoch 3, step 7") is
        NaN or infinite."""
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the {what} loss became {float(loss)} at {where()}; the last good checkpoint "
                                   f"is {self.run.checkpoint_path}")

    def _progress(self) -> Progress:
        terminal = self.log.console if self.log is not None else self.console
        return Progress(TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=terminal, transient=True, disable=not self.show_progress)

    def report_step(self, what: str, done: int, total: int, stats: str) -> None:
        """Every ``report_freq`` steps (and at an epoch's last): a line ``what step done/total stats`` in
        log.txt, and on the console too when no progress bar shows the same."""
        freq = int(self.cfg.get("report_freq", 0) or 0)
        if self.log is None or freq <= 0 or (done % freq and done != total):
            return
        line = f"{what} step {done}/{total}  {stats}"
        if self.show_progress:
            self.log.log_only(line, highlight=False)
        else:
            self.log.print(line, highlight=False)

    def close_log(self) -> None:
        if self.log is not None:
            self.log.close()

    # ------------------------------------------------------------------ Ctrl-C
    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._interrupted = True

    @contextlib.contextmanager
    def catching_sigint(self) -> Iterator[None]:
        """Ctrl-C sets a flag (see :meth:`interrupt_requested`) while the block runs."""
        old = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)

    def interrupt_requested(self) -> bool:
        """Whether Ctrl-C reached any rank: all ranks agree on the step at which they stop."""
        return self.dist.any(self._interrupted)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, kind: str, payload: Callable[[], dict[str, Any]]) -> None:
        """Write the checkpoint: ``payload()``'s fields between the shared ones (version, kind, world first;
        elapsed time and random states last). Every rank takes part (each rank's random state is
        gathered); only rank 0 calls ``payload`` and writes."""
        rngs = self.dist.gather_object(rng_state()) if self.dist.enabled else None  # each rank's own stream
        if not self.dist.is_main:
            return
        state = {
            "version": CHECKPOINT_VERSION,
            "kind": kind,
            "world": self.dist.world,
            **payload(),
            "elapsed": self.elapsed_total(),
            "rng": rng_state(),
            "rng_ranks": rngs,
        }
        atomic_torch_save(state, self.run.checkpoint_path)

    def load_checkpoint(self) -> Optional[dict[str, Any]]:
        """The run's checkpoint, read by every rank, if rank 0's run directory has one (rank 0 decides)."""
        if self.dist.broadcast_object(self.run.checkpoint_path.exists()):
            return torch_load(self.run.checkpoint_path)
        return None

    def restore_shared(self, state: dict[str, Any], position: str) -> None:
        """The shared fields of a checkpoint: elapsed time and random states; a note when the number of
        processes changed (``position`` says where the data stream carries on)."""
        self.elapsed = float(state.get("elapsed", 0.0))
        restore_rank_rng(state, self.dist, self.cfg.seed)
        before = int(state.get("world", 1))
        if before != self.dist.world:
            self.console.print(f"re-sharded from {before} to {self.dist.world} process(es): the data position "
                               f"({position}) carries over")


def _command_line() -> list[str]:
    return ["nas", *sys.argv[1:]] if sys.argv and sys.argv[0] else []


def check_run_place(d: distributed.Dist, resume: Optional[Path], out: Optional[str]) -> None:
    """Before the data is loaded and anything is written (rank 0): the run a resume continues exists and no
    other process holds it; a new run's ``out`` is free, or a run that never started (see RunDir.check_new)."""
    if not d.is_main:
        return
    if resume is not None:
        RunDir.open(resume).check_unlocked()
    elif out:
        RunDir.check_new(out)


@contextlib.contextmanager
def restart_hint(resume: Optional[Path]) -> Iterator[None]:
    """A user error while a resume checks its stored config's data names the way out when the run never
    reached its first checkpoint: a new start with corrected flags into the same directory."""
    try:
        yield
    except NasError as exc:
        if resume is None or not RunDir(resume).never_started():
            raise
        raise type(exc)(f"{exc}; {resume} never reached its first checkpoint: start it again with --out "
                        f"{resume} and corrected flags instead of --resume") from exc


def run_directory(d: distributed.Dist, *, resume: Optional[Path], new_path: Callable[[], Any],
                  config_yaml: Callable[[], str], prepare: Optional[Callable[[RunDir], None]] = None,
                  check_writable: bool = False) -> RunDir:
    """The run directory of a run: the one ``resume`` names, opened by every rank (and locked, and with
    ``check_writable`` checked, by rank 0), or a new one at ``new_path()``, which rank 0 creates and locks,
    with config.yaml (``config_yaml()``) and whatever ``prepare(run)`` adds, and tells the other ranks of;
    they never touch it (on other machines it need not exist). Rank 0's run holds the lock (RunDir.lock)
    until the caller unlocks it or the process ends: a second process that would write the directory is
    refused."""
    if resume is not None:
        run = RunDir.open(resume)
        if d.is_main:
            run.lock()
            if check_writable:
                try:
                    run.check_writable()
                except BaseException:
                    run.unlock()
                    raise
        return run
    path = str(new_path())
    if d.is_main:
        run = RunDir.create(path)  # (a directory that never started is reused: its config is overwritten)
        try:
            atomic_write_text(run.config_path, config_yaml())
            if prepare is not None:
                prepare(run)
        except BaseException:
            run.unlock()
            raise
        d.broadcast_object(path)
        return run
    return RunDir(d.broadcast_object(path))
