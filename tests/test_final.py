"""`nas train-final`, `nas eval`, `nas export`: the recipe's config, the network's training-only parts, and real
runs through the CLI."""

import json
import subprocess

import pytest
import torch

from nasbench.config import resolve_final_config
from nasbench.data import Cutout
from nasbench.errors import ConfigError
from nasbench.spaces.darts.genotype import random_genotype
from nasbench.spaces.genotypes import load_genotype
from nasbench.spaces.darts.network import EvalCell, build_eval_network
from nasbench.spaces.darts.ops import Identity

TINY = ["--dataset", "synthetic", "data.image_size=16", "data.num_train=48", "data.num_test=24",
        "--channels", "8", "--layers", "3", "--epochs", "2", "--batch-size", "16", "--no-progress"]


def run(cmd, *args, timeout=180):
    """The real CLI in a subprocess (train-final runs)."""
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


def cli(*args):
    """The same Typer app in-process (saves a torch import per call); returns returncode/stdout/stderr."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from nasbench.cli.app import app

    r = CliRunner().invoke(app, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return SimpleNamespace(returncode=r.exit_code, stdout=r.stdout, stderr=r.stderr)


def test_paper_defaults_and_presets():
    c = resolve_final_config()
    assert (c.epochs, c.batch_size, c.model.channels, c.model.layers) == (600, 96, 36, 20)
    assert (c.optim.lr, c.optim.momentum, c.optim.weight_decay, c.optim.grad_clip) == (0.025, 0.9, 3e-4, 5.0)
    assert c.model.auxiliary and c.model.auxiliary_weight == 0.4 and c.model.drop_path_prob == 0.2
    assert c.data.cutout == 16 and c.optim.schedule == "cosine" and c.optim.lr_min == 0.0
    i = resolve_final_config(shortcuts={"dataset": "imagenet"})
    assert (i.epochs, i.batch_size, i.optim.lr, i.optim.gamma, i.optim.weight_decay) == (250, 128, 0.1, 0.97, 3e-5)
    assert i.optim.label_smoothing == 0.1 and i.model.drop_path_prob == 0.0 and i.optim.schedule == "exponential"
    assert (i.model.channels, i.model.layers) == (48, 14)
    q = resolve_final_config(preset="quick", overrides=["epochs=7"], shortcuts={"channels": 12})
    assert q.epochs == 7 and q.model.channels == 12 and not q.model.auxiliary
    with pytest.raises(ConfigError, match="unknown config key"):
        resolve_final_config(overrides=["model.chanels=8"])


def test_auxiliary_head_only_in_training():
    net = build_eval_network(load_genotype("darts-v2"), C=8, layers=6, num_classes=10, auxiliary=True)
    x = torch.randn(2, 3, 32, 32)
    net.train()
    logits, aux = net(x)
    assert logits.shape == aux.shape == (2, 10)
    net.eval()
    logits, aux = net(x)
    assert aux is None and logits.shape == (2, 10)


def test_drop_path_never_touches_identity():
    # a cell whose every node sums two skip_connects: drop-path must leave it deterministic
    g = load_genotype("darts-v2")
    ident = tuple(("skip_connect", j) for node in range(4) for j in (0, 1))
    from dataclasses import replace
    cell = EvalCell(replace(g, normal=ident), 8, 8, 8, reduction=False, reduction_prev=False).train()
    assert all(isinstance(op, Identity) for op in cell._ops)
    s0, s1 = torch.randn(4, 8, 6, 6), torch.randn(4, 8, 6, 6)
    torch.manual_seed(0)
    a = cell(s0, s1, drop_prob=0.9)
    b = cell(s0, s1, drop_prob=0.0)
    assert torch.allclose(a, b)


def test_cutout_masks_the_stated_size():
    torch.manual_seed(0)
    img = torch.ones(1, 32, 32)
    seen_full = False
    for _ in range(50):
        out = Cutout(16)(img)
        zeros = int((out == 0).sum())
        assert zeros <= 16 * 16 and zeros > 0
        seen_full |= zeros == 16 * 16
        rows = (out[0] == 0).any(1).nonzero()
        cols = (out[0] == 0).any(0).nonzero()
        assert rows.numel() <= 16 and cols.numel() <= 16
    assert seen_full
    assert torch.equal(img, torch.ones(1, 32, 32))  # not in place


def test_random_genotype_is_valid_and_seeded():
    g = random_genotype(3)
    assert g == random_genotype(3) and g != random_genotype(4)
    for cell in (g.normal, g.reduce):
        for node in range(4):
            (op1, i1), (op2, i2) = cell[2 * node: 2 * node + 2]
            assert i1 != i2 and "none" not in (op1, op2)


def test_dry_run_json_darts_v2(nas_cmd):
    r = cli("train-final", "--genotype", "darts-v2", "--dataset", "cifar10", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["params"] == 3_349_342 and rep["params_total"] > rep["params"] and rep["macs"] > 4e8
    assert rep["channels"] == 36 and rep["layers"] == 20 and rep["auxiliary"] is True


@pytest.mark.parametrize("text,match", [
    ('{"normal": [["conv_9x9", 0], ["skip_connect", 1], ["skip_connect", 0], ["skip_connect", 1], '
     '["skip_connect", 0], ["skip_connect", 1], ["skip_connect", 0], ["skip_connect", 1]], "normal_concat": '
     '[2,3,4,5], "reduce": null, "reduce_concat": [2,3,4,5]}', "unknown op"),
    ('{"normal": [["skip_connect", 7], ["skip_connect", 1], ["skip_connect", 0], ["skip_connect", 1], '
     '["skip_connect", 0], ["skip_connect", 1], ["skip_connect", 0], ["skip_connect", 1]], "normal_concat": '
     '[2,3,4,5], "reduce": null, "reduce_concat": [2,3,4,5]}', "out of range"),
    ('{"space": "nasbench201", "normal": [], "normal_concat": [2], "reduce": null, "reduce_concat": [2]}',
     "search space"),
])
def test_bad_genotypes_exit_2(nas_cmd, tmp_path, text, match):
    p = tmp_path / "g.json"
    p.write_text(text)
    r = cli("train-final", "--genotype", str(p), "--dataset", "cifar10", "--dry-run", "--json")
    assert r.returncode == 2 and match in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_train_final_eval_export_synthetic(nas_cmd, tmp_path):
    out = tmp_path / "run"
    r = run(nas_cmd, "train-final", "--genotype", "pc-darts", *TINY, "--auxiliary", "--out", str(out), "--json",
            "model.drop_path_prob=0.3", "data.cutout=4")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and recs[0]["drop_path_prob"] == 0.0 and recs[1]["drop_path_prob"] == pytest.approx(0.15)
    assert recs[1]["lr"] < recs[0]["lr"]
    assert result["test_acc"] == recs[-1]["test_acc"]  # the headline: the last epoch
    assert result["params_total"] > result["params"]
    assert not (out / "best.pt").exists()  # no validation split: no "best"
    r = cli("eval", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["test_acc"] == pytest.approx(result["test_acc"])
    r = cli("eval", str(out), "--checkpoint", "best")
    assert r.returncode == 2 and "val_split" in r.stderr
    r = cli("export", str(out), "--format", "pt2", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert (out / "model.pt2").is_file() and rep["max_abs_diff"] < 1e-4
    prog = torch.export.load(str(out / "model.pt2")).module()
    assert prog(torch.randn(3, 3, 16, 16)).shape == (3, 10)
    r = cli("export", str(out), "--format", "onnx")
    try:
        import onnx, onnxscript  # noqa: F401, E401
    except ImportError:
        assert r.returncode == 2 and "pip install 'nasbench[onnx]'" in r.stderr
    else:
        assert r.returncode == 0, r.stderr


def test_resume_and_val_split(nas_cmd, tmp_path):
    out = tmp_path / "run"
    r = run(nas_cmd, "train-final", "--genotype", "gdas-frc", *TINY, "--epochs", "1", "--val-split", "0.25",
            "--out", str(out), "epochs=2")
    assert r.returncode == 0, r.stderr
    assert (out / "best.pt").is_file()
    r = run(nas_cmd, "train-final", "--resume", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in recs] == [0]  # epochs=1 (the flag wins over key=value): already finished
    r = cli("train-final", "--resume", str(out), "--epochs", "5")
    assert r.returncode == 2 and "differ" in r.stderr


def test_train_final_fashion_mnist_subset(nas_cmd, tmp_path, fashion_available):
    out = tmp_path / "fm"
    r = run(nas_cmd, "train-final", "--genotype", "darts-v2", "--preset", "quick", "--dataset", "fashion-mnist",
            "--data-dir", str(fashion_available), "--subset", "256", "--epochs", "1", "--channels", "8",
            "--layers", "3", "--out", str(out), "--no-progress", "--json", "data.test_subset=500")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["dataset"] == "fashion-mnist" and res["test_images"] == 500
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert res["test_acc"] == last["test_acc"]
    r = cli("eval", str(out), "--json")
    evaluated = json.loads(r.stdout)
    # the saved weights give exactly the accuracy the run reported on the same 500 images
    assert r.returncode == 0 and evaluated["images"] == 500
    assert evaluated["test_acc"] == pytest.approx(res["test_acc"], abs=1e-9)
