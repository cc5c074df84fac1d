"""The data of a search: the training set split into a weight half and an architecture half (by index, or at
random and recorded), and the architecture batches (a seeded stream, or independent draws)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from nasbench import data as data_mod
from nasbench.config import data_options
from nasbench.errors import NasError, RunDirError


@dataclass
class SearchData:
    dataset: Any
    weight_idx: list[int]
    arch_idx: list[int]
    num_classes: int
    in_channels: int


SPLIT_FILE = "search_split.json"
"""The random search split of a run (``data.split=random``): written when the run is created, read on resume."""


def load_search_data(cfg: DictConfig, run_path: Optional[Path] = None) -> SearchData:
    """The training set, a subset of it if asked, split into a weight half and an architecture half: by index
    (DARTS), or at random (``data.split=random``, GDAS), in which case the split stored in ``run_path`` (a
    resumed run's directory) is the one used."""
    d = cfg.data
    opts = data_options(cfg)
    info = data_mod.dataset_info(d.dataset, d.data_dir, **opts)
    transform = data_mod.train_transform(info, cutout=d.cutout)
    ds = data_mod.load_dataset(d.dataset, d.data_dir, True, transform, download=d.download, **opts)
    indices = data_mod.subset_indices(len(ds), d.subset, cfg.seed)
    stored = read_split(run_path, len(ds)) if run_path is not None and d.get("split", "index") == "random" else None
    if stored is not None:
        weight_idx, arch_idx = stored
    elif d.get("split", "index") == "random":
        weight_idx, arch_idx = data_mod.random_search_split(indices, d.train_portion, cfg.seed)
    else:
        weight_idx, arch_idx = data_mod.search_split(indices, d.train_portion)
    if min(len(weight_idx), len(arch_idx)) < 1:
        raise NasError(f"the search split of {len(indices)} images leaves a half empty; use more images")
    return SearchData(ds, weight_idx, arch_idx, info.num_classes, info.in_channels)


def split_record(cfg: DictConfig, data: SearchData) -> Optional[str]:
    """The JSON text of ``SPLIT_FILE`` for a random split (None for DARTS's index split, which the config
    alone gives): the seed, the portion, and both halves' image indices."""
    if cfg.data.get("split", "index") != "random":
        return None
    return json.dumps({"split": "random", "seed": int(cfg.seed), "train_portion": float(cfg.data.train_portion),
                       "subset": cfg.data.subset, "weights": data.weight_idx, "arch": data.arch_idx}) + "\n"


def read_split(run_path: Path, n_images: int) -> Optional[tuple[list[int], list[int]]]:
    """The split stored in a run directory (None if it has none: a run from before splits were recorded)."""
    path = Path(run_path) / SPLIT_FILE
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
        weights, arch = [int(i) for i in rec["weights"]], [int(i) for i in rec["arch"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunDirError(f"{path}: not a search split record ({exc})") from None
    if any(not 0 <= i < n_images for i in weights + arch):
        raise RunDirError(f"{path}: image indices outside the {n_images} training images of this dataset")
    return weights, arch


class ArchDraws:
    """Architecture batches drawn with replacement from the architecture half, independently of the weight
    batches (GDAS: ``data.arch_batches=draw``); the position is the number of batches drawn."""

    def __init__(self, dataset: Any, indices: list[int], seed: int, workers: int, pin: bool, rank: int = 0,
                 world: int = 1):
        self.dataset, self.indices, self.seed = dataset, indices, seed
        self.rank, self.world = rank, world
        self.workers, self.pin = workers, pin
        self.draws = 0
        self._iter: Optional[Iterator] = None
        self._bs: Optional[int] = None

    def next(self, batch_size: int, paired: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch: as many images as the weight batch it comes with (``paired``; SearchDataset yields
        one architecture image per weight image, so the last, partial weight batch of an epoch gets a partial
        architecture batch), else ``batch_size``; on this rank (the global draw is that times ``world``)."""
        if paired is not None:
            batch_size = int(paired)
        if self._iter is None or batch_size != self._bs:
            self._bs = batch_size
            sampler = data_mod.DrawBatchSampler(self.indices, batch_size, self.seed, start=self.draws,
                                                rank=self.rank, world=self.world)
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 7907 + 104729 * self.rank + self.draws)
            self._iter = iter(DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.workers,
                                         pin_memory=self.pin, generator=gen))
        x, y = next(self._iter)
        self.draws += 1
        return x, y

    def state(self) -> dict[str, int]:
        return {"draws": self.draws}

    def load(self, state: dict[str, int]) -> None:
        self.draws, self._iter = int(state["draws"]), None


def arch_batches(cfg: DictConfig, data: SearchData, pin: bool, rank: int = 0, world: int = 1) -> Any:
    """The architecture batches of a search: GDAS's independent draws, or DARTS's seeded pass (ArchStream)."""
    cls = ArchDraws if cfg.data.get("arch_batches", "stream") == "draw" else ArchStream
    return cls(data.dataset, data.arch_idx, int(cfg.seed), cfg.data.workers, pin, rank=rank, world=world)


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

    def next(self, batch_size: int, paired: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of ``batch_size`` (the weight batch's size ``paired`` plays no part: DARTS's queue
        of architecture batches runs on its own)."""
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
