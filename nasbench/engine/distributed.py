"""Several processes, one search: PyTorch's DistributedDataParallel under torchrun.

``torchrun --nproc-per-node N -m nasbench search ...`` (or ``nas search --nproc N``, which starts torchrun)
runs N copies of the search. :func:`context` reads torchrun's environment and joins the process group (gloo
on CPU, nccl on CUDA, one GPU per local rank). What the copies share:

* the weights: DistributedDataParallel averages their gradients in the weight step;
* the architecture parameters: every architecture gradient a strategy computes goes through
  :meth:`Dist.reduce` (an average over ranks), also the inner gradients of DARTS's second-order step, so
  every rank takes the same architecture step; GDAS draws its Gumbel noise from its own seeded generator,
  the same on every rank, and P-DARTS's pruning and SGAS's decisions follow from α alone;
* the data: each rank takes every N-th sample of the global batch (see :class:`nasbench.data.EpochSampler`);
  the batch size asked for is the global one.

Only rank 0 writes the run directory and prints. Once per epoch every rank compares its architecture
parameters with rank 0's (:meth:`Dist.check_same`) and stops the run if they differ.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from nasbench.engine import command
from nasbench.errors import ConfigError, NasError


class RanksDiverged(NasError):
    """The ranks' architecture parameters differ: the run cannot go on."""


@dataclass
class Dist:
    """This process's place in the run: ``rank`` of ``world`` processes (``local_rank`` on its machine).

    One process without torchrun: rank 0 of 1, and every collective below is the identity. Under torchrun
    the process group is joined whatever the number of processes, so ``--nproc 1`` runs the distributed
    path (DDP, the collectives, nccl on a GPU) with one process.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Where small tensors for collectives live: nccl moves CUDA tensors only."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def describe(self, global_batch: int) -> str:
        """The log line of a distributed run: processes, backend and the split of the global batch."""
        procs = f"{self.world} process{'es' if self.world != 1 else ''}"
        return (f"distributed: {procs} ({self.backend}); global batch {global_batch} = "
                f"{self.world} × {global_batch // self.world} per process")

    def device(self, requested: torch.device) -> torch.device:
        """CUDA runs use the local rank's GPU."""
        if self.enabled and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def data_parallel(self, module: nn.Module, *, find_unused: bool, sync_buffers: bool,
                      init_sync: bool = True) -> nn.Module:
        """``module`` under DistributedDataParallel (itself in one process).

        ``find_unused``: a forward may leave parameters without gradient. ``sync_buffers``: rank 0's buffers
        (BN running statistics) are copied to every rank at each forward; without it each rank keeps its own
        (the buffers are still made equal once, at the start). PyTorch 2.14 renamed ``broadcast_buffers``
        to ``forward_sync_buffers``; both spellings are served. ``init_sync=False`` (a module wrapped again
        mid-run, its parameters equal on every rank already): nothing is copied from rank 0, so the ranks keep
        their own buffers; only where :func:`can_rewrap`.
        """
        if not self.enabled:
            return module
        for p in module.parameters():
            _grads_in_layout_of(p)
        ddp = nn.parallel.DistributedDataParallel
        kw = {"forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters
              else "broadcast_buffers": sync_buffers}
        if not init_sync:
            if not can_rewrap():
                raise RuntimeError("this PyTorch's DistributedDataParallel has no init_sync")
            kw["init_sync"] = False
        cuda = next(module.parameters()).device.type == "cuda"
        return ddp(module, device_ids=[torch.cuda.current_device()] if cuda else None,
                   find_unused_parameters=find_unused, **kw)

    def reduce(self, grads: Sequence[Optional[torch.Tensor]]) -> list[Optional[torch.Tensor]]:
        """The average over ranks of each gradient (None stays None); the identity in one process.

        The gradients travel flattened, one all-reduce per dtype and device (DARTS's second order averages
        a gradient for every weight tensor).
        """
        out = list(grads)
        if not self.enabled:
            return out
        groups: dict[tuple, list[int]] = {}
        for i, g in enumerate(out):
            if g is not None:
                groups.setdefault((g.dtype, g.device), []).append(i)
        for idx in groups.values():
            flat = torch.cat([out[i].detach().reshape(-1) for i in idx])  # type: ignore[union-attr]
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.world
            offset = 0
            for i in idx:
                g = out[i]
                n = g.numel()  # type: ignore[union-attr]
                out[i] = flat[offset:offset + n].view_as(g)
                offset += n
        return out

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (meters)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().tolist()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (every rank gets the same answer)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's."""
        if not self.enabled:
            return
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable)."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.comm_device)
        return box[0]

    def gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def check_same(self, tensors: dict[str, torch.Tensor], what: str = "architecture parameter") -> None:
        """Raise :class:`RanksDiverged` on every rank if any rank's ``tensors`` differ from rank 0's (bitwise).

        Two all-gathers: first a digest of the names and shapes (the tensors themselves can be compared
        only where those agree), then per tensor a 64-bit digest of its bytes and its float64 sum (shown).
        """
        if not self.enabled:
            return
        names = sorted(tensors)
        layout = _digest64("|".join(f"{n}{tuple(tensors[n].shape)}" for n in names).encode())
        mine = torch.tensor([layout], dtype=torch.int64, device=self.comm_device)
        got = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(got, mine)
        bad = [r for r, g in enumerate(got) if not torch.equal(g, got[0])]
        if bad:
            raise RanksDiverged(f"the {what}s of rank {bad[0]} are not those of rank 0 (names or shapes "
                                f"differ: {', '.join(names)}); the processes no longer run the same search")
        rows = []
        for n in names:
            t = tensors[n].detach().cpu().contiguous()
            total = t.double().sum().reshape(1)
            rows.append(torch.tensor([_digest64(t.numpy().tobytes()), int(total.view(torch.int64))],
                                     dtype=torch.int64))
        mine = torch.stack(rows).to(self.comm_device) if rows else torch.zeros(0, 2, dtype=torch.int64,
                                                                                device=self.comm_device)
        got = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(got, mine)
        for r in range(1, self.world):
            for i, n in enumerate(names):
                if not torch.equal(got[r][i], got[0][i]):
                    s0 = got[0][i, 1:].cpu().view(torch.float64).item()
                    sr = got[r][i, 1:].cpu().view(torch.float64).item()
                    raise RanksDiverged(
                        f"the {what} {n} of rank {r} differs from rank 0's (sum {sr!r} vs {s0!r}): the processes "
                        "no longer run the same search; stopping")

    def close(self, wait: bool = False) -> None:
        """Leave the process group; ``wait`` (a run that ended normally): first wait for every rank, so
        that no rank tears gloo down while another still talks to it (seen: a rank aborting with
        "terminate called without an active exception" when rank 0 was still writing results)."""
        if self.enabled and dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()


def can_rewrap() -> bool:
    """Whether a module can be wrapped in DDP again mid-run without copying rank 0's buffers to every rank
    (``init_sync``, which PyTorch 2.1's DDP lacks)."""
    return "init_sync" in inspect.signature(nn.parallel.DistributedDataParallel).parameters


def _grads_in_layout_of(p: torch.Tensor) -> None:
    """Hand ``p``'s gradients on in ``p``'s own strides (once per parameter).

    DDP copies each weight gradient into a bucket view with the parameter's strides and warns (once per process,
    four lines on the console) when the gradient's strides differ. A weight with dimensions of size 1 has more
    than one set of strides for one and the same memory order: a depthwise conv's [C, 1, k, k] in channels_last
    has (k², 1, k, 1) where the kernels that compute its gradient give (k², k², k, 1), a 1×1 conv's [C', C, 1, 1]
    (C, 1, C, C) against (C, 1, 1, 1). Such a gradient becomes a view with the parameter's strides (no copy);
    any other layout is copied, as DDP would have copied it (:func:`in_layout_of`)."""
    if getattr(p, "_nasbench_layout_hook", False) or not p.requires_grad:
        return

    p.register_hook(lambda g: in_layout_of(g, p))
    p._nasbench_layout_hook = True


def in_layout_of(g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``g`` with ``p``'s strides: a view where they differ only in dimensions of size 1, else a copy."""
    if g.shape != p.shape or g.stride() == p.stride():
        return g
    if all(gs == ps for gs, ps, n in zip(g.stride(), p.stride(), g.shape) if n > 1):
        return g.as_strided(p.shape, p.stride())
    return torch.empty_strided(p.shape, p.stride(), dtype=g.dtype, device=g.device).copy_(g)


def _digest64(data: bytes) -> int:
    """A signed 64-bit digest of ``data`` (sha256's first 8 bytes)."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little", signed=True)


_CONTEXT: Optional[Dist] = None


def context(device_type: str = "cpu") -> Dist:
    """The process's place in the run, from torchrun's environment (joined once); one process without it."""
    global _CONTEXT
    if _CONTEXT is not None:
        return _CONTEXT
    if "WORLD_SIZE" not in os.environ:
        _CONTEXT = Dist()
        return _CONTEXT
    world = int(os.environ["WORLD_SIZE"])
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    _CONTEXT = Dist(rank=rank, world=world, local_rank=local, backend=backend)
    return _CONTEXT


def shutdown(wait: bool = False) -> None:
    """Leave the process group (see :meth:`Dist.close`); nothing in one process or when already left."""
    global _CONTEXT
    if _CONTEXT is not None:
        _CONTEXT.close(wait)
    _CONTEXT = None


def check_sync_bn(sync_bn: bool, device: torch.device) -> None:
    """``--sync-bn`` needs CUDA: PyTorch's SyncBatchNorm has no CPU implementation."""
    if sync_bn and device.type != "cuda":
        raise ConfigError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm does not run on CPU); without it each "
                          "process keeps its own BatchNorm statistics, as single-GPU searches do")


def rank_seed(seed: int, rank: int, salt: int = 0) -> int:
    """A seed for ``rank``'s own random stream, distinct per rank (and per ``salt``)."""
    return (int(seed) * 1_000_003 + 7_919 * (int(rank) + 1) + 104_729 * int(salt)) % (2**63)


def split_batch(global_batch: int, world: int, what: str = "batch_size") -> int:
    """The per-rank batch of a global batch; the global batch must divide evenly."""
    if global_batch % world:
        raise ConfigError(f"{what}={global_batch} does not split over {world} processes; use a multiple of {world}")
    return global_batch // world


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def launch(nproc: int, argv: Sequence[str], threads: Optional[int] = None) -> int:
    """Run ``python -m nasbench <argv>`` under torchrun with ``nproc`` local processes; their exit code. Where
    ``$NASBENCH_NAS_COMMAND`` is set, each process starts as that command with ``argv`` after it instead
    (torchrun's ``--no-python``; see :mod:`nasbench.engine.command`).

    torchrun runs in a child process (:func:`torchrun_main`, which passes on the workers' own exit code,
    e.g. 2 for a user error, where torchrun itself would say 1). Each process gets ``OMP_NUM_THREADS`` =
    threads / nproc with ``threads`` (the run's ``--threads``), else cores / nproc unless the user set it
    (at least 1). Ctrl-C reaches the workers directly (they share the
    terminal), which checkpoint and stop; this process just waits for them.
    """
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(max(1, threads // nproc))
    else:
        env.setdefault("OMP_NUM_THREADS", str(max(1, cores() // nproc)))
    worker = ["--no-python", *command.nas_command()] if command.custom() else ["-m", "nasbench"]
    cmd = [sys.executable, "-m", "nasbench.engine.distributed", "--standalone", f"--nproc-per-node={nproc}",
           *worker, *argv]
    proc = subprocess.Popen(cmd, env=env)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the workers got it too: wait for their checkpoint
            continue


class _QuietAgent(logging.Filter):
    """Drops torchrun's own lines about stopping the workers when a worker already explained why: a user
    error (exit code 2, one ``error:`` line per rank) or Ctrl-C (the workers checkpoint and say so). A
    worker that dies otherwise (a crash, a signal, an exit code other than 2) is still reported."""

    _NOISE = ("closing signal", "death signal", "termination signal", "(exitcode: 2)")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self._NOISE)


def torchrun_main(argv: Optional[Sequence[str]] = None) -> int:
    """``torchrun`` (same arguments) whose exit code is the first failed worker's own (128+N for signal N)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    quiet = _QuietAgent()
    for name in ("torch.distributed.elastic.multiprocessing.api", "torch.distributed.elastic.agent.server.api"):
        logging.getLogger(name).addFilter(quiet)
    try:
        run(parse_args(list(sys.argv[1:] if argv is None else argv)))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        code = int(failure.exitcode)
        return code if code > 0 else 128 + (-code or 1)
    except SignalException as exc:
        return 128 + int(exc.sigval)
    return 0


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    return out


if __name__ == "__main__":  # python -m nasbench.engine.distributed TORCHRUN_ARGS (what `--nproc` starts)
    sys.exit(torchrun_main())
