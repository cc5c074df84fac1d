"""`nas train-final --recipe`: each paper's own evaluation script (its defaults written out below from the
official files), the default recipe from the cell's algorithm, overrides over the recipe, and the learning-rate
schedules against the official formulas written out independently."""

import json
import math
import subprocess

import pytest
import yaml

from nasbench.config import resolve_final_config
from nasbench.errors import ConfigError
from nasbench.final.train import learning_rate

KEYS = ("epochs", "batch_size", "model.channels", "model.layers", "model.auxiliary", "model.auxiliary_weight",
        "model.drop_path_prob", "optim.lr", "optim.lr_min", "optim.schedule", "optim.momentum", "optim.nesterov",
        "optim.weight_decay", "optim.grad_clip", "optim.label_smoothing", "optim.warmup_epochs", "data.cutout")

# CIFAR-10. darts: quark0/darts cnn/train.py (run as its README says: --auxiliary --cutout);
# p-darts: chenxin061/pdarts train_cifar.py (batch 128, drop-path 0.3; --auxiliary --cutout);
# pc-darts: yuhuixu1993/PC-DARTS train.py (drop-path 0.3; --auxiliary --cutout);
# sgas: lightaime/sgas cnn/train.py (DARTS's defaults; README: --auxiliary --cutout);
# gdas: D-X-Y/AutoDL-Projects configs/archs/NAS-CIFAR-GDAS_V1.config (C 36, N 6 -> 20 cells, auxiliary,
#   drop-path 0.2) + configs/opts/NAS-CIFAR.config (cos, eta_min 0, 295 epochs + 5 warm-up, LR 0.025, decay 5e-4,
#   momentum 0.9, nesterov, auxiliary 0.4) + scripts/nas-infer-train.sh (cutout 16) with batch 96 as
#   docs/CVPR-2019-GDAS.md runs it; exps/basic/basic-main.py / procedures/basic_main.py clip no gradient.
_DARTS_C10 = (600, 96, 36, 20, True, 0.4, 0.2, 0.025, 0.0, "cosine", 0.9, False, 3e-4, 5.0, 0.0, 0, 16)
CIFAR = {
    "darts": _DARTS_C10,
    "p-darts": (600, 128, 36, 20, True, 0.4, 0.3, 0.025, 0.0, "cosine", 0.9, False, 3e-4, 5.0, 0.0, 0, 16),
    "pc-darts": (600, 96, 36, 20, True, 0.4, 0.3, 0.025, 0.0, "cosine", 0.9, False, 3e-4, 5.0, 0.0, 0, 16),
    "sgas": _DARTS_C10,
    "gdas": (300, 96, 36, 20, True, 0.4, 0.2, 0.025, 0.0, "cosine", 0.9, True, 5e-4, 0.0, 0.0, 5, 16),
}
# ImageNet (mobile setting). darts: cnn/train_imagenet.py --auxiliary (StepLR period 1, gamma 0.97, label smooth
# 0.1); p-darts: train_imagenet.py (batch 256, lr 0.1, lr_scheduler linear, warm-up for batch > 256);
# pc-darts: train_imagenet.py (batch 1024, lr 0.5, linear, warm-up); sgas: cnn/train_imagenet.py (as P-DARTS's);
# gdas: NAS-IMAGENET-GDAS_V1.config (C 50, N 4 -> 14 cells, drop-path 0) + opts/NAS-IMAGENET.config (cos,
#   245 + 5 warm-up, LR 0.1, decay 3e-5, nesterov, SmoothSoftmax 0.1), batch 256 as docs/CVPR-2019-GDAS.md.
IMAGENET = {
    "darts": (250, 128, 48, 14, True, 0.4, 0.0, 0.1, 0.0, "exponential", 0.9, False, 3e-5, 5.0, 0.1, 0, 0),
    "p-darts": (250, 256, 48, 14, True, 0.4, 0.0, 0.1, 0.0, "linear", 0.9, False, 3e-5, 5.0, 0.1, 5, 0),
    "pc-darts": (250, 1024, 48, 14, True, 0.4, 0.0, 0.5, 0.0, "linear", 0.9, False, 3e-5, 5.0, 0.1, 5, 0),
    "sgas": (250, 256, 48, 14, True, 0.4, 0.0, 0.1, 0.0, "linear", 0.9, False, 3e-5, 5.0, 0.1, 5, 0),
    "gdas": (250, 256, 50, 14, True, 0.4, 0.0, 0.1, 0.0, "cosine", 0.9, True, 3e-5, 0.0, 0.1, 5, 0),
}


def values(cfg):
    from omegaconf import OmegaConf

    return tuple(OmegaConf.select(cfg, k) for k in KEYS)


@pytest.mark.parametrize("recipe", sorted(CIFAR))
def test_recipe_values_match_the_official_scripts(recipe):
    c = resolve_final_config(shortcuts={"recipe": recipe})
    assert c.recipe == recipe
    assert dict(zip(KEYS, values(c))) == dict(zip(KEYS, CIFAR[recipe]))
    i = resolve_final_config(shortcuts={"recipe": recipe, "dataset": "imagenet"})
    assert dict(zip(KEYS, values(i))) == dict(zip(KEYS, IMAGENET[recipe]))
    assert i.optim.gamma == 0.97 and (i.optim.schedule != "linear" or i.optim.linear_tail == 5)
    # the warm-up's form: AutoDL-Projects' per-step ramp; PC-DARTS ramps the base lr per epoch, P-DARTS/SGAS
    # the scheduled lr; the three ImageNet scripts warm up only for batches over 256
    form = {"gdas": ("per_step", 0), "pc-darts": ("per_epoch", 256), "p-darts": ("scaled", 256),
            "sgas": ("scaled", 256)}.get(recipe)
    if form:
        assert (i.optim.warmup, i.optim.warmup_above_batch) == form


@pytest.mark.parametrize("genotype,recipe", [("darts-v1", "darts"), ("darts-v2", "darts"), ("pdarts", "p-darts"),
                                             ("pc-darts", "pc-darts"), ("pc-darts-imagenet", "pc-darts"),
                                             ("gdas", "gdas"), ("gdas-frc", "gdas"), ("sgas-cri1", "sgas"),
                                             ("sgas-cri2", "sgas"), ("random:4", "darts")])
def test_default_recipe_is_the_papers_of_a_builtin_cell(genotype, recipe):
    assert resolve_final_config(shortcuts={"genotype": genotype}).recipe == recipe


def test_plain_genotype_without_metadata_takes_darts(tmp_path):
    from nasbench.spaces.genotypes import load_genotype

    g = load_genotype("pdarts").to_dict()
    plain = {k: g[k] for k in ("normal", "normal_concat", "reduce", "reduce_concat")}
    (tmp_path / "g.json").write_text(json.dumps(plain))
    assert resolve_final_config(shortcuts={"genotype": str(tmp_path / "g.json")}).recipe == "darts"
    (tmp_path / "other.json").write_text(json.dumps({**plain, "algo": "random-search"}))  # no paper recipe
    assert resolve_final_config(shortcuts={"genotype": str(tmp_path / "other.json")}).recipe == "darts"


def test_explicit_settings_beat_the_recipe():
    c = resolve_final_config(overrides=["model.drop_path_prob=0.1", "optim.weight_decay=1e-4"],
                             shortcuts={"genotype": "pdarts", "batch_size": 64})
    assert c.recipe == "p-darts" and c.batch_size == 64 and c.model.drop_path_prob == 0.1
    assert c.optim.weight_decay == 1e-4
    c = resolve_final_config(shortcuts={"genotype": "gdas", "recipe": "darts"})  # --recipe beats the cell's
    assert c.recipe == "darts" and c.epochs == 600 and not c.optim.nesterov
    c = resolve_final_config(overrides=["recipe=pc-darts"], shortcuts={"genotype": "gdas"})
    assert c.recipe == "pc-darts" and c.model.drop_path_prob == 0.3


def test_quick_preset_applies_on_top_of_the_recipe():
    q = resolve_final_config(preset="quick", shortcuts={"genotype": "gdas"})
    assert q.recipe == "gdas" and q.epochs == 2 and q.model.channels == 12 and q.optim.warmup_epochs == 0
    assert q.optim.nesterov and q.optim.weight_decay == 5e-4 and q.optim.grad_clip == 0.0  # the recipe's optimizer
    q = resolve_final_config(preset="quick", shortcuts={"genotype": "pdarts", "dataset": "imagenet"})
    assert q.optim.schedule == "linear" and q.optim.linear_tail == 0 and q.epochs == 2


def test_space_with_its_own_recipe():
    c = resolve_final_config(shortcuts={"genotype": "random:0", "space": "nas-bench-201"})
    assert c.recipe == "nas-bench-201" and c.epochs == 200 and c.optim.nesterov
    with pytest.raises(ConfigError, match="its space's own recipe"):
        resolve_final_config(shortcuts={"genotype": "random:0", "space": "nas-bench-201", "recipe": "gdas"})


def test_bad_recipe_one_error_line(nas_cmd):
    r = subprocess.run([*nas_cmd, "train-final", "--genotype", "gdas", "--recipe", "enas", "--dry-run", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["error: unknown recipe 'enas'; choose one of: darts, gdas, p-darts, "
                                             "pc-darts, sgas"]
    with pytest.raises(ConfigError, match="optim.warmup must be"):
        resolve_final_config(overrides=["optim.warmup=linear"])
    with pytest.raises(ConfigError, match="linear_tail"):
        resolve_final_config(overrides=["optim.schedule=linear"], shortcuts={"epochs": 5})


# ------------------------------------------------------------------------------------- the official schedules
def autodl_cosine(epoch, it, *, base, warmup, epochs, eta_min=0.0):
    """xautodl/procedures/optimizers.py CosineAnnealingLR.get_lr as basic-main.py drives it: ``epochs`` is the
    opts config's (295), T_max = epochs, the loop runs epochs + warmup epochs, ``it`` = i / len(loader)."""
    if warmup <= epoch < epochs:
        return eta_min + (base - eta_min) * (1 + math.cos(math.pi * (epoch - warmup) / epochs)) / 2
    if epoch >= epochs:
        return eta_min
    return (epoch / warmup + it / warmup) * base


def pdarts_imagenet(epoch, *, base, epochs, batch, pcdarts):
    """train_imagenet.py of P-DARTS (SGAS the same) and PC-DARTS: adjust_lr, then the batch > 256 warm-up."""
    if epochs - epoch > 5:
        lr = base * (epochs - 5 - epoch) / (epochs - 5)
    else:
        lr = base * (epochs - epoch) / ((epochs - 5) * 5)
    if epoch < 5 and batch > 256:
        lr = (base if pcdarts else lr) * (epoch + 1) / 5.0
    return lr


def test_gdas_schedule_is_autodl_projects_scheduler():
    for kind, total in (("cifar", 300), ("imagenet", 250)):
        o = resolve_final_config(shortcuts={"recipe": "gdas", **({"dataset": "imagenet"} if kind == "imagenet"
                                                                 else {})})
        assert o.epochs == total
        n = 7  # steps per epoch
        for epoch in range(total):
            for i in (0, 3, 6):
                want = autodl_cosine(epoch, i / n, base=o.optim.lr, warmup=5, epochs=total - 5)
                assert learning_rate(o.optim, total, o.batch_size, epoch, i / n) == pytest.approx(want, abs=1e-15)
    o = resolve_final_config(shortcuts={"recipe": "gdas"})
    assert learning_rate(o.optim, 300, 96, 0, 0.0) == 0.0 and learning_rate(o.optim, 300, 96, 297) == 0.0


@pytest.mark.parametrize("recipe,batch", [("p-darts", 256), ("p-darts", 1024), ("pc-darts", 1024),
                                          ("pc-darts", 128), ("sgas", 256), ("sgas", 1024)])
def test_linear_imagenet_schedules_are_the_official_adjust_lr(recipe, batch):
    c = resolve_final_config(shortcuts={"recipe": recipe, "dataset": "imagenet", "batch_size": batch})
    for epoch in range(c.epochs):
        want = pdarts_imagenet(epoch, base=c.optim.lr, epochs=c.epochs, batch=batch, pcdarts=recipe == "pc-darts")
        assert learning_rate(c.optim, c.epochs, batch, epoch, 0.5) == pytest.approx(want, abs=1e-15)


def test_darts_schedules_unchanged():
    c = resolve_final_config()
    for epoch in (0, 1, 300, 599):  # torch's CosineAnnealingLR (T_max 600, eta_min 0) at epoch e
        assert learning_rate(c.optim, 600, 96, epoch) == pytest.approx(0.025 * (1 + math.cos(math.pi * epoch / 600)) / 2)
    i = resolve_final_config(shortcuts={"dataset": "imagenet"})
    for epoch in (0, 1, 249):  # StepLR(period 1, gamma 0.97)
        assert learning_rate(i.optim, 250, 128, epoch) == pytest.approx(0.1 * 0.97 ** epoch)


def test_quick_preset_anneals_at_every_step_paper_once_per_epoch():
    """A cosine stepped per epoch does not anneal in a 1-epoch run (it ends at its first learning rate, and the
    BatchNorm running statistics lag the weights); the quick preset moves it at every step."""
    q = resolve_final_config(preset="quick")
    assert q.optim.anneal_per_step is True and q.optim.schedule == "cosine"
    lr, n = q.optim.lr, 40
    for E in (1, 2):
        for epoch in range(E):
            for i in range(n):
                t = (epoch + i / n) / E  # the share of the run done
                want = q.optim.lr_min + (lr - q.optim.lr_min) * (1 + math.cos(math.pi * t)) / 2
                assert learning_rate(q.optim, E, 64, epoch, i / n) == pytest.approx(want, abs=1e-15)
    assert learning_rate(q.optim, 1, 64, 0, (n - 1) / n) < 0.01 * lr
    p = resolve_final_config()
    assert p.optim.anneal_per_step is False
    assert {learning_rate(p.optim, 1, 96, 0, i / n) for i in range(n)} == {p.optim.lr}
    # with a per-step warm-up (GDAS) the warm-up keeps its ramp; the cosine after it moves per step
    g = resolve_final_config(shortcuts={"recipe": "gdas"}, overrides=["optim.anneal_per_step=true"])
    assert learning_rate(g.optim, 300, 96, 2, 0.5) == pytest.approx(g.optim.lr * 2.5 / 5)
    want = (1 + math.cos(math.pi * (10.25 - 5) / 295)) / 2 * g.optim.lr
    assert learning_rate(g.optim, 300, 96, 10, 0.25) == pytest.approx(want, abs=1e-15)


# ------------------------------------------------------------------------------------- through the CLI
TINY = ["--dataset", "synthetic", "data.image_size=8", "data.num_train=32", "data.num_test=16", "--channels", "4",
        "--layers", "3", "--batch-size", "16", "--no-progress", "memory_format=contiguous"]


def test_gdas_search_cell_gets_the_gdas_recipe(nas_cmd, tmp_path):
    """A real tiny GDAS search, its derived genotype file, and a train-final run of it: the gdas recipe ran (dry-run
    JSON and config.yaml say so), and an explicit flag still wins."""
    run = tmp_path / "s"
    r = subprocess.run([*nas_cmd, "search", "--algo", "gdas", "--epochs", "1", "--out", str(run), *TINY[:-1],
                        "plots=false"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    geno = tmp_path / "g.json"
    r = subprocess.run([*nas_cmd, "derive", str(run), "-o", str(geno)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(geno.read_text())["algo"] == "gdas"
    r = subprocess.run([*nas_cmd, "train-final", "--genotype", str(geno), "--dataset", "cifar10", "--dry-run",
                        "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["recipe"] == "gdas" and rep["epochs"] == 300 and rep["batch_size"] == 96
    out = tmp_path / "f"
    r = subprocess.run([*nas_cmd, "train-final", "--genotype", str(geno), "--epochs", "3", "--out", str(out), *TINY,
                        "optim.warmup_epochs=1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["recipe"] == "gdas" and cfg["optim"]["nesterov"] is True and cfg["optim"]["weight_decay"] == 5e-4
    assert cfg["epochs"] == 3 and cfg["optim"]["warmup_epochs"] == 1  # the explicit settings won
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # the per-step warm-up starts at 0; then the cosine over E - W = 2 epochs from lr; epoch 2 >= E - W: eta_min
    assert [x["lr"] for x in recs] == [0.0, 0.025, 0.0]
    r = subprocess.run([*nas_cmd, "show", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "gdas: 3 epochs" in r.stdout + r.stderr and "Nesterov" in r.stdout + r.stderr
    r = subprocess.run([*nas_cmd, "train-final", "--genotype", "pdarts", "--recipe", "sgas", "--dataset", "cifar10",
                        "--dry-run", "--json"], capture_output=True, text=True, timeout=120)
    assert json.loads(r.stdout)["recipe"] == "sgas" and json.loads(r.stdout)["batch_size"] == 96


def enas_lr_cosine(epochs, *, lr_max, lr_min, t0, mul):
    """The ENAS TF code's ``lr_cosine`` (src/utils.py ``get_train_ops``), replayed epoch by epoch with its
    two variables: ``last_reset`` and ``T_i`` change when T_curr = epoch − last_reset reaches T_i."""
    last_reset, t_i, out = 0, t0, []
    for epoch in range(epochs):
        if epoch - last_reset >= t_i:
            last_reset, t_i = epoch, t_i * mul
        out.append(lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos((epoch - last_reset) / t_i * math.pi)))
    return out


@pytest.mark.parametrize("genotype,epochs,lr_min", [("enas-micro", 630, 1e-4), ("enas-macro", 310, 1e-3)])
def test_enas_recipes_restart_the_cosine_as_the_tf_code(genotype, epochs, lr_min):
    """scripts/cifar10_{micro,macro}_final.sh: --child_lr_cosine --child_lr_max=0.05 --child_lr_T_0=10
    --child_lr_T_mul=2; the cycles (10, 20, 40, ...) end exactly at the last epoch."""
    c = resolve_final_config(shortcuts={"genotype": genotype})
    assert (c.epochs, c.optim.schedule, c.optim.lr, c.optim.lr_min) == (epochs, "cosine_restarts", 0.05, lr_min)
    want = enas_lr_cosine(epochs, lr_max=0.05, lr_min=lr_min, t0=10, mul=2)
    got = [learning_rate(c.optim, c.epochs, c.batch_size, e) for e in range(epochs)]
    assert got == pytest.approx(want, abs=1e-15)
    assert got[10] == got[30] == got[70] == 0.05 and got[9] < 0.003 and got[-1] < 2 * lr_min


def test_cosine_restarts_settings_are_validated():
    with pytest.raises(ConfigError, match="restart_epochs and optim.restart_mult must be at least 1"):
        resolve_final_config(overrides=["optim.schedule=cosine_restarts", "optim.restart_epochs=0"])


def test_per_tensor_clipping_clips_each_gradient_on_its_own():
    """optim.grad_clip_mode: global scales all gradients by one factor; per_tensor (the ENAS code's intended
    clip_mode="norm", tf.clip_by_norm per gradient) brings each tensor over the bound down to it alone."""
    import torch

    from nasbench.final.train import clip_gradients

    def params():
        a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
        a.grad, b.grad = torch.tensor([30.0, 40.0, 0.0]), torch.tensor([0.3, 0.4, 0.0, 0.0])  # norms 50, 0.5
        return a, b

    a, b = params()
    clip_gradients([a, b], 5.0, "per_tensor")
    assert torch.allclose(a.grad, torch.tensor([3.0, 4.0, 0.0])) and torch.equal(b.grad, torch.tensor([0.3, 0.4, 0, 0]))
    a, b = params()
    clip_gradients([a, b], 5.0, "global")
    scale = 5.0 / (50.0 ** 2 + 0.5 ** 2) ** 0.5
    assert torch.allclose(a.grad, torch.tensor([30.0, 40.0, 0.0]) * scale, rtol=1e-5)
    assert torch.allclose(b.grad, torch.tensor([0.3, 0.4, 0.0, 0.0]) * scale, rtol=1e-5)
    with pytest.raises(ConfigError, match="grad_clip_mode must be global or per_tensor"):
        resolve_final_config(overrides=["optim.grad_clip_mode=layer"])


@pytest.mark.parametrize("genotype", ["enas-micro", "enas-macro"])
def test_enas_recipes_clip_nothing_as_the_tf_code_does(genotype):
    """src/utils.py get_train_ops, clip_mode == "norm": ``clipped.append(g)`` keeps every gradient as it was."""
    c = resolve_final_config(shortcuts={"genotype": genotype})
    assert c.optim.grad_clip == 0.0
