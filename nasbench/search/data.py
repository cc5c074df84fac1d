"""The data of a search: the training set split into a weight half and an architecture half, and the
seeded stream of architecture batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from omegaconf import DictConfig

from nasbench import data as data_mod
from nasbench.config import data_options
from nasbench.errors import NasError


@dataclass
class SearchData:
    dataset: Any
    weight_idx: list[int]
    arch_idx: list[int]
    num_classes: int
    in_channels: int


def load_search_data(cfg: DictConfig) -> SearchData:
    """The training set, a subset of it if asked, split into a weight half and an architecture half."""
    d = cfg.data
    opts = data_options(cfg)
    info = data_mod.dataset_info(d.dataset, d.data_dir, **opts)
    transform = data_mod.train_transform(info, cutout=d.cutout)
    ds = data_mod.load_dataset(d.dataset, d.data_dir, True, transform, download=d.download, **opts)
    indices = data_mod.subset_indices(len(ds), d.subset, cfg.seed)
    weight_idx, arch_idx = data_mod.search_split(indices, d.train_portion)
    if min(len(weight_idx), len(arch_idx)) < 1:
        raise NasError(f"the search split of {len(indices)} images leaves a half empty; use more images")
    return SearchData(ds, weight_idx, arch_idx, info.num_classes, info.in_channels)


class ArchStream:
    """Batches of the architecture half, walked epoch after epoch in a seeded order.

    The DARTS code draws a fresh random batch every step; walking a seeded order instead makes the
    position a pair (pass, offset) that a checkpoint can restore exactly.
    """

    def __init__(self, dataset: Any, indices: list[int], seed: int, workers: int, pin: bool, rank: int = 0,
                 world: int = 1):
        self.dataset, self.indices, self.seed = dataset, indices, seed
        self.rank, self.world = rank, world
        self.workers, self.pin = workers, pin
        self.pass_, self.offset = 0, 0
        self._iter: Optional[Iterator] = None
        self._bs: Optional[int] = None

    def next(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iter is None or batch_size != self._bs:
            self._start(batch_size)
        try:
            x, y = next(self._iter)  # type: ignore[arg-type]
        except StopIteration:
            self.pass_, self.offset = self.pass_ + 1, 0
            self._start(batch_size)
            x, y = next(self._iter)  # type: ignore[arg-type]
        self.offset += batch_size * self.world if self.world > 1 else len(y)  # global samples
        return x, y

    def _start(self, batch_size: int) -> None:
        self._bs = batch_size
        loader = data_mod.make_loader(self.dataset, self.indices, batch_size, seed=self.seed + 1, epoch=self.pass_,
                                      start_sample=self.offset, workers=self.workers, pin_memory=self.pin,
                                      what="the architecture half of the search split", rank=self.rank,
                                      world=self.world, drop_last=self.world > 1)
        self._iter = iter(loader)

    def state(self) -> dict[str, int]:
        return {"pass": self.pass_, "offset": self.offset}

    def load(self, state: dict[str, int]) -> None:
        self.pass_, self.offset, self._iter = int(state["pass"]), int(state["offset"]), None
