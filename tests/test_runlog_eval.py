"""Every run keeps a log.txt of what it printed (with a line every report_freq steps), and `nas eval` takes
trained weights that did not come from a run (ours, or the original DARTS code's state_dict layout)."""

import json
import re
import subprocess
from collections import OrderedDict

import pytest
import torch

SEARCH = ["--dataset", "synthetic", "data.image_size=16", "--subset", "32", "--channels", "4", "--layers", "3",
          "--epochs", "2", "--batch-size", "8"]
FINAL = ["--dataset", "synthetic", "--config", None, "--subset", "48", "--channels", "8", "--layers", "3",
         "--epochs", "1", "--batch-size", "16"]


def run(cmd, *args, timeout=300):
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def small_data_yaml(tmp_path):
    p = tmp_path / "small.yaml"
    p.write_text("data:\n  image_size: 16\n  num_test: 24\n")
    return p


def final_args(tmp_path):
    return [small_data_yaml(tmp_path) if a is None else a for a in FINAL]


def test_search_log_txt_has_what_the_console_printed_and_step_lines(nas_cmd, tmp_path):
    out = tmp_path / "s"
    r = run(nas_cmd, "search", *SEARCH, "--out", out, "report_freq=1", "--no-progress")
    assert r.returncode == 0, r.stderr
    # without a progress bar the step lines are on the console, as the original scripts' report_freq
    steps = [line for line in r.stderr.splitlines() if re.match(r"epoch \d+ step \d+/\d+ ", line)]
    assert len(steps) == 4  # 2 steps per epoch (16 images, batch 8), a line every step, 2 epochs
    log = (out / "log.txt").read_text()
    first = log.splitlines()[0]
    assert first.startswith("--- ") and "nas search" in first and "report_freq=1" in first
    for line in steps:
        assert line.strip() in log
    epoch_lines = [line for line in r.stderr.splitlines() if re.match(r"epoch +\d+ +train", line)]
    assert len(epoch_lines) == 2 and all(line.strip() in log for line in epoch_lines)
    best = json.loads((out / "best.json").read_text())
    assert "final genotype:" in log and f"written: {out / 'best.json'}" in log and best
    assert "\x1b[" not in log  # plain text, no terminal colours


def test_train_final_log_txt_with_progress_bar_and_resume_appends(nas_cmd, tmp_path):
    out = tmp_path / "f"
    r = run(nas_cmd, "train-final", "--genotype", "darts-v2", *final_args(tmp_path), "--out", out, "report_freq=1")
    assert r.returncode == 0, r.stderr
    # with the progress bar on, the step lines go to log.txt only
    assert not re.search(r"step \d+/\d+", r.stderr)
    log = (out / "log.txt").read_text()
    assert len(re.findall(r"epoch 0 step \d+/3 ", log)) == 3  # 48 images, batch 16, a line every step
    assert "test accuracy (last epoch)" in log
    r = run(nas_cmd, "train-final", "--resume", out, "--epochs", "2")
    assert r.returncode == 2  # (a changed flag is refused) ...
    r = run(nas_cmd, "train-final", "--resume", out)
    assert r.returncode == 0, r.stderr
    again = (out / "log.txt").read_text()
    assert again.startswith(log) and again.count("--- ") == 2  # appended: one header per start (the refused one never started)


def _official_layout(state):
    """Our trained weights renamed as the original DARTS code names them (cnn/model.py, operations.py):
    ReLUConvBN, SepConv and DilConv keep their layers in a Sequential called ``op``; the weights of a
    model trained under nn.DataParallel start with ``module.``; files from PyTorch 0.3 have no BN counters."""
    out = OrderedDict()
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        k = re.sub(r"^(cells\.\d+\.(?:preprocess[01]|_ops\.\d+))\.(\d+\.)", r"\1.op.\2", k)
        out["module." + k] = v.clone()
    return out


def test_eval_weights_in_our_layout_and_the_original_codes(nas_cmd, tmp_path):
    out = tmp_path / "f"
    r = run(nas_cmd, "train-final", "--genotype", "darts-v2", *final_args(tmp_path), "--out", out, "--json",
            "--no-progress")
    assert r.returncode == 0, r.stderr
    expected = json.loads(r.stdout)["test_acc"]
    state = torch.load(out / "checkpoint.pt", weights_only=True)["net"]
    ours = tmp_path / "ours.pt"
    torch.save(state, ours)
    official = tmp_path / "model.pt"
    renamed = _official_layout(state)
    assert any(".op." in k for k in renamed) and all(k.startswith("module.") for k in renamed)
    torch.save(renamed, official)
    common = ["--genotype", "darts-v2", "--dataset", "synthetic", "--config", small_data_yaml(tmp_path),
              "--channels", "8", "--layers", "3", "--json"]
    for weights in (out / "checkpoint.pt", ours, official):
        r = run(nas_cmd, "eval", "--weights", weights, *common)
        assert r.returncode == 0, r.stderr
        rep = json.loads(r.stdout)
        assert rep["test_acc"] == pytest.approx(expected) and rep["images"] == 24


def test_eval_weights_mistakes_are_one_line(nas_cmd, tmp_path):
    net = tmp_path / "w.pt"
    torch.save(OrderedDict(a=torch.zeros(2)), net)
    cases = [
        (["eval", "--weights", net], "--genotype and --weights"),
        (["eval", tmp_path, "--weights", net], "--weights belong to"),
        (["eval", "--genotype", "darts-v2", "--weights", net, "--dataset", "synthetic", "--channels", "8",
          "--layers", "3"], "do not fit the darts-v2 network"),
        (["eval", "--genotype", "darts-v2", "--weights", tmp_path / "nope.pt", "--dataset", "synthetic"],
         "no such file"),
    ]
    for args, words in cases:
        r = run(nas_cmd, *args)
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_train_final_with_the_auxiliary_head_and_a_last_batch_of_one_image(nas_cmd, tmp_path):
    """17 images in batches of 8: the last batch (one image) is left out with the auxiliary head, whose
    BatchNorm cannot normalise one value; a batch size of 1 with the head is one error line."""
    out = tmp_path / "f"
    common = ["--genotype", "darts-v2", "--dataset", "synthetic", "--config", small_data_yaml(tmp_path),
              "--channels", "8", "--layers", "3", "--epochs", "1", "--no-progress", "--auxiliary"]
    r = run(nas_cmd, "train-final", *common, "--subset", "17", "--batch-size", "8", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and (out / "result.json").exists()
    r = run(nas_cmd, "train-final", *common, "--subset", "4", "--batch-size", "1", "--out", tmp_path / "g")
    assert r.returncode == 2 and "--no-auxiliary" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "g").exists()
