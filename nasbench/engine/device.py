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


MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
              "GLIBC_TUNABLES")
"""Environment variables by which a user sets glibc's allocator himself: with any of them set,
:func:`keep_freed_memory` leaves it alone."""

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
_kept = False


def keep_freed_memory() -> bool:
    """Make glibc keep the memory a training step frees for the next step (Linux with glibc; once per process).

    By default glibc serves every block of 128 KiB or more (the threshold grows with use, to 32 MiB at most)
    with its own ``mmap`` and gives it back on ``free``, and gives the top of the heap back past a threshold:
    every step then touches its activations' pages anew, a minor page fault per 4 KiB page (50,000 a step in
    GDAS's search, 0.2 s of system time; the README's profile). Here blocks up to 32 MiB come from the heap,
    the heap grows 1 GiB at a time (virtual: a page counts only once touched) and is never trimmed, so a
    process's resident memory stays at its peak, which a run reaches in its first step anyway. Returns
    whether the setting was applied: not on other C libraries, nor when the user set the allocator by
    :data:`MALLOC_ENV`.
    """
    global _kept
    if _kept:
        return True
    import platform
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in MALLOC_ENV):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; -1 for the trim threshold means never trim (mallopt(3))
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20) and mallopt(_M_TRIM_THRESHOLD, -1)
                 and mallopt(_M_TOP_PAD, 1 << 30))
    return _kept


def threads_label(n: int) -> str:
    """``1 thread``, ``4 threads``: the CPU threads in a run's start line."""
    return f"{n} thread{'' if n == 1 else 's'}"


def memory_format(name: str, device: torch.device, net: Optional[nn.Module] = None,
                  impl: Optional[str] = None) -> torch.memory_format:
    """The memory format of ``name``; ``auto`` is channels_last on CPU, where it pays (measured: about 0.6×
    the time of NCHW for a search step), and NCHW on CUDA; the ``reference`` supernet execution is NCHW by
    definition.

    When the answer is channels_last on CPU, the convolutions of ``net`` that PyTorch's channels_last CPU
    kernels crash on (:func:`unsafe_conv`) are switched to run in NCHW (:func:`guard_channels_last`), so a
    net never meets that defect whatever its width, batch or thread count; the rest stays channels_last.
    """
    if impl == "reference" and name != "channels_last":
        return torch.contiguous_format
    fmt = torch.channels_last if name == "channels_last" or (name == "auto" and device.type == "cpu") \
        else torch.contiguous_format
    if fmt == torch.channels_last and device.type == "cpu" and net is not None:
        guard_channels_last(net)
    return fmt


def unsafe_conv(m: nn.Module) -> bool:
    """Whether ``m`` is a convolution whose channels_last CPU backward corrupts the heap in PyTorch.

    Found with 2.14.1 (oneDNN 3.12; ``benchmarks/channels_last_crash.py`` reproduces it without nasbench):
    the weight gradient of a 1×1 convolution with stride > 1 and 2–15 input channels, on a channels_last
    input with an odd batch and more than one thread, aborts ("double free or corruption", "free(): invalid
    next size") or segfaults. 3×3/5×5 strided convolutions (full or depthwise), stride 1, 16 or more input
    channels and NCHW did not crash. Narrow supernets (C=4, PC-DARTS's C/K-channel edges) have such convs
    in their factorized reduces.
    """
    return (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1
            and m.in_channels < 16)


def channels_last_unsafe(net: nn.Module) -> bool:
    """Whether ``net`` has a convolution that channels_last on CPU would crash on (see :func:`unsafe_conv`)."""
    return any(unsafe_conv(m) for m in net.modules())


class NCHWConv2d(nn.Conv2d):
    """A :class:`~torch.nn.Conv2d` that always computes in NCHW (its input and weight made contiguous) and
    hands its output back in its input's layout, so that the layers around it stay channels_last.

    :func:`guard_channels_last` turns the convolutions that PyTorch's channels_last CPU kernels crash on into
    this class; parameters, ``state_dict`` and ``isinstance(m, nn.Conv2d)`` are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = x.dim() == 4 and x.stride(1) < x.stride(3)
        y = self._conv_forward(_nchw_strides(x), _nchw_strides(self.weight), self.bias)
        return y.contiguous(memory_format=torch.channels_last) if channels_last else y


def _nchw_strides(t: torch.Tensor) -> torch.Tensor:
    """``t`` with the strides of NCHW. ``contiguous()`` is not enough: a 1×1 weight in channels_last has strides
    (C, 1, C, C), which count as contiguous, and PyTorch picks its channels_last kernel from them."""
    return t if t.stride() == torch.empty(t.shape, device="meta").stride() else t.clone(
        memory_format=torch.contiguous_format)


def guard_channels_last(net: nn.Module) -> int:
    """Make every :func:`unsafe_conv` of ``net`` an :class:`NCHWConv2d`; how many there are."""
    n = 0
    for m in net.modules():
        if unsafe_conv(m):
            if type(m) is nn.Conv2d:
                m.__class__ = NCHWConv2d
            n += 1
    return n


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
