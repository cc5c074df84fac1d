"""The data of a search: the training set split into a weight half and an architecture half, and the
architecture batches.

Three splits: DARTS's (the first ``train_portion`` of the images train the weights, the rest the
architecture); GDAS's (``data.split=random``: a seeded permutation); and, with ``data.balanced_split=[w, a]``, a
class-balanced sample (PC-DARTS's ImageNet search: 10% and 2.5% of each class). The two drawn splits are
recorded in the run (``search_split.json``) so that a resumed run uses the same images. Architecture batches are
a seeded stream over the architecture half (DARTS) or independent draws with replacement (GDAS).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Subset

from nasbench import data as data_mod
from nasbench.config import data_options
from nasbench.data.sampling import _mix
from nasbench.errors import ConfigError, DataError, NasError, RunDirError

SPLIT_FILE = "search_split.json"
"""The drawn split of a run, in its directory: which images train the weights and which the architecture
(GDAS's random split as indices, the class-balanced sample as image paths)."""


@dataclass
class SearchData:
    dataset: Any
    weight_idx: list[int]
    arch_idx: list[int]
    num_classes: int
    in_channels: int
    split_record: Optional[dict[str, Any]] = None  # the class-balanced split, to be written into the run


def load_search_data(cfg: DictConfig, run_path: Optional[Path] = None, recorded: Optional[Path] = None
                      ) -> SearchData:
    """The training set, a subset of it if asked, split into a weight half and an architecture half: by index
    (DARTS), at random (``data.split=random``, GDAS), or class-balanced (``data.balanced_split``). For the
    two drawn splits the record of a resumed run (``recorded``, default ``run_path/search_split.json``), when it
    exists, gives the split instead of drawing it again."""
    d = cfg.data
    opts = data_options(cfg)
    info = data_mod.dataset_info(d.dataset, d.data_dir, **opts)
    transform = data_mod.train_transform(info, cutout=d.cutout, color_jitter=bool(d.get("color_jitter", True)))
    ds = data_mod.load_dataset(d.dataset, d.data_dir, True, transform, download=d.download, **opts)
    indices = data_mod.subset_indices(len(ds), d.subset, cfg.seed)
    if recorded is None and run_path is not None:
        recorded = Path(run_path) / SPLIT_FILE
    shares = d.get("balanced_split")
    record = None
    if shares is not None:
        if recorded is not None and recorded.is_file():
            weight_idx, arch_idx = read_split(recorded, ds)
        else:
            w_share, a_share = (float(v) for v in shares)
            weight_idx, arch_idx = balanced_split(indices, dataset_targets(ds), (w_share, a_share), cfg.seed,
                                                  classes=getattr(ds, "classes", None), subset=d.subset)
            ids = sample_ids(ds)
            record = {"kind": "class_balanced", "shares": [w_share, a_share], "seed": int(cfg.seed),
                      "dataset": str(d.dataset), "images": len(ds), "weights": [ids[i] for i in weight_idx],
                      "arch": [ids[i] for i in arch_idx]}
    elif d.get("split", "index") == "random":
        stored = read_random_split(recorded, len(ds)) if recorded is not None else None
        if stored is not None:
            weight_idx, arch_idx = stored
        else:
            weight_idx, arch_idx = data_mod.random_search_split(indices, d.train_portion, cfg.seed)
    else:
        weight_idx, arch_idx = data_mod.search_split(indices, d.train_portion)
    if min(len(weight_idx), len(arch_idx)) < 1:
        raise NasError(f"the search split of {len(indices)} images leaves a half empty; use more images")
    return SearchData(ds, weight_idx, arch_idx, info.num_classes, info.in_channels, record)


def dataset_targets(ds: Any) -> list[int]:
    """The label of every sample of ``ds`` (read from its ``targets``; a Subset maps its parent's)."""
    if isinstance(ds, Subset):
        parent = dataset_targets(ds.dataset)
        return [parent[i] for i in ds.indices]
    targets = getattr(ds, "targets", None)
    if targets is None:
        return [int(ds[i][1]) for i in range(len(ds))]
    return [int(t) for t in (targets.tolist() if isinstance(targets, torch.Tensor) else targets)]


def sample_ids(ds: Any) -> list[str]:
    """A name for every sample of ``ds`` that survives a reload: its file path relative to the image folder
    (ImageFolder, or a Subset of one), else its index."""
    base, picked = (ds.dataset, list(ds.indices)) if isinstance(ds, Subset) else (ds, None)
    samples = getattr(base, "samples", None)
    if samples is not None:
        root = Path(base.root)
        ids = [Path(p).relative_to(root).as_posix() for p, _ in samples]
    else:
        ids = [str(i) for i in range(len(base))]
    return ids if picked is None else [ids[i] for i in picked]


def balanced_split(indices: Sequence[int], targets: Sequence[int], shares: tuple[float, float], seed: int,
                   classes: Optional[Sequence[str]] = None, subset: Optional[int] = None) -> tuple[list[int], list[int]]:
    """PC-DARTS's ImageNet sampling: from each class's images among ``indices``, ``floor(w·n)`` (at least 1)
    train the weights and ``floor(a·n)`` (at least 1) others the architecture, drawn at random (one seeded
    permutation per class, classes in label order); the two samples are disjoint, class-major."""
    by_class: dict[int, list[int]] = {}
    for i in indices:
        by_class.setdefault(int(targets[i]), []).append(int(i))
    g = torch.Generator().manual_seed(_mix(seed, 104729))  # a stream of its own: the split alone draws from it
    weight_idx: list[int] = []
    arch_idx: list[int] = []
    for c in sorted(by_class):
        members = by_class[c]
        n = len(members)
        n_w = max(1, math.floor(shares[0] * n + 1e-9))
        n_a = max(1, math.floor(shares[1] * n + 1e-9))
        if n_w + n_a > n:
            name = classes[c] if classes is not None and c < len(classes) else str(c)
            where = f" in the {subset} images of data.subset" if subset is not None else ""
            cure = "use a larger --subset, add images" if subset is not None else "add images"
            raise ConfigError(f"class {name!r} has {n} training image{'s' if n != 1 else ''}{where}: too few for the "
                              f"class-balanced search split data.balanced_split={list(shares)} (at least one image "
                              f"for the weights and one for the architecture); {cure} or set "
                              f"data.balanced_split=null")
        perm = torch.randperm(n, generator=g).tolist()
        weight_idx += [members[p] for p in perm[:n_w]]
        arch_idx += [members[p] for p in perm[n_w:n_w + n_a]]
    return weight_idx, arch_idx


def read_split(path: Path, ds: Any) -> tuple[list[int], list[int]]:
    """The weight and architecture indices into ``ds`` of the split recorded in ``path``; a recorded image that
    ``ds`` no longer has is a DataError."""
    try:
        record = json.loads(path.read_text())
        weights, arch = list(record["weights"]), list(record["arch"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"cannot read the run's search split {path}: {type(e).__name__}: {e}") from None
    where = {sid: i for i, sid in enumerate(sample_ids(ds))}
    missing = [sid for sid in (*weights, *arch) if sid not in where]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"the run's search split ({path}) names images the data no longer has: {missing[0]}{more}; "
                        "restore them, or start a new run")
    return [where[sid] for sid in weights], [where[sid] for sid in arch]


def split_record(cfg: DictConfig, data: SearchData) -> Optional[str]:
    """The JSON text of ``SPLIT_FILE`` for a split drawn now (None for DARTS's index split, which the config
    alone gives, and for a split read back from a run): the class-balanced sample's image paths, or the random
    split's seed, portion and both halves' image indices."""
    if data.split_record is not None:
        return json.dumps(data.split_record, indent=0) + "\n"
    if cfg.data.get("split", "index") != "random" or cfg.data.get("balanced_split") is not None:
        return None
    return json.dumps({"split": "random", "seed": int(cfg.seed), "train_portion": float(cfg.data.train_portion),
                       "subset": cfg.data.subset, "weights": data.weight_idx, "arch": data.arch_idx}) + "\n"


def read_random_split(path: Path, n_images: int) -> Optional[tuple[list[int], list[int]]]:
    """The random split recorded in ``path`` (None if there is none: a run from before splits were recorded)."""
    path = Path(path)
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
