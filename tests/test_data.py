"""Datasets from real on-disk formats, transforms, Cutout, the search split and resumable loaders."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import nasbench.data as D
from nasbench.errors import ConfigError, DataError, NasError

FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------------------------------- helpers


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _cifar_data(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 20) -> dict[str, list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels: dict[str, list[int]] = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        labels[name] = y
        _pickle(folder / name, {b"batch_label": name.encode(), b"data": _cifar_data(per_batch, rng), b"labels": y})
    _pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return labels


def write_cifar100(root: Path, n_train: int = 30, n_test: int = 10) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, n in (("train", n_train), ("test", n_test)):
        _pickle(folder / name, {b"data": _cifar_data(n, rng), b"fine_labels": list(range(90, 90 + n % 10)) +
                                [int(v) for v in rng.integers(0, 100, n - n % 10)],
                                b"coarse_labels": [0] * n})
    _pickle(folder / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">i{arr.ndim}i", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def write_idx(folder: Path, prefix: str, n: int, gz: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    for stem, arr, magic in ((f"{prefix}-images-idx3-ubyte", images, 2051), (f"{prefix}-labels-idx1-ubyte", labels, 2049)):
        data = idx_bytes(arr, magic)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return images, labels


def write_pngs(folder: Path, classes: list[str], per_class: int, size: tuple[int, int] = (20, 12)) -> None:
    from PIL import Image

    rng = np.random.default_rng(2)
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / c / f"{i}.png")


@pytest.fixture
def no_system_fashion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D.FashionMnist, "system_dirs", ())


# ---------------------------------------------------------------------------------------- CIFAR


def test_cifar10_reads_real_pickles(tmp_path: Path) -> None:
    labels = write_cifar10(tmp_path)
    train = D.load_dataset("cifar10", str(tmp_path), True, None)
    test = D.load_dataset("cifar10", str(tmp_path), False, None)
    assert len(train) == 100 and len(test) == 20
    assert train.classes[3] == "c3"
    img, y = train[25]
    assert img.size == (32, 32) and img.mode == "RGB"
    assert y == labels["data_batch_2"][5] and isinstance(y, int)
    # the pixel layout: CHW rows of the pickle → HWC image
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())[b"data"][0]
    assert np.array_equal(np.asarray(test[0][0]), raw.reshape(3, 32, 32).transpose(1, 2, 0))

    info = D.dataset_info("cifar10")
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 3, 32)
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2470, 0.2435, 0.2616)
    x, _ = D.load_dataset("cifar10", str(tmp_path), True, D.train_transform(info, cutout=16))[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    x, _ = D.load_dataset("cifar10", str(tmp_path), False, D.test_transform(info))[0]
    pil = np.asarray(test[0][0], dtype=np.float32) / 255.0
    expect = (torch.from_numpy(pil).permute(2, 0, 1) - torch.tensor(info.mean)[:, None, None]) / torch.tensor(
        info.std)[:, None, None]
    assert torch.allclose(x, expect, atol=1e-5)


def test_cifar100_reads_real_pickles(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    train = D.load_dataset("cifar100", str(tmp_path), True, None)
    test = D.load_dataset("cifar100", str(tmp_path), False, None)
    assert len(train) == 30 and len(test) == 10
    assert train.classes[99] == "f99"
    assert max(int(y) for y in train.targets) < 100
    info = D.dataset_info("cifar100")
    assert info.num_classes == 100 and info.mean == (0.5071, 0.4865, 0.4409)
    x, y = D.load_dataset("cifar100", str(tmp_path), True, D.train_transform(info))[3]
    assert x.shape == (3, 32, 32) and 0 <= y < 100


def test_cifar_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar10 not found.*data_batch_1.*cifar-10-batches-py.*--download"):
        D.load_dataset("cifar10", str(tmp_path), True, None)
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        D.load_dataset("cifar10", str(tmp_path), True, None)
    _pickle(tmp_path / "cifar-10-batches-py" / "data_batch_3", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match=r"data_batch_3.*3072"):
        D.load_dataset("cifar10", str(tmp_path), True, None)


# ---------------------------------------------------------------------------------------- MNIST-like


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path: Path, gz: bool) -> None:
    images, labels = write_idx(tmp_path / "MNIST" / "raw", "train", 12, gz)
    write_idx(tmp_path / "MNIST" / "raw", "t10k", 5, gz, seed=1)
    ds = D.load_dataset("mnist", str(tmp_path), True, None)
    assert len(ds) == 12 and len(D.load_dataset("mnist", str(tmp_path), False, None)) == 5
    assert ds.data.dtype == torch.uint8 and ds.data.shape == (12, 28, 28)
    img, y = ds[4]
    assert np.array_equal(np.asarray(img), images[4]) and y == int(labels[4])
    info = D.dataset_info("mnist")
    assert (info.in_channels, info.image_size, info.mean, info.std) == (1, 28, (0.1307,), (0.3081,))
    x, _ = D.load_dataset("mnist", str(tmp_path), True, D.train_transform(info, cutout=8))[0]
    assert x.shape == (1, 28, 28)
    names = [type(t).__name__ for t in D.train_transform(info).transforms]
    assert "RandomHorizontalFlip" not in names and "RandomCrop" in names


def test_fashion_search_order(tmp_path: Path, no_system_fashion: None) -> None:
    write_idx(tmp_path / "fashion-mnist", "train", 7, gz=True)
    write_idx(tmp_path, "train", 3, gz=False)
    assert len(D.load_dataset("fashion-mnist", str(tmp_path), True, None)) == 7  # fashion-mnist/ before data_dir
    write_idx(tmp_path / "FashionMNIST" / "raw", "train", 9, gz=False)
    assert len(D.load_dataset("fashion-mnist", str(tmp_path), True, None)) == 9  # torchvision layout first
    info = D.dataset_info("fashion-mnist")
    assert info.mean == (0.2860,) and info.std == (0.3530,)
    names = [type(t).__name__ for t in D.train_transform(info).transforms]
    assert "RandomHorizontalFlip" in names


def test_idx_missing(tmp_path: Path, no_system_fashion: None) -> None:
    with pytest.raises(DataError) as e:
        D.load_dataset("fashion-mnist", str(tmp_path), True, None)
    msg = str(e.value)
    assert "train-images-idx3-ubyte(.gz)" in msg
    assert str(tmp_path / "FashionMNIST" / "raw") in msg and str(tmp_path / "fashion-mnist") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--download" in msg
    assert isinstance(e.value, NasError)
    with pytest.raises(DataError, match=r"mnist not found.*MNIST/raw.*--download"):
        D.load_dataset("mnist", str(tmp_path), False, None)


def test_idx_malformed(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    write_idx(folder, "train", 4, gz=False)
    path = folder / "train-images-idx3-ubyte"
    good = path.read_bytes()
    path.write_bytes(struct.pack(">i", 2049) + good[4:])  # labels magic in an images file
    with pytest.raises(DataError, match=rf"{path}.*magic number 2049, expected 2051"):
        D.load_dataset("mnist", str(tmp_path), True, None)
    path.write_bytes(good[:-10])  # truncated
    with pytest.raises(DataError, match=rf"{path}.*truncated"):
        D.load_dataset("mnist", str(tmp_path), True, None)
    path.unlink()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(good)[:-20])  # truncated gzip
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        D.load_dataset("mnist", str(tmp_path), True, None)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(good[:8]))  # shorter than its header
    with pytest.raises(DataError, match="header"):
        D.load_dataset("mnist", str(tmp_path), True, None)
    write_idx(folder, "train", 4, gz=False)
    (folder / "train-images-idx3-ubyte.gz").unlink()
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8), 2049))
    with pytest.raises(DataError, match="4 images but .* 3 labels"):
        D.load_dataset("mnist", str(tmp_path), True, None)


@pytest.mark.skipif(not FASHION_SYSTEM.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_system_package(tmp_path: Path) -> None:
    train = D.load_dataset("fashion-mnist", str(tmp_path), True, None)
    test = D.load_dataset("fashion-mnist", str(tmp_path), False, None)
    assert len(train) == 60000 and len(test) == 10000
    assert sorted(torch.unique(train.targets).tolist()) == list(range(10))
    assert train.data.shape == (60000, 28, 28) and train.data.dtype == torch.uint8


# ---------------------------------------------------------------------------------------- image folders


def test_imagefolder_flat_split(tmp_path: Path) -> None:
    write_pngs(tmp_path, ["a", "b", "c"], per_class=10)
    info = D.dataset_info("imagefolder", str(tmp_path), image_size=16)
    assert (info.num_classes, info.in_channels, info.image_size) == (3, 3, 16)
    train = D.load_dataset("imagefolder", str(tmp_path), True, None, image_size=16)
    test = D.load_dataset("imagefolder", str(tmp_path), False, None, image_size=16)
    assert (len(train), len(test)) == (27, 3)
    assert not set(train.indices) & set(test.indices)
    again = D.load_dataset("imagefolder", str(tmp_path), False, None, image_size=16)
    assert again.indices == test.indices
    img, y = train[0]
    assert img.size == (16, 16) and 0 <= y < 3
    x, _ = D.load_dataset("imagefolder", str(tmp_path), True, D.train_transform(info, cutout=4), image_size=16)[1]
    assert x.shape == (3, 16, 16)


def test_imagefolder_train_val_and_large(tmp_path: Path) -> None:
    write_pngs(tmp_path / "train", ["x", "y"], per_class=3)
    write_pngs(tmp_path / "val", ["x", "y"], per_class=1)
    assert len(D.load_dataset("imagefolder", str(tmp_path), True, None)) == 6
    assert len(D.load_dataset("imagefolder", str(tmp_path), False, None)) == 2
    info = D.dataset_info("imagefolder", str(tmp_path), image_size=64)
    assert info.num_classes == 2
    x, _ = D.load_dataset("imagefolder", str(tmp_path), True, D.train_transform(info), image_size=64)[0]
    assert x.shape == (3, 64, 64)
    x, _ = D.load_dataset("imagefolder", str(tmp_path), False, D.test_transform(info), image_size=64)[0]
    assert x.shape == (3, 64, 64)
    # imagenet uses the same layout
    assert D.dataset_info("imagenet", str(tmp_path)).num_classes == 2
    assert D.dataset_info("imagenet", str(tmp_path / "nowhere")).num_classes == 1000
    x, _ = D.load_dataset("imagenet", str(tmp_path), False, D.test_transform(D.dataset_info("imagenet")))[0]
    assert x.shape == (3, 224, 224)


def test_imagefolder_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="imagefolder: no class sub-folders"):
        D.load_dataset("imagefolder", str(tmp_path), True, None)
    with pytest.raises(DataError, match=r"imagenet not found.*train"):
        D.load_dataset("imagenet", str(tmp_path), True, None)


def test_unknown_dataset() -> None:
    with pytest.raises(NasError, match="cifar10"):
        D.load_dataset("svhn", None, True, None)


# ---------------------------------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_learnable() -> None:
    opts = dict(num_train=200, num_test=50, image_size=8, channels=2, num_classes=4)
    a = D.load_dataset("synthetic", None, True, None, **opts)
    b = D.load_dataset("synthetic", None, True, None, **opts)
    t = D.load_dataset("synthetic", None, False, None, **opts)
    assert torch.equal(a.data, b.data) and torch.equal(a.targets, b.targets)
    assert a.data.shape == (200, 2, 8, 8) and len(t) == 50
    assert not torch.equal(a.data[:50], t.data)
    c = D.load_dataset("synthetic", None, True, None, seed=1, **opts)
    assert not torch.equal(a.data, c.data)
    x, y = a[0]
    assert x.dtype == torch.float32 and isinstance(y, int)
    assert abs(float(a.data.mean())) < 0.2 and 0.7 < float(a.data.std()) < 1.3
    info = D.dataset_info("synthetic", **opts)
    assert (info.num_classes, info.in_channels, info.image_size) == (4, 2, 8)
    # nearest class mean (from the training split) classifies the test split well above chance
    means = torch.stack([a.data[a.targets == k].mean(0) for k in range(4)]).flatten(1)
    pred = torch.cdist(t.data.flatten(1), means).argmin(1)
    assert (pred == t.targets).float().mean() > 0.6
    assert D.test_transform(info) is None and D.train_transform(info) is None
    assert D.train_transform(info, cutout=4)(x).shape == x.shape


# ---------------------------------------------------------------------------------------- Cutout


def test_cutout_square_and_clipping() -> None:
    img = torch.ones(3, 64, 64)
    torch.manual_seed(0)
    seen_full = seen_clipped = 0
    for _ in range(200):
        out = D.Cutout(16)(img)
        zeros = (out[0] == 0).nonzero()
        assert torch.equal(out[0] == 0, out[1] == 0)  # same square in every channel
        ys, xs = zeros[:, 0], zeros[:, 1]
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert len(zeros) == h * w and h <= 16 and w <= 16  # one rectangle
        if h == 16 and w == 16:
            seen_full += 1
        else:
            seen_clipped += 1
            assert int(ys.min()) == 0 or int(ys.max()) == 63 or int(xs.min()) == 0 or int(xs.max()) == 63
    assert seen_full > 0 and seen_clipped > 0
    assert torch.equal(img, torch.ones(3, 64, 64))  # input untouched
    # reproducible from torch's seed
    torch.manual_seed(5)
    a = D.Cutout(7)(img)
    torch.manual_seed(5)
    assert torch.equal(a, D.Cutout(7)(img))
    counts = {int((D.Cutout(7)(img)[0] == 0).sum()) for _ in range(50)}
    assert max(counts) == 49  # odd side: 7×7 unless clipped


def test_cutout_corner() -> None:
    img = torch.ones(1, 10, 10)
    torch.manual_seed(0)
    counts = set()
    for _ in range(300):
        counts.add(int((D.Cutout(4)(img) == 0).sum()))
    assert 16 in counts and 4 in counts  # full square, and a corner clip (2×2)
    assert max(counts) == 16


# ---------------------------------------------------------------------------------------- splits, loaders


def test_subset_and_split() -> None:
    assert D.subset_indices(10, None, seed=0) == list(range(10))
    s = D.subset_indices(100, 30, seed=3)
    assert len(s) == 30 == len(set(s)) and all(0 <= i < 100 for i in s)
    assert s == D.subset_indices(100, 30, seed=3) and s != D.subset_indices(100, 30, seed=4)
    for bad in (0, 101):
        with pytest.raises(ConfigError):
            D.subset_indices(100, bad, seed=0)
    w, a = D.search_split(list(range(11)))
    assert w == list(range(5)) and a == list(range(5, 11))
    w, a = D.search_split(s, 0.8)
    assert w == s[:24] and a == s[24:]


def test_epoch_sampler() -> None:
    idx = list(range(100, 150))
    o = list(D.EpochSampler(idx, seed=1, epoch=3))
    assert sorted(o) == idx and o != idx
    assert o == list(D.EpochSampler(idx, seed=1, epoch=3))
    assert o != list(D.EpochSampler(idx, seed=1, epoch=4)) and o != list(D.EpochSampler(idx, seed=2, epoch=3))
    torch.manual_seed(123)  # the global RNG plays no part
    assert list(D.EpochSampler(idx, seed=1, epoch=3, start=17)) == o[17:]
    assert len(D.EpochSampler(idx, seed=1, epoch=3, start=17)) == 33
    assert list(D.EpochSampler(idx, seed=1, epoch=3, shuffle=False)) == idx


def test_make_loader_resume_and_batch_error() -> None:
    ds = D.load_dataset("synthetic", None, True, None, num_train=40, image_size=4, num_classes=3)
    idx = list(range(0, 40, 2))
    full = [y for _, y in D.make_loader(ds, idx, 6, seed=0, epoch=2)]
    assert [len(b) for b in full] == [6, 6, 6, 2]
    rest = [y for _, y in D.make_loader(ds, idx, 6, seed=0, epoch=2, start_batch=2)]
    assert all(torch.equal(a, b) for a, b in zip(full[2:], rest)) and len(rest) == 2
    state = torch.get_rng_state()
    list(D.make_loader(ds, idx, 6, seed=0, epoch=2))
    assert torch.equal(state, torch.get_rng_state())  # iterating does not consume the global RNG
    with pytest.raises(ConfigError, match="batch size 21 is larger than the 20 images"):
        D.make_loader(ds, idx, 21, seed=0, epoch=0)
    assert len(list(D.make_loader(ds, idx, 64, seed=0, epoch=0, shuffle=False))) == 1  # eval: allowed


def test_train_transform_without_augmentation_is_deterministic() -> None:
    from PIL import Image

    info = D.dataset_info("fashion-mnist")
    img = Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28) % 251)
    plain = D.train_transform(info, augment=False)
    assert torch.equal(plain(img), D.test_transform(info)(img))
    torch.manual_seed(0)
    augmented = [D.train_transform(info)(img) for _ in range(8)]
    assert any(not torch.equal(a, augmented[0]) for a in augmented[1:])  # random crop/flip at work


# ---------------------------------------------------------------------------------------- ImageNet16-120


IN16_TRAIN = [f"train_data_batch_{i}" for i in range(1, 11)]


def write_imagenet16(folder: Path, per_batch: int = 6, val: int = 8, seed: int = 3) -> dict[str, np.ndarray]:
    """The NAS-Bench-201 release layout: pickled dicts of str keys, uint8 ``data`` [N, 768] (3×16×16 channel-
    major) and 1-based ``labels`` over 1..1000 (a list), train batches also with a ``mean``. Every file holds
    labels 1 and 120 (kept) and 121 and 1000 (dropped) plus random ones; returns the labels per file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written: dict[str, np.ndarray] = {}
    for name, n in [(f, per_batch) for f in IN16_TRAIN] + [("val_data", val)]:
        labels = np.concatenate([[1, 121, 120, 1000], rng.integers(1, 1001, n - 4)]).astype(np.int64)
        entry = {"data": rng.integers(0, 256, size=(n, 768), dtype=np.uint8), "labels": [int(v) for v in labels]}
        if name != "val_data":
            entry["mean"] = rng.random(768)
        _pickle(folder / name, entry)
        written[name] = labels
    return written


def _raw(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def test_imagenet16_120_reads_release_pickles(tmp_path: Path) -> None:
    labels = write_imagenet16(tmp_path / "ImageNet16")
    train = D.load_dataset("imagenet16-120", str(tmp_path), True, None)
    test = D.load_dataset("imagenet16-120", str(tmp_path), False, None)
    kept = {k: v[v <= 120] for k, v in labels.items()}
    assert len(train) == sum(len(kept[f]) for f in IN16_TRAIN) and len(test) == len(kept["val_data"])
    assert len(train) < sum(len(labels[f]) for f in IN16_TRAIN)  # labels 121.. were dropped
    # 0-based labels, in file order
    assert train.targets.tolist() == [int(y) - 1 for f in IN16_TRAIN for y in kept[f]]
    assert test.targets.tolist() == [int(y) - 1 for y in kept["val_data"]]
    assert min(train.targets.tolist()) == 0 and max(train.targets.tolist()) == 119
    assert train.data.dtype == torch.uint8 and len(train.classes) == 120
    # the images: test split from val_data; CHW rows of the pickle → 16×16 HWC images, the dropped ones skipped
    raw = _raw(tmp_path / "ImageNet16" / "val_data")
    raw_kept = raw["data"][np.asarray(raw["labels"]) <= 120]
    img, y = test[1]
    assert img.size == (16, 16) and img.mode == "RGB" and y == 119 and isinstance(y, int)
    assert np.array_equal(np.asarray(img), raw_kept[1].reshape(3, 16, 16).transpose(1, 2, 0))
    second = _raw(tmp_path / "ImageNet16" / "train_data_batch_2")
    first_kept = int((labels["train_data_batch_1"] <= 120).sum())
    assert np.array_equal(np.asarray(train[first_kept][0]),
                          second["data"][0].reshape(3, 16, 16).transpose(1, 2, 0))

    info = D.dataset_info("imagenet16-120")
    assert (info.name, info.num_classes, info.image_size, info.in_channels) == ("imagenet16-120", 120, 16, 3)
    # NAS-Bench-201's constants (0..255 scale)
    assert np.allclose(np.array(info.mean) * 255, [122.68, 116.66, 104.01])
    assert np.allclose(np.array(info.std) * 255, [63.22, 61.26, 65.09])
    x, _ = D.load_dataset("imagenet16-120", str(tmp_path), False, D.test_transform(info))[1]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    c, r, col = 2, 5, 11  # one pixel, computed independently from the raw bytes
    expect = (float(raw_kept[1][c * 256 + r * 16 + col]) - 104.01) / 65.09
    assert abs(float(x[c, r, col]) - expect) < 1e-5
    assert abs(float(x[0, 0, 0]) - (float(raw_kept[1][0]) - 122.68) / 63.22) < 1e-5


def test_imagenet16_120_train_transform_is_nas_bench_201s(tmp_path: Path) -> None:
    from torchvision import transforms as T

    info = D.dataset_info("imagenet16-120")
    tf = D.train_transform(info)
    crops = [t for t in tf.transforms if isinstance(t, T.RandomCrop)]
    assert len(crops) == 1 and crops[0].size == (16, 16) and crops[0].padding == 2
    assert any(isinstance(t, T.RandomHorizontalFlip) for t in tf.transforms)
    assert D.train_transform(D.dataset_info("cifar10")).transforms[0].padding == 4  # others unchanged
    write_imagenet16(tmp_path / "imagenet16-120")  # the other folder name
    ds = D.load_dataset("imagenet16-120", str(tmp_path), True, tf)
    torch.manual_seed(0)
    x, y = ds[0]
    assert x.shape == (3, 16, 16) and y == 0
    # pad 2: on a white image the crops show at most 2 rows / columns of (black) padding, and do show 2
    from PIL import Image

    white = Image.fromarray(np.full((16, 16, 3), 255, np.uint8))
    black = (0 - torch.tensor(info.mean)) / torch.tensor(info.std)
    padded = []
    for _ in range(40):
        is_pad = torch.isclose(tf(white), black[:, None, None], atol=1e-5).all(0)  # 16×16
        padded.append(max(int(is_pad.all(1).sum()), int(is_pad.all(0).sum())))
    assert max(padded) == 2


def test_imagenet16_120_folders_and_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        D.load_dataset("imagenet16-120", str(tmp_path), True, None)
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("imagenet16-120 not found", "train_data_batch_1", str(tmp_path / "imagenet16-120"),
                 str(tmp_path / "ImageNet16"), "cannot be downloaded automatically", "NAS-Bench-201 README"):
        assert part in msg, (part, msg)
    with pytest.raises(DataError, match=r"val_data.*cannot be downloaded automatically \(--download cannot fetch"):
        D.load_dataset("imagenet16-120", str(tmp_path), False, None, download=True)
    # an incomplete folder: say what it lacks
    write_imagenet16(tmp_path / "ImageNet16", per_batch=5, val=5)
    (tmp_path / "ImageNet16" / "train_data_batch_7").unlink()
    with pytest.raises(DataError, match=r"ImageNet16 lacks train_data_batch_7"):
        D.load_dataset("imagenet16-120", str(tmp_path), True, None)
    assert len(D.load_dataset("imagenet16-120", str(tmp_path), False, None, download=True)) > 0  # present: read
    # the folder itself as --data-dir (how NAS-Bench-201's code takes it)
    assert len(D.load_dataset("imagenet16-120", str(tmp_path / "ImageNet16"), False, None)) > 0


def test_imagenet16_120_malformed(tmp_path: Path) -> None:
    folder = tmp_path / "ImageNet16"
    write_imagenet16(folder, per_batch=5, val=5)
    good = (folder / "train_data_batch_4").read_bytes()
    for bad, words in (
        (b"not a pickle", r"cannot read ImageNet16 batch .*train_data_batch_4"),
        (good[: len(good) // 2], r"cannot read ImageNet16 batch .*train_data_batch_4"),  # truncated
        (pickle.dumps([1, 2]), r"train_data_batch_4 is not a pickled dict"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]}), r"train_data_batch_4.*768"),
        (pickle.dumps({"data": np.zeros((2, 768), np.uint8), "labels": [1]}), r"train_data_batch_4.*2 images but 1"),
        (pickle.dumps({"data": np.zeros((2, 768), np.uint8), "labels": [0, 1]}), r"train_data_batch_4.*label 0"),
        (pickle.dumps({"pixels": np.zeros((2, 768), np.uint8)}), r"train_data_batch_4 lacks 'data'"),
    ):
        (folder / "train_data_batch_4").write_bytes(bad)
        with pytest.raises(DataError, match=words) as e:
            D.load_dataset("imagenet16-120", str(tmp_path), True, None)
        assert "\n" not in str(e.value)
    # bytes keys (a Python 3 re-pickle) read too
    _pickle(folder / "train_data_batch_4", {b"data": np.zeros((2, 768), np.uint8), b"labels": [3, 300]})
    assert 3 - 1 in D.load_dataset("imagenet16-120", str(tmp_path), True, None).targets.tolist()


def test_imagenet16_120_cli_and_search_data(tmp_path: Path) -> None:
    import json

    from conftest import invoke

    from nasbench.config import resolve_search_config
    from nasbench.search.data import load_search_data

    write_imagenet16(tmp_path / "ImageNet16", per_batch=8, val=6)
    r = invoke("search", "--dataset", "imagenet16-120", "--data-dir", tmp_path, "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["input"] == [3, 16, 16] and report["num_classes"] == 120 and report["dataset"] == "imagenet16-120"
    assert "imagenet16-120" in json.loads(invoke("list", "--json").stdout)["datasets"]
    cfg = resolve_search_config("darts", overrides=["data.dataset=imagenet16-120", f"data.data_dir={tmp_path}"])
    data = load_search_data(cfg)
    assert (data.num_classes, data.in_channels) == (120, 3)
    assert len(data.weight_idx) + len(data.arch_idx) == len(data.dataset)
    x, y = data.dataset[data.arch_idx[0]]
    assert x.shape == (3, 16, 16) and 0 <= y < 120
    r = invoke("search", "--dataset", "imagenet16-120", "--data-dir", tmp_path / "empty", "--epochs", "1")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "imagenet16-120 not found" in r.output and "NAS-Bench-201 README" in r.output
