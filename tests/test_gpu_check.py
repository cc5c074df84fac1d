"""``benchmarks/gpu_check.sh`` up to the point where CUDA is required, and the benchmark's CUDA-only path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the script runs for real")
def test_gpu_check_without_cuda_writes_the_machine_facts_and_exits_3(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "no CUDA device" in proc.stderr
    facts = json.loads((tmp_path / "out" / "env.json").read_text())
    assert facts["torch"] == torch.__version__ and facts["cuda_available"] is False
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["env.json"]


def test_gpu_check_needs_an_output_folder():
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True)
    assert proc.returncode != 0 and "usage: benchmarks/gpu_check.sh OUTDIR" in proc.stderr


def test_the_benchmark_measures_in_process_and_reports_failures_as_rows(monkeypatch, one_thread):
    """The CUDA path runs each measurement in the benchmark's own process; here on the CPU with tiny
    settings: a step row, an equality row, and a failing case that becomes an error row, not a crash."""
    import argparse

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import search_step

    args = argparse.Namespace(device="cpu", batch_size=4, channels=4, layers=3, space="darts", steps=1, warmup=0,
                              diff_batch_f64=2, isolate=False)
    step = search_step.in_process(["--one", "gdas", "fast"], "gdas", "darts", args)
    assert step["kind"] == "step" and step["step_s_median"] > 0 and step["layers"] == 3
    diff = search_step.in_process(["--diff", "gdas", "fast"], "gdas", "darts", args)
    assert diff["kind"] == "diff" and diff["logits_f64"] < 1e-12 and diff["arch_grads_f64"] < 1e-12
    bad = search_step.in_process(["--one", "gdas", "fast"], "gdas", "darts",
                                 argparse.Namespace(**{**vars(args), "layers": 2}))
    assert "error" in bad and "reduction cell" in bad["error"][0]
