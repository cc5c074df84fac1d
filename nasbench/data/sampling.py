"""Subsets, the DARTS search split, and resumable, distributed-aware loaders.

Batches come in an order that depends only on ``(seed, epoch)`` (:class:`EpochSampler`), so a run that
stops mid-epoch can resume at batch ``b`` and see exactly the rest of that epoch; with several processes
each rank takes its interleaved share of that same order. :func:`make_loader` builds such a DataLoader.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from nasbench.errors import ConfigError


def _mix(seed: int, epoch: int) -> int:
    """One 64-bit generator seed from ``(seed, epoch)``."""
    return (int(seed) * 1000003 + int(epoch)) & 0xFFFF_FFFF_FFFF_FFFF


def subset_indices(n_total: int, subset: int | None, seed: int) -> list[int]:
    """All of ``range(n_total)``, or ``subset`` of them drawn at random (seeded), in drawn order."""
    if subset is None:
        return list(range(n_total))
    if not 1 <= subset <= n_total:
        raise ConfigError(f"data.subset={subset} must be between 1 and the {n_total} training images")
    g = torch.Generator().manual_seed(_mix(seed, 0))
    return torch.randperm(n_total, generator=g)[:subset].tolist()


def search_split(indices: Sequence[int], portion: float = 0.5) -> tuple[list[int], list[int]]:
    """DARTS's split: the first ``floor(portion·n)`` indices train the weights, the rest the architecture."""
    if not 0.0 < portion <= 1.0:
        raise ConfigError(f"data.train_portion={portion} must be in (0, 1]")
    split = int(math.floor(portion * len(indices)))
    return list(indices[:split]), list(indices[split:])


def random_search_split(indices: Sequence[int], portion: float, seed: int) -> tuple[list[int], list[int]]:
    """GDAS's split (AutoDL-Projects: a fixed random split of the training set into a weight half and an
    architecture half, each listed in ascending order): ``indices`` permuted by a generator seeded from
    ``seed`` alone, the first ``floor(portion·n)`` of the permutation train the weights, the rest the
    architecture; each half sorted."""
    if not 0.0 < portion <= 1.0:
        raise ConfigError(f"data.train_portion={portion} must be in (0, 1]")
    g = torch.Generator().manual_seed(_mix(seed, SPLIT_STREAM))
    perm = torch.randperm(len(indices), generator=g).tolist()
    split = int(math.floor(portion * len(indices)))
    return sorted(indices[i] for i in perm[:split]), sorted(indices[i] for i in perm[split:])


SPLIT_STREAM = 0x5B117
"""The epoch slot of :func:`_mix` that seeds the random search split (far from any epoch number)."""

DRAW_STREAM = 0xD4A3
"""The seed offset of the architecture draws (:class:`DrawBatchSampler`), apart from every loader's."""


class DrawBatchSampler(Sampler[list[int]]):
    """Batches drawn uniformly with replacement from ``indices`` (AutoDL-Projects' SearchDataset: each
    architecture image is ``random.choice(valid_split)``, independent of the weight batch it comes with).

    Batch k (k = ``start``, ``start``+1, ...) is ``batch_size·world`` positions drawn by a generator seeded
    from ``(seed, k)`` alone, so the k-th draw is the same whatever came before (a resumed run continues
    exactly); rank ``rank`` takes positions ``rank, rank + world, ...`` of it. Endless.
    """

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int, start: int = 0, rank: int = 0,
                 world: int = 1):
        self.indices, self.batch_size, self.seed = list(indices), int(batch_size), int(seed)
        self.start, self.rank, self.world = int(start), int(rank), int(world)

    def draw(self, k: int) -> list[int]:
        """The whole (global) k-th batch."""
        g = torch.Generator().manual_seed(_mix(self.seed + DRAW_STREAM, k))
        pos = torch.randint(len(self.indices), (self.batch_size * self.world,), generator=g).tolist()
        return [self.indices[i] for i in pos]

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start
        while True:
            yield self.draw(k)[self.rank::self.world]
            k += 1


class EpochSampler(Sampler[int]):
    """Yields ``indices`` in an order fixed by ``(seed, epoch)`` alone, skipping the first ``start``.

    With ``shuffle=False`` the order is ``indices`` as given. With ``world > 1`` (distributed) rank ``rank``
    takes positions ``start + rank, start + rank + world, ...`` of that order (DistributedSampler's
    interleaving): the ranks' k-th batches of size b together are the single process's k-th batch of size
    world·b, and what all ranks consumed is always a prefix of the order, whatever their number. ``even``
    leaves out the last ``(len - start) % world`` positions, so that every rank yields as many indices (and
    hence as many whole batches: the ranks of a training loader take their steps together).
    """

    def __init__(self, indices: Sequence[int], seed: int, epoch: int, start: int = 0, shuffle: bool = True,
                 rank: int = 0, world: int = 1, even: bool = False):
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.indices = list(indices)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.start = min(int(start), len(self.indices))
        self.shuffle = shuffle
        self.rank, self.world = int(rank), int(world)
        n = len(self.indices)
        self.end = self.start + (n - self.start) // self.world * self.world if even else n

    def order(self) -> list[int]:
        """The whole epoch's order (before skipping ``start``)."""
        if not self.shuffle:
            return list(self.indices)
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        perm = torch.randperm(len(self.indices), generator=g).tolist()
        return [self.indices[i] for i in perm]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start + self.rank:self.end:self.world])

    def __len__(self) -> int:
        return len(range(self.start + self.rank, self.end, self.world))


def make_loader(
    dataset: Dataset,
    indices: Sequence[int],
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    start_batch: int = 0,
    start_sample: int = 0,
    workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    what: str = "the training split",
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """A DataLoader over ``dataset[indices]`` in :class:`EpochSampler` order, starting at batch ``start_batch``
    (plus ``start_sample`` further samples, for positions counted in samples when batch sizes change).

    For a training loader (``shuffle=True``) a batch larger than the split raises :class:`ConfigError`.
    ``rank``/``world`` shard the order over distributed processes (see :class:`EpochSampler`);
    ``batch_size`` is then the per-rank batch and ``start_batch`` counts global batches; with ``drop_last``
    every rank gets the same number of batches (only whole global batches).
    The loader gets its own generator (seeded from ``seed, epoch``), so creating iterators does not consume
    torch's global RNG and worker seeds are reproducible.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if shuffle and batch_size * world > len(indices):
        raise ConfigError(
            f"batch size {batch_size * world} is larger than the {len(indices)} images of {what}; "
            f"lower batch_size or use more data (data.subset, data.train_portion)"
        )
    # positions count global samples: a distributed batch is world × the per-rank ``batch_size``
    sampler = EpochSampler(indices, seed, epoch, start=start_batch * batch_size * world + start_sample,
                           shuffle=shuffle, rank=rank, world=world, even=drop_last)
    # (workers' random streams: each rank its own)
    gen = torch.Generator().manual_seed(_mix(seed + 7919 + 104729 * rank, epoch))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=gen,
    )


def batches_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches one epoch over ``n`` samples gives."""
    return n // batch_size if drop_last else -(-n // batch_size)



__all__ = ["subset_indices", "search_split", "random_search_split", "EpochSampler", "DrawBatchSampler", "make_loader",
           "batches_per_epoch"]
