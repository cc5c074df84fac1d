"""Datasets: their registered specs, readers for the on-disk formats, and :func:`load_dataset`.

Every dataset is a small spec object registered with :func:`~nasbench.registry.register_dataset` (CIFAR-10/100
pickles, MNIST/Fashion-MNIST IDX files, NAS-Bench-201's ImageNet16-120 pickles, ImageNet and generic image
folders, synthetic data) and looked up through :func:`nasbench.registry.get`. Use :func:`load_dataset` to build one split and :func:`dataset_info`
for its shape and normalisation (cheap: it never reads the images, so dry runs can call it).
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from nasbench import registry
from nasbench.data.sampling import _mix
from nasbench.errors import ConfigError, DataError

Transform = Optional[Callable[[Any], Any]]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
FASHION_MEAN = (0.2860,)
FASHION_STD = (0.3530,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# NAS-Bench-201's values for ImageNet16 (AutoDL-Projects, get_dataset_with_transform.py), in 0..255 units / 255
IMAGENET16_MEAN = tuple(v / 255 for v in (122.68, 116.66, 104.01))
IMAGENET16_STD = tuple(v / 255 for v in (63.22, 61.26, 65.09))

LARGE_IMAGE = 64
"""Image sizes from here on get the ImageNet-style (random-resized-crop) transforms."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset: classes, input shape and normalisation."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def default_data_dir() -> Path:
    """``$NASBENCH_DATA`` or ``~/.cache/nasbench/data``."""
    env = os.environ.get("NASBENCH_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/nasbench/data").expanduser()


def _resolve_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


# --------------------------------------------------------------------------------------------------
# In-memory datasets


class ArrayImageDataset(Dataset):
    """Images held in memory as uint8 (``N×H×W×C`` or ``N×H×W``), returned as PIL images like torchvision.

    ``__getitem__`` gives ``(transform(PIL image), int label)``, or the PIL image when ``transform`` is None.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: Sequence[str], transform: Transform):
        if images.dtype != torch.uint8:
            raise TypeError("images must be uint8")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.data = images
        self.targets = targets.long()
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        img: Any = Image.fromarray(self.data[index].numpy())
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])


class TensorImageDataset(Dataset):
    """Float images already normalised (``N×C×H×W``); the optional transform acts on tensors."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, num_classes: int, transform: Transform = None):
        self.data = images
        self.targets = targets.long()
        self.classes = [str(i) for i in range(num_classes)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img: Any = self.data[index]
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])


# --------------------------------------------------------------------------------------------------
# Specs


class DatasetSpec:
    """A registered dataset: ``info`` (cheap) and ``load`` (reads the data). Unused options are ignored."""

    name: str = ""

    def info(self, data_dir: str | None = None, **options: Any) -> DatasetInfo:
        raise NotImplementedError

    def load(
        self, data_dir: str | None, train: bool, transform: Transform, *, download: bool = False, **options: Any
    ) -> Dataset:
        raise NotImplementedError

    tv_class: str = ""  # torchvision.datasets class that downloads this dataset, if any

    def _download(self, root: Path, train: bool) -> None:
        import torchvision

        try:
            getattr(torchvision.datasets, self.tv_class)(str(root), train=train, download=True)
        except Exception as e:  # network errors come in many types
            raise DataError(f"downloading {self.name} into {root} failed: {type(e).__name__}: {e}") from None


def _register(name: str) -> Callable[[type[DatasetSpec]], type[DatasetSpec]]:
    """Instantiate the spec class and register the instance under ``name`` in the dataset registry."""

    def deco(cls: type[DatasetSpec]) -> type[DatasetSpec]:
        spec = cls()
        spec.name = name
        registry.register_dataset(name)(spec)
        return cls

    return deco


def _spec(name: str) -> DatasetSpec:
    return registry.get("dataset", name)  # raises NasError listing the valid names


def load_dataset(
    name: str,
    data_dir: str | None,
    train: bool,
    transform: Transform,
    *,
    download: bool = False,
    **options: Any,
) -> Dataset:
    """The train (``train=True``) or test split of dataset ``name``; ``data_dir=None`` → :func:`default_data_dir`."""
    return _spec(name).load(data_dir, train, transform, download=download, **options)


def dataset_info(name: str, data_dir: str | None = None, **options: Any) -> DatasetInfo:
    """Classes, channels, image size and normalisation of ``name``, without reading the images."""
    return _spec(name).info(data_dir, **options)


# --------------------------------------------------------------------------------------------------
# CIFAR


def _unpickle(path: Path, what: str = "CIFAR batch", encoding: str = "bytes") -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding=encoding)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError, IndexError,
            KeyError, TypeError) as e:
        raise DataError(f"cannot read {what} {path}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{what} {path} is not a pickled dict")
    return obj


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, list[int]]:
    obj = _unpickle(path)
    if b"data" not in obj or label_key not in obj:
        keys = ", ".join(repr(k) for k in obj)
        raise DataError(f"CIFAR batch {path} lacks {b'data'!r} or {label_key!r} (keys: {keys})")
    data = np.asarray(obj[b"data"])
    labels = [int(x) for x in obj[label_key]]
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"CIFAR batch {path}: data is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
    if len(labels) != len(data):
        raise DataError(f"CIFAR batch {path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


class _CifarSpec(DatasetSpec):
    folder = ""
    train_files: tuple[str, ...] = ()
    test_files: tuple[str, ...] = ()
    label_key = b""
    meta_file = ""
    names_key = b""
    num_classes = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    url = ""
    tv_class = ""

    def info(self, data_dir: str | None = None, **options: Any) -> DatasetInfo:
        return DatasetInfo(self.name, self.num_classes, 3, 32, self.mean, self.std)

    def _find(self, root: Path, files: Sequence[str]) -> Path | None:
        for cand in (root / self.folder, root):
            if all((cand / f).is_file() for f in files):
                return cand
        return None

    def load(
        self, data_dir: str | None, train: bool, transform: Transform, *, download: bool = False, **options: Any
    ) -> Dataset:
        root = _resolve_dir(data_dir)
        files = self.train_files if train else self.test_files
        folder = self._find(root, files)
        if folder is None and download:
            self._download(root, train)
            folder = self._find(root, files)
        if folder is None:
            raise DataError(
                f"{self.name} not found: looked for {', '.join(files)} in {root / self.folder} and {root}; "
                f"pass --download (needs internet) or extract the python version of {self.url} into {root}"
            )
        parts = [_read_cifar_batch(folder / f, self.label_key) for f in files]
        images = np.concatenate([p[0] for p in parts])
        labels = [y for p in parts for y in p[1]]
        bad = [y for y in labels if not 0 <= y < self.num_classes]
        if bad:
            raise DataError(f"{self.name} in {folder}: label {bad[0]} outside 0..{self.num_classes - 1}")
        classes = [str(i) for i in range(self.num_classes)]
        meta = folder / self.meta_file
        if meta.is_file():
            names = _unpickle(meta).get(self.names_key)
            if names is not None and len(names) == self.num_classes:
                classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        return ArrayImageDataset(torch.from_numpy(np.ascontiguousarray(images)), torch.tensor(labels), classes, transform)


@_register("cifar10")
class Cifar10(_CifarSpec):
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    label_key = b"labels"
    meta_file = "batches.meta"
    names_key = b"label_names"
    num_classes = 10
    mean, std = CIFAR10_MEAN, CIFAR10_STD
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    tv_class = "CIFAR10"


@_register("cifar100")
class Cifar100(_CifarSpec):
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = b"fine_labels"
    meta_file = "meta"
    names_key = b"fine_label_names"
    num_classes = 100
    mean, std = CIFAR100_MEAN, CIFAR100_STD
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    tv_class = "CIFAR100"


# --------------------------------------------------------------------------------------------------
# ImageNet16-120 (NAS-Bench-201)


def _read_imagenet16_batch(path: Path, max_label: int) -> tuple[np.ndarray, np.ndarray]:
    """One pickle of the downsampled 16×16 ImageNet, cut down to the 1-based labels ``1..max_label``.

    Returns HWC uint8 images ``[k, 16, 16, 3]`` and 0-based int64 labels ``[k]``; the rest of the batch
    is dropped here, so only the kept images outlive the call.
    """
    obj = _unpickle(path, "ImageNet16 batch", encoding="latin1")  # latin1: the release was pickled by Python 2

    def get(key: str) -> Any:
        for k in (key, key.encode()):
            if k in obj:
                return obj[k]
        keys = ", ".join(repr(k) for k in obj)
        raise DataError(f"ImageNet16 batch {path} lacks 'data' or 'labels' (keys: {keys})")

    data, raw_labels = get("data"), get("labels")
    data = np.asarray(data)
    try:
        labels = np.asarray(raw_labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(f"ImageNet16 batch {path}: labels are not integers ({e})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 16 * 16:
        raise DataError(f"ImageNet16 batch {path}: data is {data.dtype} {data.shape}, expected uint8 [N, 768]")
    if len(labels) != len(data):
        raise DataError(f"ImageNet16 batch {path}: {len(data)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 1 or labels.max() > 1000):
        bad = int(labels.min()) if labels.min() < 1 else int(labels.max())
        raise DataError(f"ImageNet16 batch {path}: label {bad} outside 1..1000 (the release's labels are 1-based)")
    keep = labels <= max_label
    images = np.ascontiguousarray(data[keep].reshape(-1, 3, 16, 16).transpose(0, 2, 3, 1))
    return images, labels[keep] - 1


@_register("imagenet16-120")
class ImageNet16_120(DatasetSpec):
    """NAS-Bench-201's ImageNet16-120: the 16×16 downsampled ImageNet (Chrabaszcz et al. 2017), classes 1..120.

    Read from the release's pickles (``train_data_batch_1`` … ``train_data_batch_10``; ``val_data`` is the
    test split) in ``data_dir/imagenet16-120``, ``data_dir/ImageNet16`` or ``data_dir`` itself. As in
    NAS-Bench-201's reader, images with labels above 120 are dropped and labels become 0-based (151,700
    training and 6,000 test images on the full release). It cannot be downloaded automatically.
    """

    folders = ("imagenet16-120", "ImageNet16")
    train_files = tuple(f"train_data_batch_{i}" for i in range(1, 11))
    test_files = ("val_data",)
    num_classes = 120

    def info(self, data_dir: str | None = None, **options: Any) -> DatasetInfo:
        return DatasetInfo(self.name, self.num_classes, 3, 16, IMAGENET16_MEAN, IMAGENET16_STD)

    def search_dirs(self, root: Path) -> list[Path]:
        """Where the pickles are looked for, in order."""
        return [root / f for f in self.folders] + [root]

    def load(
        self, data_dir: str | None, train: bool, transform: Transform, *, download: bool = False, **options: Any
    ) -> Dataset:
        root = _resolve_dir(data_dir)
        files = self.train_files if train else self.test_files
        dirs = self.search_dirs(root)
        folder = next((d for d in dirs if all((d / f).is_file() for f in files)), None)
        if folder is None:
            wanted = "train_data_batch_1 … train_data_batch_10" if train else "val_data"
            partial = [f"{d} lacks {', '.join(f for f in files if not (d / f).is_file())}"
                       for d in dirs[:-1] if d.is_dir()]
            note = f" ({'; '.join(partial)})" if partial else ""
            no_download = " (--download cannot fetch it)" if download else ""
            raise DataError(
                f"{self.name} not found: looked for {wanted} in {', '.join(str(d) for d in dirs)}{note}; "
                f"it cannot be downloaded automatically{no_download}: get the ImageNet16 folder (16×16 "
                f"downsampled ImageNet) as the NAS-Bench-201 README says and put it at {root / 'ImageNet16'}"
            )
        images: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for f in files:
            x, y = _read_imagenet16_batch(folder / f, self.num_classes)
            images.append(x)
            labels.append(y)
        if len(images) == 1:
            all_images, all_labels = images[0], labels[0]
        else:
            all_images, all_labels = np.concatenate(images), np.concatenate(labels)
        del images, labels
        classes = [str(i) for i in range(self.num_classes)]
        return ArrayImageDataset(torch.from_numpy(all_images), torch.from_numpy(all_labels), classes, transform)


# --------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (IDX files)

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    return raw


def read_idx(path: str | os.PathLike[str], expect_magic: int) -> np.ndarray:
    """An IDX file (``.gz`` or raw) as a uint8 array: ``[N, rows, cols]`` for images, ``[N]`` for labels."""
    path = Path(path)
    raw = _read_bytes(path)
    ndim = 3 if expect_magic == IDX_IMAGES_MAGIC else 1
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise DataError(f"malformed IDX file {path}: {len(raw)} bytes, shorter than its header")
    magic = struct.unpack(">i", raw[:4])[0]
    if magic != expect_magic:
        raise DataError(f"malformed IDX file {path}: magic number {magic}, expected {expect_magic}")
    shape = struct.unpack(f">{ndim}i", raw[4:header])
    size = int(np.prod(shape))
    if len(raw) != header + size:
        raise DataError(
            f"malformed IDX file {path}: header says {'×'.join(map(str, shape))} = {size} bytes of data, "
            f"file has {len(raw) - header} (truncated?)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


class _MnistSpec(DatasetSpec):
    tv_folder = ""
    folder = ""
    system_dirs: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    tv_class = ""
    how_to_get = ""
    classes: tuple[str, ...] = tuple(str(i) for i in range(10))

    def info(self, data_dir: str | None = None, **options: Any) -> DatasetInfo:
        return DatasetInfo(self.name, 10, 1, 28, self.mean, self.std)

    def search_dirs(self, root: Path) -> list[Path]:
        """Where the IDX files are looked for, in order."""
        return [root / self.tv_folder / "raw", root / self.folder, root] + [Path(d) for d in self.system_dirs]

    @staticmethod
    def _pick(folder: Path, stem: str) -> Path | None:
        for cand in (folder / stem, folder / f"{stem}.gz"):
            if cand.is_file():
                return cand
        return None

    def _find(self, root: Path, prefix: str) -> tuple[Path, Path] | None:
        for folder in self.search_dirs(root):
            images = self._pick(folder, f"{prefix}-images-idx3-ubyte")
            labels = self._pick(folder, f"{prefix}-labels-idx1-ubyte")
            if images and labels:
                return images, labels
        return None

    def load(
        self, data_dir: str | None, train: bool, transform: Transform, *, download: bool = False, **options: Any
    ) -> Dataset:
        root = _resolve_dir(data_dir)
        prefix = "train" if train else "t10k"
        found = self._find(root, prefix)
        if found is None and download:
            self._download(root, train)
            found = self._find(root, prefix)
        if found is None:
            where = ", ".join(str(d) for d in self.search_dirs(root))
            raise DataError(
                f"{self.name} not found: looked for {prefix}-images-idx3-ubyte(.gz) and "
                f"{prefix}-labels-idx1-ubyte(.gz) in {where}; {self.how_to_get}"
            )
        images_path, labels_path = found
        images = read_idx(images_path, IDX_IMAGES_MAGIC)
        labels = read_idx(labels_path, IDX_LABELS_MAGIC)
        if len(images) != len(labels):
            raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
        if labels.size and labels.max() >= 10:
            raise DataError(f"{labels_path}: label {int(labels.max())} outside 0..9")
        return ArrayImageDataset(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)),
                                 self.classes, transform)


@_register("mnist")
class Mnist(_MnistSpec):
    tv_folder = "MNIST"
    folder = "mnist"
    mean, std = MNIST_MEAN, MNIST_STD
    tv_class = "MNIST"
    how_to_get = "pass --download (needs internet) or copy the four IDX files there"


@_register("fashion-mnist")
class FashionMnist(_MnistSpec):
    tv_folder = "FashionMNIST"
    folder = "fashion-mnist"
    system_dirs = ("/usr/share/datasets/fashion-mnist",)
    mean, std = FASHION_MEAN, FASHION_STD
    tv_class = "FashionMNIST"
    how_to_get = (
        "install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
        "or pass --download (needs internet)"
    )
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")


# --------------------------------------------------------------------------------------------------
# Image folders


class UnreadableImageError(DataError):
    """An image file that cannot be decoded. Raised in a DataLoader worker, PyTorch re-raises it in the main
    process as ``UnreadableImageError("Caught ... Original Traceback ...")``: that keeps only the original
    message, so that the user still gets one line."""

    def __init__(self, message: str):
        if message.startswith("Caught ") and "Traceback" in message:
            message = message.rstrip().splitlines()[-1].partition(": ")[2] or message
        super().__init__(message)


class _RgbLoader:
    """Open an image as RGB, resized to ``size×size`` when ``size`` is set (picklable for workers)."""

    def __init__(self, size: int | None = None):
        self.size = size

    def __call__(self, path: str) -> Any:
        from PIL import Image

        try:
            with open(path, "rb") as f:
                img = Image.open(f).convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # PIL's decode errors
            raise UnreadableImageError(f"cannot read image {path}: {_reason(exc)}; remove or replace the "
                                       "file") from None
        if self.size is not None and img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.Resampling.BILINEAR)
        return img


def _class_dirs(folder: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir())
    except OSError:
        return []


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


_unreadable_seen: dict[str, list[tuple[str, str]]] = {}
"""The unreadable files found in each folder this process checked (a folder is checked and reported once)."""


def unreadable_images(paths: Sequence[str], key: str) -> list[tuple[str, str]]:
    """``(path, reason)`` of the files among ``paths`` that PIL cannot open or that fail its integrity check
    (``verify``: a garbage file, a truncated PNG), found once per ``key``. Reads every file, decodes none."""
    from PIL import Image

    if key not in _unreadable_seen:
        bad = []
        for path in paths:
            try:
                with Image.open(path) as img:
                    img.verify()
            except Exception as exc:  # PIL raises many types for a bad file (OSError, SyntaxError, struct.error, ...)
                bad.append((path, _reason(exc).replace(f" {path!r}", "")))  # the path is named once
        _unreadable_seen[key] = bad
    return _unreadable_seen[key]


def _warn_skipped(bad: list[tuple[str, str]], what: str) -> None:
    """One warning line on stderr (from rank 0 of a distributed run) naming the skipped files."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    shown = ", ".join(f"{p} ({why})" for p, why in bad[:5]) + (f", and {len(bad) - 5} more" if len(bad) > 5 else "")
    sys.stderr.write(f"warning: {what}: skipped {len(bad)} unreadable image{'s' if len(bad) != 1 else ''}: "
                     f"{shown}\n")
    sys.stderr.flush()


def _image_folder(folder: Path, transform: Transform, size: int | None, what: str, check: bool = False) -> Any:
    """torchvision's ImageFolder of ``folder``; with ``check`` its unreadable files are left out, with a warning
    (a corrupt file would otherwise stop the run mid-epoch)."""
    from torchvision.datasets import ImageFolder

    try:
        ds = ImageFolder(str(folder), transform=transform, loader=_RgbLoader(size))
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"{what}: no usable class folders with images in {folder} ({e})") from None
    if check:
        key = str(folder.resolve())
        first_time = key not in _unreadable_seen
        bad = unreadable_images([p for p, _ in ds.samples], key)
        if bad:
            skip = {p for p, _ in bad}
            ds.samples = [s for s in ds.samples if s[0] not in skip]
            ds.imgs = ds.samples
            ds.targets = [t for _, t in ds.samples]
            if not ds.samples:
                raise DataError(f"{what}: none of the images in {folder} can be read (e.g. {bad[0][0]}: "
                                f"{bad[0][1]})")
            if first_time:
                _warn_skipped(bad, what)
    return ds


@_register("imagenet")
class ImageNet(DatasetSpec):
    """``data_dir/train`` and ``data_dir/val``, one sub-folder per class (torchvision ImageFolder)."""

    def info(self, data_dir: str | None = None, **options: Any) -> DatasetInfo:
        n = len(_class_dirs(_resolve_dir(data_dir) / "train")) or 1000
        return DatasetInfo(self.name, n, 3, 224, IMAGENET_MEAN, IMAGENET_STD)

    def load(
        self, data_dir: str | None, train: bool, transform: Transform, *, download: bool = False, **options: Any
    ) -> Dataset:
        root = _resolve_dir(data_dir)
        folder = root / ("train" if train else "val")
        if not folder.is_dir():
            raise DataError(
                f"imagenet not found: looked for {folder} (class sub-folders of images); ImageNet cannot be "
                f"downloaded automatically: get ILSVRC2012 from https://image-net.org and arrange train/ and "
                f"val/ as one folder per class under {root}"
            )
        return _image_folder(folder, transform, None, "imagenet")


@_register("imagefolder")
class ImageFolderSpec(DatasetSpec):
    """``data_dir`` with class sub-folders; ``train/`` + ``val/`` if present, else a seeded 90/10 split."""

    split_seed = 0
    test_share = 0.1

    @staticmethod
    def _layout(root: Path) -> tuple[Path, Path | None]:
        if (root / "train").is_dir() and (root / "val").is_dir():
            return root / "train", root / "val"
        return root, None

    def info(self, data_dir: str | None = None, *, image_size: int = 32, **options: Any) -> DatasetInfo:
        root = _resolve_dir(data_dir)
        train_dir, _ = self._layout(root)
        classes = _class_dirs(train_dir)
        if not classes:
            raise DataError(self._missing(root))
        return DatasetInfo(self.name, len(classes), 3, int(image_size), IMAGENET_MEAN, IMAGENET_STD)

    @staticmethod
    def _missing(root: Path) -> str:
        return (
            f"imagefolder: no class sub-folders in {root}; put one folder of images per class there "
            f"(or train/ and val/ each holding such folders) and pass it as data.data_dir"
        )

    def load(
        self,
        data_dir: str | None,
        train: bool,
        transform: Transform,
        *,
        download: bool = False,
        image_size: int = 32,
        **options: Any,
    ) -> Dataset:
        root = _resolve_dir(data_dir)
        train_dir, val_dir = self._layout(root)
        if not _class_dirs(train_dir):
            raise DataError(self._missing(root))
        size = int(image_size) if image_size < LARGE_IMAGE else None  # large sizes: the transforms resize
        if val_dir is not None:
            return _image_folder(train_dir if train else val_dir, transform, size, "imagefolder", check=True)
        full = _image_folder(root, transform, size, "imagefolder", check=True)
        n = len(full)
        n_test = max(1, int(round(n * self.test_share))) if n >= 2 else 0
        g = torch.Generator().manual_seed(self.split_seed)
        perm = torch.randperm(n, generator=g).tolist()
        idx = perm[n_test:] if train else perm[:n_test]
        subset = Subset(full, sorted(idx))
        subset.classes = full.classes  # type: ignore[attr-defined]
        return subset


# --------------------------------------------------------------------------------------------------
# Synthetic


@_register("synthetic")
class Synthetic(DatasetSpec):
    """Learnable random images: each class is a smooth random pattern, each sample that pattern plus noise.

    Options: ``num_train`` (512), ``num_test`` (128), ``image_size`` (32), ``channels`` (3), ``num_classes``
    (10), ``seed`` (0), ``noise`` (1.0). Images are float tensors, already about zero-mean unit-variance.
    """

    def info(
        self, data_dir: str | None = None, *, image_size: int = 32, channels: int = 3, num_classes: int = 10,
        **options: Any,
    ) -> DatasetInfo:
        return DatasetInfo(self.name, int(num_classes), int(channels), int(image_size), (0.0,) * channels,
                           (1.0,) * channels)

    def load(
        self,
        data_dir: str | None,
        train: bool,
        transform: Transform,
        *,
        download: bool = False,
        num_train: int = 512,
        num_test: int = 128,
        image_size: int = 32,
        channels: int = 3,
        num_classes: int = 10,
        seed: int = 0,
        noise: float = 1.0,
        **options: Any,
    ) -> Dataset:
        for key, value in (("num_train", num_train), ("num_test", num_test), ("image_size", image_size),
                           ("channels", channels), ("num_classes", num_classes)):
            if int(value) < 1:
                raise ConfigError(f"synthetic dataset: {key} must be at least 1, got {value}")
        # class patterns: shared by both splits
        g = torch.Generator().manual_seed(_mix(seed, 0))
        coarse = torch.randn(num_classes, channels, 4, 4, generator=g)
        patterns = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
        patterns = (patterns - patterns.mean(dim=(1, 2, 3), keepdim=True)) / (
            patterns.std(dim=(1, 2, 3), keepdim=True) + 1e-6)
        # samples: per split
        n = int(num_train if train else num_test)
        g = torch.Generator().manual_seed(_mix(seed, 1 if train else 2))
        labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
        x = patterns[labels] + noise * torch.randn(n, channels, image_size, image_size, generator=g)
        x = x / math.sqrt(1.0 + noise**2)
        return TensorImageDataset(x.contiguous(), labels, num_classes, transform)


__all__ = [
    "DatasetInfo", "DatasetSpec", "ArrayImageDataset", "TensorImageDataset", "load_dataset", "dataset_info",
    "default_data_dir", "read_idx", "LARGE_IMAGE", "ImageNet16_120", "IMAGENET16_MEAN", "IMAGENET16_STD",
]
