"""Run directories: config, metrics, per-epoch genotypes and architecture parameters, checkpoints.

Layout of a search run::

    RUN_DIR/
      config.yaml           the resolved config (the run is reproduced from it)
      metrics.jsonl         one JSON record per epoch
      genotypes/epoch_NNN.json   genotype derived at the end of every epoch (global epoch, from 0)
      arch/epoch_NNN.pt     the strategy's state at the end of every epoch (α, β, stage, decisions, ...)
      events.jsonl          strategy events (SGAS decisions, P-DARTS pruning) with their records
      checkpoint.pt         the last checkpoint (everything needed to continue)
      best.json             the final genotype

Every file that a crash could truncate is written atomically: to a temporary file in the same directory,
flushed and fsynced, then renamed over the target, so a reader sees the old file or the new one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from nasbench.errors import NasError, RunDirError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
EVENTS = "events.jsonl"
CHECKPOINT = "checkpoint.pt"
BEST = "best.json"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise NasError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def torch_load(path: str | os.PathLike) -> Any:
    """Load a checkpoint-like file with ``weights_only=True``; unreadable files are RunDirErrors."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"no such file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{path} is truncated or corrupted and cannot be loaded ({first[:200]})") from exc


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON line and fsync it (a line is either whole or, after a crash, dropped on read)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (crash mid-write) is ignored."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class RunDir:
    """A search (or train-final) run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # ------------------------------------------------------------------ paths
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def events_path(self) -> Path:
        return self.path / EVENTS

    @property
    def best_path(self) -> Path:
        return self.path / BEST

    def genotype_path(self, epoch: int) -> Path:
        return self.path / "genotypes" / f"epoch_{epoch:03d}.json"

    def arch_path(self, epoch: int) -> Path:
        return self.path / "arch" / f"epoch_{epoch:03d}.pt"

    # ------------------------------------------------------------------ creation and checks
    @classmethod
    def create(cls, path: str | os.PathLike) -> "RunDir":
        """Make a new run directory; refuse an existing non-empty one, report unwritable places."""
        p = Path(path)
        if p.exists() and any(p.iterdir()):
            raise RunDirError(f"run directory {p} already exists and is not empty; use --resume {p} to continue it")
        try:
            p.mkdir(parents=True, exist_ok=True)
            (p / "genotypes").mkdir(exist_ok=True)
            (p / "arch").mkdir(exist_ok=True)
            probe = p / ".write-test"
            probe.write_bytes(b"x" * 4096)
            probe.unlink()
        except OSError as exc:
            raise RunDirError(f"cannot write to output directory {p}: {exc.strerror or exc}") from exc
        return cls(p)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDir":
        """An existing run directory; a missing or foreign directory is a RunDirError."""
        p = Path(path)
        if not p.is_dir():
            raise RunDirError(f"run directory not found: {p}")
        if not (p / CONFIG).is_file():
            raise RunDirError(f"{p} is not a nasbench run directory (no {CONFIG})")
        return cls(p)

    def check_writable(self, size: int = 1 << 20) -> None:
        """Write and remove a probe file of ``size`` bytes: an unwritable directory or a full disk is a
        RunDirError now rather than at the first checkpoint."""
        probe = self.path / ".write-test"
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * size)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise RunDirError(f"cannot write to run directory {self.path}: {exc.strerror or exc}") from exc
        finally:
            try:
                probe.unlink()
            except OSError:
                pass

    def epochs_saved(self) -> list[int]:
        d = self.path / "arch"
        if not d.is_dir():
            return []
        return sorted(int(f.stem.split("_")[1]) for f in d.glob("epoch_*.pt"))

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path)

    def rewind(self, epoch: int) -> int:
        """Before a resume from a checkpoint at ``epoch``: drop the metrics and events records of epochs
        ``>= epoch`` (a process killed after logging an epoch but before its checkpoint wrote them, and the
        resumed run writes them again) and any torn last line. Returns how many records were dropped."""
        dropped = 0
        for path in (self.metrics_path, self.events_path):
            if not path.is_file():
                continue
            records = read_jsonl(path)
            keep = [r for r in records if int(r.get("epoch", -1)) < epoch]
            text = "".join(json.dumps(r, sort_keys=False) + "\n" for r in keep)
            if text != path.read_text(encoding="utf-8"):
                atomic_write_text(path, text)
            dropped += len(records) - len(keep)
        return dropped

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.events_path)
