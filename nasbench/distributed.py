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
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from nasbench.errors import ConfigError, NasError


class RanksDiverged(NasError):
    """The ranks' architecture parameters differ: the run cannot go on."""


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """CUDA runs use the local rank's GPU."""
        if self.enabled and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def reduce(self, grads: Sequence[Optional[torch.Tensor]]) -> list[Optional[torch.Tensor]]:
        """The average over ranks of each gradient (None stays None); the identity in one process."""
        out = list(grads)
        if not self.enabled:
            return out
        for i, g in enumerate(out):
            if g is not None:
                g = g.detach().clone()
                dist.all_reduce(g, op=dist.ReduceOp.SUM)
                out[i] = g / self.world
        return out

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (meters)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def check_same(self, tensors: dict[str, torch.Tensor], what: str = "architecture parameters") -> None:
        """Raise :class:`RanksDiverged` on every rank if any rank's ``tensors`` differ from rank 0's (bitwise)."""
        if not self.enabled:
            return
        names = sorted(tensors)
        digest = hashlib.sha256()
        for n in names:
            digest.update(n.encode())
            digest.update(tensors[n].detach().cpu().contiguous().numpy().tobytes())
        mine = torch.tensor(list(digest.digest()[:16]), dtype=torch.int64)
        gathered = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(gathered, mine)
        bad = [r for r, g in enumerate(gathered) if not torch.equal(g, gathered[0])]
        if bad:
            raise RanksDiverged(f"the {what} of rank(s) {', '.join(map(str, bad))} differ from rank 0's "
                                f"({', '.join(names)}): the processes no longer run the same search; stopping")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


_CONTEXT: Optional[Dist] = None


def context(device_type: str = "cpu") -> Dist:
    """The process's place in the run, from torchrun's environment (joined once); one process without it."""
    global _CONTEXT
    if _CONTEXT is not None:
        return _CONTEXT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _CONTEXT = Dist()
        return _CONTEXT
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    _CONTEXT = Dist(rank=rank, world=world, local_rank=local, backend=backend)
    return _CONTEXT


def shutdown() -> None:
    global _CONTEXT
    if _CONTEXT is not None:
        _CONTEXT.close()
    _CONTEXT = None


def split_batch(global_batch: int, world: int, what: str = "batch_size") -> int:
    """The per-rank batch of a global batch; the global batch must divide evenly."""
    if global_batch % world:
        raise ConfigError(f"{what}={global_batch} does not split over {world} processes; use a multiple of {world}")
    return global_batch // world


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m nasbench <argv>`` under torchrun with ``nproc`` local processes; its exit code.

    Each process gets ``OMP_NUM_THREADS`` = cores / nproc (at least 1) unless the user set it.
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "nasbench", *argv]
    return subprocess.call(cmd, env=env)


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
