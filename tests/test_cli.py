"""The `nas` command line: dry runs, error paths (in-process) and search → derive end to end (real processes)."""

import json
import math
import subprocess

import pytest
import torch

from nasbench.spaces.darts.genotype import validate
from nasbench.spaces.genotypes import load_genotype
from conftest import invoke


TINY = ["--channels", "4", "--layers", "3", "--batch-size", "16", "--subset", "64", "--no-progress"]


def test_dry_run_json_reports_the_darts_weight_count():
    r = invoke("search", "--algo", "darts", "--dataset", "cifar10", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["params"] == 1_930_618 and report["arch_params"] == 2 * 14 * 8


def test_dry_run_follows_the_dataset_shape():
    r = invoke("search", "--dataset", "fashion-mnist", "--dry-run", "--json")
    report = json.loads(r.stdout)
    assert report["input"] == [1, 28, 28] and report["params"] < 1_930_618


def test_list_shows_algorithms_datasets_and_genotypes():
    r = invoke("list", "--json")
    assert r.exit_code == 0
    listed = json.loads(r.stdout)
    assert "darts" in listed["algorithms"] and "fashion-mnist" in listed["datasets"]
    assert "darts-v2" in listed["genotypes"] and "darts" in listed["spaces"]


@pytest.mark.parametrize("args, words", [
    (["search", "--algo", "nope"], ["unknown algorithm", "darts"]),
    (["search", "--dataset", "nope", "--dry-run"], ["unknown dataset", "cifar10"]),
    (["search", "--preset", "nope", "--dry-run"], ["unknown preset", "quick"]),
    (["search", "optim.lrr=1", "--dry-run"], ["unknown config key", "optim.lr"]),
    (["search", "epochs=many", "--dry-run"], ["epochs"]),
    (["search", "--layers", "0", "--dry-run"], ["layers"]),
    (["derive", "/nonexistent/run"], ["run directory not found"]),
])
def test_user_errors_are_one_line_and_exit_2(args, words):
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    text = r.output.strip()
    assert text.startswith("error:")
    for w in words:
        assert w in text


def test_missing_data_says_where_it_looked(tmp_path):
    r = invoke("search", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run"), *TINY)
    assert r.exit_code == 2
    assert str(tmp_path) in r.output and "--download" in r.output


def test_debug_shows_the_traceback():
    r = invoke("--debug", "search", "--algo", "nope")
    assert r.exit_code != 0 and r.exception is not None


def test_foreign_run_directory_is_refused(tmp_path):
    r = invoke("derive", str(tmp_path))
    assert r.exit_code == 2 and "not a nasbench run directory" in r.output


def _search(nas_cmd, out, *extra):
    cmd = [*nas_cmd, "search", "--algo", "darts", "--out", str(out), *TINY, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_search_then_derive_end_to_end_on_synthetic_data(tmp_path, nas_cmd):
    out = tmp_path / "run"
    proc = _search(nas_cmd, out, "--dataset", "synthetic", "--epochs", "2", "data.num_train=64",
                   "data.image_size=16")
    assert proc.stdout.strip().endswith("best.json")
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "best.json", "genotypes/epoch_001.json",
                 "arch/epoch_001.pt"):
        assert (out / name).exists(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert {"train_acc", "valid_acc", "lr", "genotype", "normal_skip_connect"} <= set(records[0])
    # α moved from its initial value
    a0 = torch.load(out / "arch/epoch_000.pt", weights_only=True)["arch"]["alpha_normal"]
    a1 = torch.load(out / "arch/epoch_001.pt", weights_only=True)["arch"]["alpha_normal"]
    assert not torch.equal(a0, a1)
    best = load_genotype(out / "best.json")
    validate(best)

    derived = subprocess.run([*nas_cmd, "derive", str(out), "-o", str(tmp_path / "d.json")], capture_output=True,
                             text=True, timeout=120)
    assert derived.returncode == 0, derived.stderr
    assert load_genotype(tmp_path / "d.json") == best
    assert "normal cell" in derived.stdout
    first = subprocess.run([*nas_cmd, "derive", str(out), "--epoch", "0", "-o", str(tmp_path / "e0.json")],
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0
    assert load_genotype(tmp_path / "e0.json") == load_genotype(out / "genotypes/epoch_000.json")


def test_search_on_real_fashion_mnist_subset(tmp_path, nas_cmd, fashion_available):
    out = tmp_path / "fm"
    _search(nas_cmd, out, "--dataset", "fashion-mnist", "--epochs", "1", "--subset", "96")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and 0.0 < records[0]["valid_loss"] < 3 * math.log(10)  # finite, no blow-up
    best = validate(load_genotype(out / "best.json"))
    # best.json is the genotype the last epoch derived and logged
    assert best.to_dict()["normal"] == records[-1]["genotype"]["normal"]
    assert best.to_dict()["reduce"] == records[-1]["genotype"]["reduce"]


def test_second_order_search_runs(tmp_path, nas_cmd):
    out = tmp_path / "second"
    _search(nas_cmd, out, "--dataset", "synthetic", "--epochs", "1", "--unrolled", "data.num_train=32",
            "data.image_size=8", "--subset", "32")
    from nasbench.config import load_run_config

    assert load_run_config(out / "config.yaml").darts.unrolled is True
    # the same run in first order takes other architecture steps: the unrolled term is really there
    first = tmp_path / "first"
    _search(nas_cmd, first, "--dataset", "synthetic", "--epochs", "1", "data.num_train=32", "data.image_size=8",
            "--subset", "32")
    a2 = torch.load(out / "arch/epoch_000.pt", weights_only=True)["arch"]["alpha_normal"]
    a1 = torch.load(first / "arch/epoch_000.pt", weights_only=True)["arch"]["alpha_normal"]
    assert a1.shape == a2.shape and not torch.allclose(a1, a2)


def test_python_dash_m_is_the_same_command(nas_cmd):
    proc = subprocess.run([*nas_cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "search" in proc.stdout and "derive" in proc.stdout


@pytest.mark.parametrize("space", ["darts", "nas-bench-201", "enas-micro", "enas-macro"])
def test_an_image_size_the_search_network_cannot_halve_twice_is_one_error_line(tmp_path, space):
    """Every space's search network halves the images twice with ops that need an even size (factorized
    reduces; NAS-Bench-201's stride-2 conv beside a 2×2 pool), as the official codes do: sizes that are no
    multiple of 4 are refused before anything is written, and such sizes do fail in the supernet; 12 runs."""
    from nasbench.algorithms.base import create_strategy
    from nasbench.config import resolve_search_config

    for size in (10, 14):
        out = tmp_path / f"run{size}"
        r = invoke("search", "--algo", "darts", "--out", str(out), "data.dataset=synthetic", f"model.space={space}",
                   f"data.image_size={size}", *TINY)
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert r.output.strip().startswith("error:") and "must be a multiple of 4" in r.output
        assert f"got {size}" in r.output and not out.exists()

    s = create_strategy("darts", resolve_search_config("darts", overrides=[
        "data.dataset=synthetic", f"model.space={space}", "model.channels=4", "model.layers=3"]))
    spec = s.supernet_spec(10, 3)
    for execution in s.space.executions:
        net = s.build_supernet(spec).set_execution(execution)
        s.init_arch_params(spec, torch.device("cpu"))
        net(torch.randn(2, 3, 12, 12), s.weights()).sum().backward()
        for size in (10, 14):
            with pytest.raises(RuntimeError):
                net(torch.randn(2, 3, size, size), s.weights())


@pytest.mark.parametrize("space, genotype", [("darts", "darts-v2"), ("nas-bench-201", "random:0"),
                                             ("enas-micro", "random:0"), ("enas-macro", "random:0")])
def test_train_final_refuses_an_image_size_its_network_cannot_halve_twice(tmp_path, space, genotype):
    out = tmp_path / "run"
    r = invoke("train-final", "--genotype", genotype, "--out", str(out), "--channels", "4", "--layers", "3",
               "--no-progress", "data.dataset=synthetic", "data.image_size=14",
               *([f"space={space}"] if space != "darts" else []))
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert r.output.strip().startswith("error:") and "must be a multiple of 4" in r.output and not out.exists()
