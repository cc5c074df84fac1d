"""PC-DARTS's search directly on ImageNet: its defaults, its stride-2 stems, its class-balanced sample.

The official code is yuhuixu1993/PC-DARTS (master): ``train_search_imagenet.py`` (the script and its argparse
defaults), ``model_search_imagenet.py`` (the search network) and the README's data preparation ("10% and 2.5%
images need to be random sampled prior from each class of trainingset as train and val"). The data here are a
tiny ImageNet-shaped image folder the tests write: real JPEG and PNG files, one folder per class.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nasbench.algorithms.base import create_strategy
from nasbench.config import resolve_search_config
from nasbench.engine.measure import count_weights
from nasbench.errors import DataError
from nasbench.search.data import SPLIT_FILE, balanced_split, dataset_targets, load_search_data, sample_ids
from nasbench.search.trainer import WarmupCosine, dry_run
from nasbench.spaces.darts.ops import FactorizedReduce, ReLUConvBN
from nasbench.spaces.darts.supernet import ImageNetStem
from conftest import nas_launcher

pytestmark = pytest.mark.usefixtures("one_thread")

# train_search_imagenet.py (master), line by line: the argparse defaults and what its loop does with them
OFFICIAL = {
    "batch_size": 1024,  # --batch_size 1024
    "optim.lr": 0.5,  # --learning_rate 0.5
    "optim.lr_min": 0.0,  # --learning_rate_min 0.0 (CosineAnnealingLR eta_min)
    "optim.momentum": 0.9,  # --momentum 0.9
    "optim.weight_decay": 3e-4,  # --weight_decay 3e-4
    "epochs": 50,  # --epochs 50
    "model.channels": 16,  # --init_channels 16
    "model.layers": 8,  # --layers 8
    "optim.grad_clip": 5.0,  # --grad_clip 5 (clip_grad_norm_ of the weights)
    "arch_optim.grad_clip": 5.0,  # ... and of the architecture parameters, with the same --grad_clip
    "arch_optim.lr": 6e-3,  # --arch_learning_rate 6e-3
    "arch_optim.weight_decay": 1e-3,  # --arch_weight_decay 1e-3
    "arch_optim.betas": [0.5, 0.999],  # torch.optim.Adam(..., betas=(0.5, 0.999))
    "pc_darts.warmup_epochs": 35,  # --begin 35: architecture steps when epoch >= args.begin
    "optim.warmup_epochs": 5,  # epoch < 5 and batch_size > 256: lr * (epoch + 1) / 5.0
    "pc_darts.unrolled": False,  # the Architect is commented out: first order only
    "pc_darts.k": 2,  # model_search_imagenet.py: OPS[primitive](C//2, ...), channel_shuffle(ans, 2)
    "data.balanced_split": [0.1, 0.025],  # README: 10% and 2.5% of each class of the training set
    "data.color_jitter": False,  # RandomResizedCrop(224), RandomHorizontalFlip, ToTensor, normalize
    "model.stem": "imagenet",  # model_search_imagenet.py: stem0, stem1
    "step_order": "auto",  # arch step (on the search batch) before the weight step, as on CIFAR
    "data.workers": 4,  # --workers 4
}


def write_folder(root: Path, classes: int = 3, per_class: int = 16, size: tuple[int, int] = (80, 72),
                 seed: int = 0, val: int = 2, prefix: str = "img") -> Path:
    """ImageNet's layout: ``root/train`` and ``root/val``, each with ``classes`` folders of real images (JPEG and
    PNG alternately, ``size`` = (w, h)): ``per_class`` training images and ``val`` validation images per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", val)):
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
                Image.fromarray(pixels).save(d / f"{prefix}_{i:03d}.{'JPEG' if i % 2 else 'png'}")
    return root


def value(cfg, key):
    from omegaconf import OmegaConf

    v = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(v) if hasattr(v, "_content") else v


# ---------------------------------------------------------------------------------------------- defaults
@pytest.mark.parametrize("data", [["data.dataset=imagenet"], ["data.dataset=imagefolder", "data.image_size=64"],
                                  ["data.dataset=imagefolder", "data.image_size=224"]])
def test_imagenet_defaults_are_the_official_scripts(data):
    cfg = resolve_search_config("pc-darts", overrides=data)
    assert {k: value(cfg, k) for k in OFFICIAL} == OFFICIAL


def test_flags_still_win_over_the_imagenet_defaults():
    cfg = resolve_search_config("pc-darts", overrides=["data.dataset=imagenet", "pc_darts.k=4"],
                                shortcuts={"batch_size": 256, "channels": 8})
    assert (cfg.batch_size, cfg.model.channels, cfg.pc_darts.k, cfg.optim.lr) == (256, 8, 4, 0.5)
    quick = resolve_search_config("pc-darts", preset="quick", overrides=["data.dataset=imagenet"])
    assert (quick.batch_size, quick.model.channels, quick.optim.lr, quick.model.stem) == (32, 8, 0.5, "imagenet")


@pytest.mark.parametrize("data", [["data.dataset=imagefolder", "data.image_size=32"],
                                  ["data.dataset=imagefolder", "data.image_size=60"], ["data.dataset=cifar10"]])
def test_small_images_keep_the_cifar_network_and_defaults(data):
    cfg = resolve_search_config("pc-darts", overrides=data)
    assert (cfg.model.stem, cfg.batch_size, cfg.optim.lr, cfg.pc_darts.k, cfg.pc_darts.warmup_epochs) == \
        ("cifar", 256, 0.1, 4, 15)
    assert cfg.data.balanced_split is None and cfg.optim.warmup_epochs == 0 and cfg.arch_optim.grad_clip is None


def test_other_algorithms_get_the_imagenet_stem_but_keep_their_defaults():
    cfg = resolve_search_config("darts", overrides=["data.dataset=imagenet"])
    assert (cfg.model.stem, cfg.batch_size, cfg.optim.lr, cfg.data.balanced_split) == ("imagenet", 64, 0.025, None)
    nb = resolve_search_config("darts", overrides=["data.dataset=imagenet", "model.space=nas-bench-201"])
    assert nb.model.stem == "cifar"  # the NAS-Bench-201 space has one stem
    # PC-DARTS's ImageNet search ran in the darts space: on NAS-Bench-201 its settings stay those of that space
    pc = resolve_search_config("pc-darts", overrides=["data.dataset=imagenet", "model.space=nas-bench-201"])
    cifar = resolve_search_config("pc-darts", overrides=["data.dataset=cifar10", "model.space=nas-bench-201"])
    assert (pc.model.stem, pc.batch_size, pc.model.layers, pc.pc_darts.k) == \
        ("cifar", cifar.batch_size, cifar.model.layers, cifar.pc_darts.k)


# ---------------------------------------------------------------------------------------------- the network
def official_stem(C_stem: int) -> tuple[nn.Sequential, nn.Sequential]:
    """model_search_imagenet.Network's stem0 and stem1, written out from the official file."""
    stem0 = nn.Sequential(nn.Conv2d(3, C_stem // 2, kernel_size=3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(C_stem // 2), nn.ReLU(inplace=True),
                          nn.Conv2d(C_stem // 2, C_stem, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C_stem))
    stem1 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(C_stem, C_stem, 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(C_stem))
    return stem0, stem1


@pytest.mark.parametrize("size", [64, 224])
def test_stem_layers_shapes_and_values_are_the_official_ones(size):
    torch.manual_seed(0)
    ours = ImageNetStem(3, 48)
    stem0, stem1 = official_stem(48)
    assert [type(m) for m in ours.stem0] == [type(m) for m in stem0]
    assert [type(m) for m in ours.stem1] == [type(m) for m in stem1]
    theirs = {**{f"stem0.{k}": v for k, v in stem0.state_dict().items()},
              **{f"stem1.{k}": v for k, v in stem1.state_dict().items()}}
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.items()}
    assert count_weights(ours) == (3 * 9 * 24 + 2 * 24) + (24 * 9 * 48 + 2 * 48) + (48 * 9 * 48 + 2 * 48) == 31_992
    ours.load_state_dict(theirs)
    x = torch.randn(2, 3, size, size)
    s0, s1 = ours(x)
    assert s0.shape == (2, 48, size // 4, size // 4) and s1.shape == (2, 48, size // 8, size // 8)
    ref0 = stem0(x)
    torch.testing.assert_close(s0, ref0, rtol=0, atol=0)
    torch.testing.assert_close(s1, stem1(ref0.clone()), rtol=0, atol=0)


def test_supernet_weights_equal_the_official_network():
    """956,512 and 700,283: model_search_imagenet.Network(16, classes, 8) counted (1000 and 3 classes); and the
    same from the CIFAR supernet (K=2) by swapping its stem: the first cell's factorized reduce of s0 has as many
    weights (two 1×1 convs 48→8) as the ReLU-conv-BN it replaces (48→16)."""
    sizes = {}
    for stem in ("imagenet", "cifar"):
        cfg = resolve_search_config("pc-darts", overrides=["data.dataset=imagenet", f"model.stem={stem}"])
        s = create_strategy("pc-darts", cfg)
        for classes in (1000, 3):
            net = s.build_supernet(s.supernet_spec(classes, 3))
            sizes[stem, classes] = count_weights(net)
            if stem == "imagenet":
                assert isinstance(net.cells[0].preprocess0, FactorizedReduce)
                assert isinstance(net.cells[1].preprocess0, ReLUConvBN)
    assert sizes["imagenet", 1000] == 956_512 and sizes["imagenet", 3] == 700_283
    cifar_stem = 3 * 9 * 48 + 2 * 48
    for classes in (1000, 3):
        assert sizes["imagenet", classes] == sizes["cifar", classes] - cifar_stem + 31_992


def test_supernet_feature_maps_follow_the_official_resolutions():
    """224 → stems 56, 28 → cells at 28, reductions to 14 and 7 (64 px: 16, 8 → 8, 4, 2)."""
    for size, expect in ((224, [28, 28, 14, 28 // 2, 14, 7, 7, 7]), (64, [8, 8, 4, 4, 4, 2, 2, 2])):
        cfg = resolve_search_config("pc-darts", overrides=["data.dataset=imagefolder", f"data.image_size={size}"])
        s = create_strategy("pc-darts", cfg)
        spec = s.supernet_spec(5, 3)
        net = s.build_supernet(spec, execution="fast")
        s.init_arch_params(spec, torch.device("cpu"))
        seen = []
        hooks = [c.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1])) for c in net.cells]
        with torch.no_grad():
            logits = net(torch.randn(2, 3, size, size), s.weights())
        for h in hooks:
            h.remove()
        assert logits.shape == (2, 5) and seen == expect


# ---------------------------------------------------------------------------------------------- the sample
def test_balanced_split_is_balanced_disjoint_and_seeded():
    targets = [c for c in range(4) for _ in range(40 + 10 * c)]  # 40, 50, 60, 70 images
    indices = list(range(len(targets)))
    w, a = balanced_split(indices, targets, (0.1, 0.025), seed=2)
    for c, n in enumerate((40, 50, 60, 70)):
        assert sum(targets[i] == c for i in w) == math.floor(0.1 * n)
        assert sum(targets[i] == c for i in a) == max(1, math.floor(0.025 * n))
    assert not set(w) & set(a) and len(set(w)) == len(w) and len(set(a)) == len(a)
    assert balanced_split(indices, targets, (0.1, 0.025), seed=2) == (w, a)
    assert balanced_split(indices, targets, (0.1, 0.025), seed=3) != (w, a)
    # within a subset, only the subset's images are drawn
    sub = indices[::2]
    ws, as_ = balanced_split(sub, targets, (0.5, 0.25), seed=2)
    assert set(ws) | set(as_) <= set(sub)


def test_balanced_split_of_an_image_folder_is_recorded_by_file(tmp_path):
    root = write_folder(tmp_path / "data", classes=3, per_class=12)
    cfg = resolve_search_config("pc-darts", overrides=["data.dataset=imagefolder", f"data.data_dir={root}",
                                                       "data.image_size=64", "data.balanced_split=[0.5,0.25]"])
    data = load_search_data(cfg)
    targets = dataset_targets(data.dataset)
    assert [sum(targets[i] == c for i in data.weight_idx) for c in range(3)] == [6, 6, 6]
    assert [sum(targets[i] == c for i in data.arch_idx) for c in range(3)] == [3, 3, 3]
    ids = sample_ids(data.dataset)
    assert data.split_record["weights"] == [ids[i] for i in data.weight_idx]
    assert all(p.startswith("n0000000") and p.endswith((".png", ".JPEG")) for p in data.split_record["arch"])
    (tmp_path / SPLIT_FILE).write_text(json.dumps(data.split_record))
    # new images change a fresh draw, not the recorded split (what --resume uses)
    write_folder(root, classes=3, per_class=20, seed=1)
    fresh = load_search_data(cfg)
    again = load_search_data(cfg, recorded=tmp_path / SPLIT_FILE)
    ids2 = sample_ids(again.dataset)
    assert [ids2[i] for i in again.weight_idx] == data.split_record["weights"]
    assert [ids2[i] for i in again.arch_idx] == data.split_record["arch"]
    assert again.split_record is None and fresh.split_record["weights"] != data.split_record["weights"]
    (root / "train" / data.split_record["arch"][0]).unlink()
    with pytest.raises(DataError, match="names images the data no longer has"):
        load_search_data(cfg, recorded=tmp_path / SPLIT_FILE)


# ---------------------------------------------------------------------------------------------- schedule
def test_learning_rate_warms_up_as_the_official_script_then_follows_the_cosine():
    f = WarmupCosine(0.5, 0.0, 50, 5)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
    lrs = []
    for _ in range(50):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert lrs[5:] == pytest.approx([0.5 * (1 + math.cos(math.pi * e / 50)) / 2 for e in range(5, 50)])


# ---------------------------------------------------------------------------------------------- through the CLI
def test_search_on_an_image_folder_runs_and_derives(tmp_path, nas_cmd):
    root = write_folder(tmp_path / "data", classes=3, per_class=16)
    out = tmp_path / "run"
    cmd = [*nas_cmd, "search", "--algo", "pc-darts", "--dataset", "imagefolder", "--data-dir", str(root),
           "data.image_size=64", "--epochs", "2", "--batch-size", "4", "--channels", "4", "--layers", "3",
           "--device", "cpu", "--out", str(out), "--no-progress", "plots=false", "scale_schedules=false",
           "data.balanced_split=[0.5,0.25]", "optim.warmup_epochs=2", "pc_darts.warmup_epochs=1", "data.workers=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "24 + 12 images (class-balanced: 0.5 + 0.25 of each class" in " ".join(proc.stderr.split())
    from nasbench.config import load_run_config

    cfg = load_run_config(out / "config.yaml")
    assert (cfg.model.stem, cfg.pc_darts.k, cfg.optim.lr, cfg.arch_optim.lr) == ("imagenet", 2, 0.5, 6e-3)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == pytest.approx([0.25, 0.5])  # lr·(e+1)/2
    assert [r["arch_updated"] for r in records] == [False, True]
    split = json.loads((out / SPLIT_FILE).read_text())
    assert len(split["weights"]) == 24 and len(split["arch"]) == 12 and split["seed"] == cfg.seed
    derive = subprocess.run([*nas_cmd, "derive", str(out)], capture_output=True, text=True, timeout=300)
    assert derive.returncode == 0, derive.stderr
    assert json.loads((out / "best.json").read_text())["space"] == "darts"
    show = subprocess.run([*nas_cmd, "show", str(out)], capture_output=True, text=True, timeout=300)
    text = " ".join(show.stdout.split())
    assert show.returncode == 0 and "class-balanced 0.5 + 0.25 of each class" in text and "imagenet stem" in text
    # --resume reads the recorded split: an image it names that is gone is one error line
    (root / "train" / split["arch"][0]).unlink()
    again = subprocess.run([*nas_cmd, "search", "--resume", str(out), "--no-progress"], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 2 and again.stderr.startswith("error:") and split["arch"][0] in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_dry_run_of_small_images_builds_the_cifar_supernet(tmp_path, nas_cmd):
    root = write_folder(tmp_path / "data", classes=3, per_class=2, size=(40, 40))
    sizes = {}
    for size in (32, 64):
        proc = subprocess.run([*nas_cmd, "search", "--algo", "pc-darts", "--dataset", "imagefolder", "--data-dir",
                               str(root), f"data.image_size={size}", "--dry-run", "--json"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        sizes[size] = json.loads(proc.stdout)
    assert (sizes[32]["stem"], sizes[32]["batch_size"], sizes[32]["input"]) == ("cifar", 256, [3, 32, 32])
    assert (sizes[64]["stem"], sizes[64]["batch_size"], sizes[64]["input"]) == ("imagenet", 1024, [3, 64, 64])
    assert sizes[64]["params"] == 700_283
    cfg = resolve_search_config("pc-darts", overrides=["data.dataset=cifar10"])
    assert sizes[32]["params"] == dry_run(cfg)["params"] - 10 * (256 + 1) + 3 * (256 + 1)  # the classifier's rows


@pytest.mark.parametrize("args,words", [
    (["data.image_size=80"], "must be a multiple of 32 (e.g. 64 or 96), got 80"),
    (["model.stem=resnet"], "model.stem must be auto or cifar or imagenet"),
    (["data.balanced_split=[0.9,0.2]"], "data.balanced_split must be two shares"),
    (["data.balanced_split=[0.5]"], "data.balanced_split must be two shares"),
])
def test_bad_input_is_one_error_line(tmp_path, nas_cmd, args, words):
    root = write_folder(tmp_path / "data", classes=2, per_class=2, size=(64, 64))
    proc = subprocess.run([*nas_cmd, "search", "--algo", "pc-darts", "--dataset", "imagefolder", "--data-dir",
                           str(root), "data.image_size=64", "--dry-run", *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and words in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_class_too_small_for_the_sample_is_one_error_line(tmp_path, nas_cmd):
    root = write_folder(tmp_path / "data", classes=2, per_class=6, size=(64, 64))
    write_folder(tmp_path / "small", classes=1, per_class=1, size=(64, 64))
    (tmp_path / "small" / "train" / "n00000000").rename(root / "train" / "tiny")
    out = tmp_path / "run"
    proc = subprocess.run([*nas_cmd, "search", "--algo", "pc-darts", "--dataset", "imagefolder", "--data-dir",
                           str(root), "data.image_size=64", "--batch-size", "2", "--channels", "4", "--layers", "3",
                           "--epochs", "1", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: class 'tiny' has 1 training image")
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_killed_search_resumes_on_its_recorded_sample_bitwise(tmp_path, monkeypatch):
    """Killed mid-epoch, with new images added to every class before the resume (a fresh draw would differ),
    the resumed search trains on the recorded sample and ends bitwise where an uninterrupted one ends."""
    from nasbench.engine.rundir import torch_load
    from nasbench.search.trainer import SearchTrainer, search

    root = write_folder(tmp_path / "data", classes=3, per_class=8)
    common = ["device=cpu", "data.dataset=imagefolder", f"data.data_dir={root}", "data.image_size=64",
              "model.channels=4", "model.layers=3", "batch_size=4", "epochs=2", "scale_schedules=false",
              "pc_darts.warmup_epochs=0", "data.balanced_split=[0.5,0.25]", "data.workers=0", "plots=false",
              "checkpoint_every=1", "threads=1"]  # the resumed process then runs on as many threads
    search(resolve_search_config("pc-darts", overrides=[*common, f"out={tmp_path / 'ref'}"]), show_progress=False)

    class Killed(Exception):
        pass

    original = SearchTrainer._checkpoint

    def checkpoint(self, epoch, step, *args):
        if epoch == 0 and step == 2:  # a checkpoint after step 1 of epoch 0 exists (3 steps an epoch)
            raise Killed
        return original(self, epoch, step, *args)

    monkeypatch.setattr(SearchTrainer, "_checkpoint", checkpoint)
    with pytest.raises(Killed):
        search(resolve_search_config("pc-darts", overrides=[*common, f"out={tmp_path / 'cut'}"]), show_progress=False)
    monkeypatch.undo()
    write_folder(root, classes=3, per_class=6, seed=1, prefix="new")
    proc = subprocess.run([*nas_launcher(), "search", "--resume", str(tmp_path / "cut"), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ref" / SPLIT_FILE).read_text() == (tmp_path / "cut" / SPLIT_FILE).read_text()
    for epoch in (0, 1):
        a = torch_load(tmp_path / "ref" / "arch" / f"epoch_{epoch:03d}.pt")["arch"]
        b = torch_load(tmp_path / "cut" / "arch" / f"epoch_{epoch:03d}.pt")["arch"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref, cut = ({k: v for k, v in json.loads((tmp_path / r / "best.json").read_text()).items() if k != "run"}
                for r in ("ref", "cut"))
    assert ref == cut


def test_the_search_augments_as_the_official_script(tmp_path):
    """RandomResizedCrop + flip (no colour jitter, which DARTS's ImageNet evaluation has) for PC-DARTS."""
    from torchvision import transforms as T

    root = write_folder(tmp_path / "data", classes=2, per_class=4)
    kinds = {}
    for algo in ("pc-darts", "darts"):
        cfg = resolve_search_config(algo, overrides=["data.dataset=imagefolder", f"data.data_dir={root}",
                                                     "data.image_size=64", "data.balanced_split=[0.5,0.25]"])
        kinds[algo] = [type(t) for t in load_search_data(cfg).dataset.transform.transforms]
    assert kinds["pc-darts"] == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert kinds["darts"] == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ColorJitter, T.ToTensor, T.Normalize]
