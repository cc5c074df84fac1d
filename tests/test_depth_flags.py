"""`--layers` means what ran: for P-DARTS the first stage's cells (p_darts.layers), reported per stage by
config.yaml, `--dry-run`, `nas show` and `nas compare`."""

import json
import subprocess

import yaml

from nasbench.config import resolve_search_config


def test_layers_sets_p_darts_first_stage_and_model_layers_mirrors_it():
    cfg = resolve_search_config("p-darts", shortcuts={"layers": 4})
    assert cfg.p_darts.layers == 4 and cfg.model.layers == 4
    cfg = resolve_search_config("p-darts", overrides=["p_darts.layers=3"])
    assert cfg.model.layers == 3
    cfg = resolve_search_config("p-darts")  # the paper's 5 cells, not the schema's 8
    assert cfg.model.layers == 5 and cfg.p_darts.layers == 5
    cfg = resolve_search_config("darts", shortcuts={"layers": 4})  # the others: model.layers itself
    assert cfg.model.layers == 4


def test_contradicting_depths_are_one_line(nas_cmd):
    r = subprocess.run([*nas_cmd, "search", "--algo", "p-darts", "--dataset", "synthetic", "--layers", "4",
                        "p_darts.layers=3", "--dry-run"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "contradicts p_darts.layers=3" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_p_darts_run_reports_its_stage_depths(nas_cmd, tmp_path):
    out = tmp_path / "pd"
    args = ["search", "--algo", "p-darts", "--dataset", "synthetic", "data.image_size=8", "--subset", "16",
            "--channels", "4", "--layers", "3", "p_darts.add_layers=[0,1,2]", "--epochs", "3", "--batch-size", "8",
            "--no-progress"]
    r = subprocess.run([*nas_cmd, *args, "--dry-run", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stage_layers"] == [3, 4, 5]
    r = subprocess.run([*nas_cmd, *args, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for depth in (3, 4, 5):  # each stage announces the supernet that ran
        assert f"supernet {depth} cells" in r.stderr
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored["model"]["layers"] == 3 and stored["p_darts"]["layers"] == 3
    r = subprocess.run([*nas_cmd, "show", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "3/4/5 cells (per stage)" in r.stdout, r.stdout
    r = subprocess.run([*nas_cmd, "compare", str(out), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "L3/4/5" in json.loads(r.stdout)["runs"][0]["settings"]
