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


def test_the_paired_benchmark_interleaves_the_variants_and_divides_round_by_round(monkeypatch, one_thread):
    """``--paired``: every variant built in one process, one step of each per round in a rotating order, the
    ratio to the reference taken within each round (the median of those), on the CPU with tiny settings."""
    import argparse

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import search_step

    args = argparse.Namespace(device="cpu", batch_size=4, channels=4, layers=3, space="nas-bench-201", steps=3,
                              warmup=1)
    from nasbench.search.trainer import SearchTrainer

    # each variant's steps take these (fake) times, the warm-up first; the clock moves only in the steps
    takes = {"reference": [1, 10, 20, 40], "fast": [1, 5, 4, 30], "fast+me": [1, 12, 30, 50]}
    order, now = [], [0.0]
    real_step = SearchTrainer.train_step

    def step(self, *a, **k):
        v = self.cfg.supernet + ("+me" if self.cfg.memory_efficient else "")
        now[0] += takes[v][sum(o == v for o in order)]
        order.append(v)
        return real_step(self, *a, **k)

    monkeypatch.setattr(SearchTrainer, "train_step", step)
    monkeypatch.setattr(search_step.time, "perf_counter", lambda: now[0])
    row = search_step.run_paired("gdas", ["reference", "fast", "memory-efficient"], args)
    assert row["kind"] == "paired" and row["space"] == "nas-bench-201" and row["rounds"] == 3
    # warm-up in order, then rounds starting at the reference, the fast and the memory-efficient variant
    assert order == ["reference", "fast", "fast+me",
                     "reference", "fast", "fast+me", "fast", "fast+me", "reference", "fast+me", "reference", "fast"]
    assert row["step_s_all"] == {"reference": [10, 20, 40], "fast": [5, 4, 30], "memory-efficient": [12, 30, 50]}
    assert row["step_s_median"] == {"reference": 20, "fast": 5, "memory-efficient": 30}
    # per round: fast 0.5, 0.2, 0.75; memory-efficient 1.2, 1.5, 1.25 (not the ratio of the medians: 0.25, 1.5)
    assert row["ratio_median"] == {"reference": 1.0, "fast": 0.5, "memory-efficient": 1.25}


def test_the_benchmark_times_further_steps_until_they_fill_the_minimum_time(monkeypatch):
    """``--min-time``: the warm-up is not timed, ``--steps`` steps always are, and more follow until the timed
    ones sum to the minimum (a cheap step gets more samples), never past ``MAX_STEPS``."""
    import argparse

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import search_step

    calls = []

    def step(seconds):
        def one():
            calls.append(seconds)
            return seconds
        return one

    def args(**k):
        return argparse.Namespace(**{"steps": 3, "warmup": 2, "min_time": 0.0, **k})

    assert search_step.timed_steps(step(5.0), args()) == [5.0] * 3 and len(calls) == 5
    assert search_step.timed_steps(step(5.0), args(min_time=12.0)) == [5.0] * 3  # 15 s already
    assert search_step.timed_steps(step(2.0), args(min_time=12.0)) == [2.0] * 6
    assert search_step.timed_steps(step(2.0), args(min_time=11.0)) == [2.0] * 6
    assert len(search_step.timed_steps(step(0.0), args(min_time=1.0))) == search_step.MAX_STEPS
    assert search_step.timed_steps(step(1.0), argparse.Namespace(steps=2, warmup=0)) == [1.0, 1.0]  # no min_time


def test_the_benchmark_names_the_cpu_with_its_family_model_and_vector_width(monkeypatch, tmp_path):
    """A row's device names the CPU from /proc/cpuinfo's first processor (name, family, model, the widest vector
    extension): one VM type comes with several CPU generations, whose step times differ by 2×."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import search_step

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
                    "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n\n"
                    "processor\t: 1\ncpu family\t: 99\nmodel name\t: other\n\n")
    assert search_step.cpu_model(str(info)) == "AMD EPYC, family 26 model 2, avx512f"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2\n\n")
    assert search_step.cpu_model(str(info)) == "Some CPU, avx2"
    assert search_step.cpu_model(str(tmp_path / "absent"))  # no /proc: platform's answer
