"""Run directories: config, metrics, per-epoch genotypes and architecture parameters, checkpoints.

Layout of a search run::

    RUN_DIR/
      config.yaml           the resolved config (the run is reproduced from it)
      metrics.jsonl         one JSON record per epoch
      genotypes/epoch_NNN.json   genotype derived at the end of every epoch (global epoch, from 0)
      genotypes/derived_epoch_NNN.json   written by ``nas derive --epoch NNN``
      arch/epoch_NNN.pt     the strategy's state at the end of every epoch (α, β, stage, decisions, ...)
      events.jsonl          strategy events (SGAS decisions, P-DARTS pruning) with their records
      checkpoint.pt         the last checkpoint (everything needed to continue)
      best.json             the final genotype
      .lock                 the owner's pid and host while a process runs the search (an flock)

Every file that a crash could truncate is written atomically: to a temporary file in the same directory,
flushed and fsynced, then renamed over the target, so a reader sees the old file or the new one. Every
file gets the mode an ordinary ``open`` would give it (0666 less the umask), atomic or not.

A process that runs a search or a train-final holds an exclusive ``flock`` on ``RUN_DIR/.lock`` (see
:meth:`RunDir.lock`): a second process that would train into the same directory is refused, naming the
holder. The kernel drops the lock when its process ends, however it ends (Ctrl-C, a crash, ``kill -9``).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from nasbench.errors import NasError, RunDirError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
EVENTS = "events.jsonl"
CHECKPOINT = "checkpoint.pt"
BEST = "best.json"
LOCK = ".lock"
RESULTS = ("checkpoint.pt", "best.json", "result.json", "best.pt")
"""Files whose presence means a run got somewhere: its directory is never reused for a new start."""

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


def umask() -> int:
    """The process's umask, read without changing it where the system tells it (Linux), so that no other
    thread ever creates a file under a temporary umask of 0."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode an ordinary ``open(path, "w")`` gives a new file: 0666 less the umask."""
    return 0o666 & ~umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    make_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise NasError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes it 0600; the result is an ordinary file
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


def file_in_path(path: str | os.PathLike) -> Optional[Path]:
    """The first of ``path``'s existing parent folders that is a file, not a directory (None: none is)."""
    return next((q for q in Path(path).parents if q.exists() and not q.is_dir()), None)


def make_parent(path: str | os.PathLike) -> None:
    """Create ``path``'s parent folders; a parent that is a file (or unwritable) is a NasError."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        bad = file_in_path(path) or parent
        raise NasError(f"cannot write {path}: {bad} is a file, not a directory") from None
    except OSError as exc:
        raise NasError(f"cannot write {path}: {exc.strerror or exc}") from exc


def check_new_file(path: str | os.PathLike, force: bool, option: str) -> Path:
    """An output file the user named (``option``): refuse a directory, and an existing file unless ``force``
    (checked before any work is done)."""
    p = Path(path)
    if p.is_dir():
        raise NasError(f"{option} {p} is a directory; name a file")
    if p.exists() and not force:
        raise NasError(f"{p} already exists; pass --force to overwrite it, or choose another {option}")
    bad = file_in_path(p)
    if bad is not None:
        raise NasError(f"cannot write {p}: {bad} is a file, not a directory")
    return p


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

    def derived_path(self, epoch: int, max_skip: Optional[int] = None) -> Path:
        """Where ``nas derive --epoch/--which best/--max-skip`` writes its genotype (never over best.json)."""
        cap = "" if max_skip is None else f"_max_skip_{max_skip}"
        return self.path / "genotypes" / f"derived_epoch_{epoch:03d}{cap}.json"

    def arch_path(self, epoch: int) -> Path:
        return self.path / "arch" / f"epoch_{epoch:03d}.pt"

    # ------------------------------------------------------------------ creation and checks
    def never_started(self) -> bool:
        """A start that failed before its first checkpoint: config.yaml, but no checkpoint, no epoch
        record and no result. Such a directory can take a new start (:meth:`create` reuses it)."""
        p = self.path
        if not (p / CONFIG).is_file() or any((p / name).exists() for name in RESULTS):
            return False
        if read_jsonl(p / METRICS) or any((p / "arch").glob("epoch_*.pt")):
            return False
        return not any((p / "genotypes").glob("epoch_*.json"))

    @classmethod
    def check_new(cls, path: str | os.PathLike) -> bool:
        """Whether a new run can go to ``path`` (True: it reuses a directory that never started), checked
        before anything is written: an existing file, a run that got somewhere, a foreign non-empty
        directory or a directory in use are RunDirErrors."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise RunDirError(f"--out {p} is a file, not a directory; name a new directory")
        bad = file_in_path(p)
        if bad is not None:
            raise RunDirError(f"cannot write to output directory {p}: {bad} is a file, not a directory")
        if not p.exists() or not any(p.iterdir()):
            return False
        run = cls(p)
        run.check_unlocked()  # a run in progress is named as such, whatever it has written yet
        if not run.never_started():
            if (p / CONFIG).is_file():
                raise RunDirError(f"run directory {p} already exists and is not empty; use --resume {p} to "
                                  "continue it")
            raise RunDirError(f"output directory {p} already exists and is not empty (and is no run directory); "
                              "name a new directory")
        return True

    @classmethod
    def create(cls, path: str | os.PathLike) -> "RunDir":
        """Make a new run directory, locked by this process; refuse an existing non-empty one, except a run
        that never started (its config is then overwritten), and report unwritable places."""
        p = Path(path)
        reuse = cls.check_new(p)
        try:
            p.mkdir(parents=True, exist_ok=True)
            (p / "genotypes").mkdir(exist_ok=True)
            (p / "arch").mkdir(exist_ok=True)
            probe = p / ".write-test"
            probe.write_bytes(b"x" * 4096)
            probe.unlink()
        except OSError as exc:
            raise RunDirError(f"cannot write to output directory {p}: {exc.strerror or exc}") from exc
        run = cls(p)
        run.lock()
        if reuse and not run.never_started():  # another process got it going in between
            run.unlock()
            raise RunDirError(f"run directory {p} already exists and is not empty; use --resume {p} to continue it")
        run.reused = reuse
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDir":
        """An existing run directory; a missing or foreign directory is a RunDirError."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise RunDirError(f"{p} is a file, not a run directory")
        if not p.is_dir():
            raise RunDirError(f"run directory not found: {p}")
        if not (p / CONFIG).is_file():
            raise RunDirError(f"{p} is not a nasbench run directory (no {CONFIG})")
        return cls(p)

    # ------------------------------------------------------------------ the lock of the owning process
    reused = False
    _lock_fd: Optional[int] = None

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK

    def lock(self) -> None:
        """Hold ``RUN_DIR/.lock`` (an exclusive flock, with this process's pid and host in it) until
        :meth:`unlock` or the end of the process; a directory another process holds is a RunDirError that
        names it. Where the file system has no locks the run goes on unlocked."""
        if fcntl is None or self._lock_fd is not None:
            return
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunDirError(f"cannot write to run directory {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirError(self._in_use()) from None
            return  # (ENOLCK, EOPNOTSUPP: no locks on this file system)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock (the file stays: removing it would race with a process about to lock it)."""
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor drops the flock

    def check_unlocked(self) -> None:
        """A RunDirError naming the holder when another process holds the directory's lock."""
        if fcntl is None or not self.lock_path.is_file() or self._lock_fd is not None:
            return
        self.lock()
        self.unlock()

    def _in_use(self) -> str:
        try:
            pid, _, host = self.lock_path.read_text(encoding="utf-8").strip().partition(" ")
        except OSError:
            pid, host = "", ""
        who = f"process {pid}" + (f" on {host}" if host else "") if pid else "another process"
        return (f"run directory {self.path} is in use by {who}; wait for it to finish or stop it "
                f"(Ctrl-C saves a checkpoint), then use --resume {self.path}")

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
