"""``--threads`` / ``threads``: the CPU threads of a run, honouring ``OMP_NUM_THREADS``, shared over ``--nproc``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

from nasbench.engine.device import apply_threads

TINY = ["--dataset", "synthetic", "data.num_train=16", "data.image_size=8", "--channels", "2",
        "--layers", "3", "--batch-size", "4", "--epochs", "1", "--device", "cpu", "--no-progress"]
FINAL = ["--genotype", "darts-v2", "--dataset", "synthetic", "data.num_train=8", "data.num_test=4",
         "data.image_size=8", "--channels", "2", "--layers", "2", "--batch-size", "4", "--epochs", "1",
         "--device", "cpu", "--no-auxiliary", "--no-progress"]


def run_nas(args: list[str], omp: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    return subprocess.run([sys.executable, "-m", "nasbench", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def start_line(stderr: str) -> str:
    return " ".join(stderr.split())  # rich wraps the start line at the console width


@pytest.mark.parametrize("command, args", [("search", TINY), ("train-final", FINAL)])
def test_threads_flag_sets_the_thread_count(tmp_path, command, args):
    """--threads 1 wins over OMP_NUM_THREADS=2: the run says so and config.yaml keeps it."""
    out = tmp_path / "run"
    r = run_nas([command, *args, "--threads", "1", "--out", str(out)], omp="2")
    assert r.returncode == 0, r.stderr
    assert "device cpu, 1 thread" in start_line(r.stderr)
    assert yaml.safe_load((out / "config.yaml").read_text())["threads"] == 1


def test_omp_num_threads_is_honoured_without_the_flag(tmp_path):
    out = tmp_path / "run"
    r = run_nas(["search", *TINY, "--out", str(out)], omp="1")
    assert r.returncode == 0, r.stderr
    assert "device cpu, 1 thread" in start_line(r.stderr)
    assert yaml.safe_load((out / "config.yaml").read_text())["threads"] is None


def test_threads_as_a_config_key(tmp_path):
    out = tmp_path / "run"
    r = run_nas(["search", *TINY, "threads=1", "--out", str(out)], omp="2")
    assert r.returncode == 0, r.stderr
    assert "device cpu, 1 thread" in start_line(r.stderr)


@pytest.mark.parametrize("command, args", [("search", TINY), ("train-final", FINAL)])
@pytest.mark.parametrize("bad", [["--threads", "0"], ["--threads", "-1"], ["threads=0"], ["threads=two"]])
def test_bad_thread_count_is_one_error_line(tmp_path, command, args, bad):
    out = tmp_path / "run"
    r = run_nas([command, *args, *bad, "--out", str(out)], omp="1")
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "threads" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_threads_are_shared_over_processes():
    """--threads 4 in 2 processes: 2 each; never fewer than one."""
    n = torch.get_num_threads()
    try:
        assert apply_threads(4, world=2) == 2
        assert apply_threads(1, world=2) == 1
        assert apply_threads(3, world=1) == 3
        torch.set_num_threads(2)
        assert apply_threads(None, world=2) == 2  # None: whatever the process has (OMP_NUM_THREADS or torch's)
    finally:
        torch.set_num_threads(n)


def test_nproc_gives_each_process_its_share(tmp_path):
    """--nproc 2 --threads 2: each worker runs 1 thread (OMP_NUM_THREADS of the workers and set_num_threads)."""
    out = tmp_path / "run"
    r = run_nas(["search", *TINY, "--threads", "2", "--nproc", "2", "--out", str(out)], omp=None)
    assert r.returncode == 0, r.stderr
    assert "device cpu, 1 thread" in start_line(r.stderr)
    assert yaml.safe_load((out / "config.yaml").read_text())["threads"] == 2
