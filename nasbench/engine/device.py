"""Where and how a run computes: the device, the memory format, autocast, the deterministic-algorithms mode."""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Iterator, Optional

import torch
from torch import nn

from nasbench.errors import ConfigError, NasError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NasError("--device cuda was asked for, but PyTorch sees no CUDA device here; use --device cpu")
    return torch.device(name)


def apply_threads(threads: Optional[int], world: int = 1) -> int:
    """Set this process's intra-op CPU threads to its share of ``threads`` (``world`` processes share them,
    at least one each) and return the count in use.

    None keeps PyTorch's own choice: ``OMP_NUM_THREADS`` when set, else one thread per core. On a busy
    machine that default makes OpenMP threads spin against other processes, so ``--threads`` sets it.
    Inter-op threads are left alone: eager training does not use them, and PyTorch allows setting them only
    before any parallel work.
    """
    if threads is not None:
        torch.set_num_threads(max(1, int(threads) // max(1, world)))
    return torch.get_num_threads()


def threads_label(n: int) -> str:
    """``1 thread``, ``4 threads``: the CPU threads in a run's start line."""
    return f"{n} thread{'' if n == 1 else 's'}"


def memory_format(name: str, device: torch.device, net: Optional[nn.Module] = None,
                  impl: Optional[str] = None) -> torch.memory_format:
    """The memory format of ``name``; ``auto`` is channels_last on CPU, where it pays (measured: about 0.6×
    the time of NCHW for a search step), and NCHW on CUDA.

    ``auto`` falls back to NCHW for a ``net`` that :func:`channels_last_unsafe` flags, and for the
    ``reference`` supernet execution, which is NCHW by definition.
    """
    if name == "channels_last":
        return torch.channels_last
    if impl == "reference":
        return torch.contiguous_format
    if name == "auto" and device.type == "cpu" and not (net is not None and channels_last_unsafe(net)):
        return torch.channels_last
    return torch.contiguous_format


def channels_last_unsafe(net: nn.Module) -> bool:
    """Whether ``net`` has a strided conv with fewer than 8 input channels.

    PyTorch's CPU backward of such a conv in channels_last corrupts the heap (seen with 2.14.1: 1×1
    stride-2 convs with 2–7 input channels abort with "double free or corruption"); narrow supernets
    (C=4, or PC-DARTS's C/K-channel edges) have them in factorized reduces.
    """
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 and m.in_channels < 8 for m in net.modules())


def amp_dtype(name: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of ``amp=name`` on ``device`` (None: no autocast)."""
    if name == "off":
        return None
    if device.type != "cuda":
        if name == "fp16":
            raise ConfigError("amp=fp16 needs a CUDA device; on CPU use amp=bf16 or amp=off")
        return torch.bfloat16
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if name == "bf16" else torch.float16


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> Any:
    """``torch.autocast`` to ``dtype`` on ``device``'s type; nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


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
