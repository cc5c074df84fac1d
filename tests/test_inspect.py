"""nas plot / show / compare, run plots, TensorBoard, --deterministic and the collapse warning (in-process)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nasbench.spaces.genotypes import load_genotype
from conftest import invoke

TINY = ["--dataset", "synthetic", "--channels", "4", "--layers", "3", "--subset", "32", "--batch-size", "16",
        "--epochs", "2", "--device", "cpu", "--no-progress", "data.image_size=16"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished tiny DARTS search with plots on."""
    out = tmp_path_factory.mktemp("inspect") / "run"
    r = invoke("search", *TINY, "--out", out)
    assert r.exit_code == 0, r.output
    return out


# ------------------------------------------------------------------ nas plot
def test_plot_builtin_genotype_dot_text(tmp_path: Path):
    r = invoke("plot", "darts-v2", "--format", "dot", "-o", tmp_path)
    assert r.exit_code == 0, r.output
    dot = (tmp_path / "darts-v2_normal.dot").read_text()
    g = load_genotype("darts-v2")
    assert dot.startswith('digraph "normal cell"')
    for name in ('"c_{k-2}"', '"c_{k-1}"', '"0"', '"3"', '"c_{k}"'):
        assert name in dot
    # one labelled edge per kept (op, input) pair, plus the concatenated nodes into c_{k}
    assert dot.count("[label=") == len(g.normal)
    assert dot.count('-> "c_{k}"') == len(g.normal_concat)
    assert '[label="skip_connect"' in dot
    assert (tmp_path / "darts-v2_reduce.dot").is_file()


def test_plot_fixed_reduction_cell(tmp_path: Path):
    r = invoke("plot", "gdas-frc", "--format", "dot", "-o", tmp_path)
    assert r.exit_code == 0, r.output
    assert "fixed" in (tmp_path / "gdas-frc_reduce.dot").read_text()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed")
@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("svg", b"<")])
def test_plot_renders_with_graphviz(tmp_path: Path, fmt: str, magic: bytes):
    r = invoke("plot", "pdarts", "--format", fmt, "-o", tmp_path)
    assert r.exit_code == 0, r.output
    for cell in ("normal", "reduce"):
        assert (tmp_path / f"pdarts_{cell}.{fmt}").read_bytes().lstrip()[:4].startswith(magic)


def test_plot_without_graphviz_says_so(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    r = invoke("plot", "darts-v1", "--format", "png", "-o", tmp_path)
    assert r.exit_code == 2
    assert "Graphviz" in r.output and "install" in r.output and "Traceback" not in r.output
    assert (tmp_path / "darts-v1_normal.dot").is_file()  # the DOT text is written anyway


def test_plot_run_dir(run_dir: Path, tmp_path: Path):
    r = invoke("plot", run_dir, "--format", "dot", "-o", tmp_path, "--no-run-plots")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "normal.dot").is_file() and (tmp_path / "reduce.dot").is_file()


# ------------------------------------------------------------------ run plots (matplotlib)
def test_run_writes_plots(run_dir: Path):
    pytest.importorskip("matplotlib")
    for name in ("edges_normal.png", "edges_reduce.png", "curves.png"):
        assert (run_dir / "plots" / name).read_bytes()[:4] == b"\x89PNG", name


def test_edge_history_has_every_edge_and_epoch(run_dir: Path):
    from nasbench.config import load_run_config
    from nasbench.report.plots import edge_history
    from nasbench.engine.rundir import RunDir

    run = RunDir(run_dir)
    hist = edge_history(run, load_run_config(run.config_path))
    assert set(hist) == {"normal", "reduce"} and len(hist["normal"]) == 14
    weights = hist["normal"][0]
    assert len(weights) == 8 and all(len(pts) == 2 for pts in weights.values())
    assert abs(sum(pts[-1][1] for pts in weights.values()) - 1.0) < 1e-6


def test_without_matplotlib_plots_are_skipped_with_a_hint(run_dir: Path, monkeypatch, capsys):
    from nasbench.report import plots
    from nasbench.config import load_run_config
    from nasbench.engine.rundir import RunDir

    monkeypatch.setattr(plots, "matplotlib_available", lambda: False)
    monkeypatch.setattr(plots, "_warned", False)
    said: list[str] = []
    run = RunDir(run_dir)
    assert plots.write_run_plots(run, load_run_config(run.config_path), say=said.append) == []
    assert plots.write_run_plots(run, load_run_config(run.config_path), say=said.append) == []
    assert len(said) == 1 and "pip install" in said[0]


def test_sgas_decision_score_plot(tmp_path: Path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "sgas"
    r = invoke("search", "--algo", "sgas", *TINY, "--epochs", "9", "scale_schedules=false", "sgas.warmup_epochs=0",
               "sgas.decision_freq=1", "sgas.post_train=0", "sgas.batch_increase=0", "--out", out)
    assert r.exit_code == 0, r.output
    for cell in ("normal", "reduce"):
        assert (out / "plots" / f"sgas_scores_{cell}.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------ nas show / compare
def test_show_finished_run(run_dir: Path):
    r = invoke("show", run_dir)
    assert r.exit_code == 0, r.output
    for text in ("darts", "2/2 epochs", "finished", "best valid", "checkpoint", "normal cell", "best.json"):
        assert text in r.output, text


def test_show_run_in_progress(run_dir: Path, tmp_path: Path):
    live = tmp_path / "live"
    shutil.copytree(run_dir, live)
    (live / "best.json").unlink()
    lines = (live / "metrics.jsonl").read_text().splitlines()
    (live / "metrics.jsonl").write_text(lines[0] + "\n" + lines[1][:20])  # a torn last line, as mid-write
    r = invoke("show", live)
    assert r.exit_code == 0, r.output
    assert "1/2 epochs" in r.output and "running or stopped" in r.output
    assert "genotypes/epoch_001.json" in r.output


def test_compare_groups_runs_that_differ_only_in_seed(run_dir: Path, tmp_path: Path):
    other = tmp_path / "seed3"
    shutil.copytree(run_dir, other)
    cfg = (other / "config.yaml").read_text().replace("seed: 2", "seed: 3")
    (other / "config.yaml").write_text(cfg)
    (other / "final.json").write_text(json.dumps({"test_acc": 90.0}))
    r = invoke("compare", run_dir, other, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert [x["seed"] for x in d["runs"]] == [2, 3]
    assert d["runs"][1]["final_acc"] == 90.0 and d["runs"][0]["final_acc"] is None
    assert d["runs"][0]["params"] > 0 and d["runs"][0]["genotype_normal"]
    (group,) = d["seed_groups"]
    assert group["seeds"] == [2, 3] and group["valid_acc"]["n"] == 2 and group["valid_acc"]["std"] == 0.0
    r = invoke("compare", run_dir, other)
    assert r.exit_code == 0 and "mean ± std" in r.output


def test_compare_does_not_group_different_settings(run_dir: Path, tmp_path: Path):
    other = tmp_path / "lr"
    shutil.copytree(run_dir, other)
    cfg = (other / "config.yaml").read_text().replace("seed: 2", "seed: 3").replace("lr: 0.025", "lr: 0.05")
    (other / "config.yaml").write_text(cfg)
    d = json.loads(invoke("compare", run_dir, other, "--json").output)
    assert d["seed_groups"] == []


# ------------------------------------------------------------------ collapse warning, deterministic, tensorboard
def test_collapse_warning_and_skip_count_in_metrics(tmp_path: Path, monkeypatch):
    from nasbench.algorithms.base import Strategy

    real = Strategy.op_probabilities

    def skip_heavy(self, cell_type):  # the derive rule then picks skip_connect on every kept edge
        p = real(self, cell_type).clone()
        p[:, self.spec.ops(cell_type)[0].index("skip_connect")] += 1.0
        return p

    monkeypatch.setattr(Strategy, "op_probabilities", skip_heavy)
    out = tmp_path / "r"
    r = invoke("search", *TINY, "plots=false", "--out", out)
    assert r.exit_code == 0, r.output
    assert "warning" in r.output and "skip_connect" in r.output and "collapse" in r.output
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["normal_skip_connect"] for m in records] == [8, 8]


def test_deterministic_flag(tmp_path: Path):
    out = tmp_path / "r"
    r = invoke("search", *TINY, "--epochs", "1", "plots=false", "--deterministic", "--out", out)
    assert r.exit_code == 0, r.output
    assert "deterministic algorithms on" in r.output
    assert "deterministic:" in r.output  # the closing report: ops slowed or none
    assert "deterministic: true" in (out / "config.yaml").read_text()
    assert not torch.are_deterministic_algorithms_enabled()  # restored afterwards


def test_tensorboard_logs(tmp_path: Path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "r"
    r = invoke("search", *TINY, "plots=false", "--tensorboard", "--out", out)
    assert r.exit_code == 0, r.output
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"tensors": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "search/valid_acc" in tags["scalars"] and len(acc.Scalars("search/valid_acc")) == 2
    assert "arch/normal_alpha" in tags["histograms"]
    assert any("genotype" in t for t in tags["tensors"])


def test_compare_matches_a_train_final_run(run_dir: Path, tmp_path: Path):
    final = tmp_path / "final-run"
    final.mkdir()
    (final / "genotype.json").write_text((run_dir / "best.json").read_text())
    (final / "result.json").write_text(json.dumps({"genotype": str(run_dir), "test_acc": 97.1}))
    d = json.loads(invoke("compare", run_dir, final, "--json").output)
    assert len(d["runs"]) == 1 and d["runs"][0]["final_acc"] == 97.1


def test_deterministic_mode_reports_each_nondeterministic_op_once():
    import warnings

    from rich.console import Console

    from nasbench.engine.device import deterministic_mode

    console = Console(record=True, width=200)
    msg = ("upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation, but you set "
           "'torch.use_deterministic_algorithms(True, warn_only=True)'.")
    with deterministic_mode(True, torch.device("cpu"), console) as seen:
        assert torch.are_deterministic_algorithms_enabled()
        for _ in range(3):  # what PyTorch does, once per call of the op
            warnings.warn(msg, UserWarning)
    assert seen == ["upsample_bilinear2d_backward_out_cuda"]
    text = console.export_text()
    assert text.count("upsample_bilinear2d_backward_out_cuda has no deterministic implementation") == 1
    assert "1 op(s) ran nondeterministically" in text
    assert not torch.are_deterministic_algorithms_enabled()
