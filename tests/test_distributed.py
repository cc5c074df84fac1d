"""Distributed search: 2 real gloo processes started by torchrun, as users start them.

The 2-process run must take the architecture steps of a 1-process run over the same global batches in
which BatchNorm sees each rank's share of a batch on its own (rank r's share of a global batch is every
2nd sample from r: ``batch[r::2]``); DDP averages the ranks' gradients, which is the gradient of the
global batch's mean loss.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from nasbench.config import resolve_search_config
from nasbench.run import RunDir, torch_load
from nasbench.trainer import SearchTrainer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["device=cpu", "batch_size=8", "model.channels=4", "model.layers=3", "data.dataset=synthetic",
        "data.num_train=32", "data.image_size=8", "plots=false"]
CASES = {
    "darts": ("darts", ["epochs=1"]),
    "darts-2nd": ("darts", ["epochs=1", "darts.unrolled=true"]),
    "gdas": ("gdas", ["epochs=1"]),
    "pc-darts": ("pc-darts", ["epochs=1", "model.channels=8", "pc_darts.k=2", "pc_darts.warmup_epochs=0"]),
    "p-darts": ("p-darts", ["epochs=3", "p_darts.layers=3", "p_darts.add_layers=[0,1,2]",
                            "p_darts.dropout_rate=[0.0,0.0,0.0]"]),
    # the growing batch leaves partial last batches, which a distributed epoch drops (see test_nproc_...)
    "sgas": ("sgas", ["epochs=8", "sgas.batch_increase=0"]),
}


def torchrun(args: list[str], nproc: int = 2, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, **kw)


class Sliced(nn.Module):
    """The supernet run on each rank's share of the batch separately (its BN statistics per share)."""

    def __init__(self, net: nn.Module, ranks: int):
        super().__init__()
        self.net, self.ranks = net, ranks

    def forward(self, x: torch.Tensor, weights) -> torch.Tensor:
        outs = [self.net(x[r::self.ranks], weights) for r in range(self.ranks)]
        out = x.new_empty(x.shape[0], outs[0].shape[1])
        for r, o in enumerate(outs):
            out[r::self.ranks] = o
        return out


class SlicedTrainer(SearchTrainer):
    def _build_stage(self, fresh_arch: bool) -> None:
        super()._build_stage(fresh_arch)
        self.net = self.ddp = Sliced(self.net, 2)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_take_the_steps_of_one_process_with_per_rank_batchnorm(case, tmp_path):
    algo, extra = CASES[case]
    out = tmp_path / "ddp"
    proc = torchrun(["-m", "nasbench", "search", "--algo", algo, "--out", str(out), "--no-progress", *TINY, *extra])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "global batch 8 = 2 × 4 per process" in proc.stderr
    assert proc.stderr.count("epoch   1") == 1  # only rank 0 prints
    cfg = resolve_search_config(algo, overrides=[*TINY, *extra])
    trainer = SlicedTrainer(cfg, RunDir.create(tmp_path / "ref"), show_progress=False)
    trainer.fit()
    last = len(trainer.run.metrics()) - 1  # the last epoch: after P-DARTS's prunings, SGAS's decisions
    ddp = torch_load(out / "arch" / f"epoch_{last:03d}.pt")["arch"]
    ref = torch_load(trainer.run.arch_path(last))["arch"]
    assert set(ddp) == set(ref)
    for k, v in ref.items():
        assert float((v - ddp[k]).norm()) <= 1e-5 * float(v.norm()), (k, rel(ddp[k], v))


def test_a_desynchronized_rank_stops_the_run(tmp_path):
    script = Path(__file__).with_name("distributed_desync.py")
    proc = torchrun([str(script), "search", "--algo", "darts", "--out", str(tmp_path / "run"), "--no-progress",
                     *TINY, "epochs=2"])
    assert proc.returncode != 0
    assert "architecture parameters of rank(s) 1 differ from rank 0's" in proc.stderr
    assert not (tmp_path / "run" / "arch" / "epoch_000.pt").exists()


def test_resume_a_two_process_run_with_one_process(tmp_path, nas_cmd):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "nasbench",
           "search", "--out", str(out), "--no-progress", *TINY, "epochs=3"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (out / "checkpoint.pt").exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    state = torch_load(out / "checkpoint.pt")
    assert state["world"] == 2
    proc = subprocess.run([*nas_cmd, "search", "--resume", str(out), "--no-progress"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "re-sharded from 2 to 1 process(es)" in proc.stderr
    assert {m["epoch"] for m in RunDir.open(out).metrics()} == {0, 1, 2}
    assert (out / "best.json").exists()


def test_sync_bn_on_cpu_is_a_clear_error(nas_cmd, tmp_path):
    proc = subprocess.run([*nas_cmd, "search", "--sync-bn", "--out", str(tmp_path / "r"), *TINY, "epochs=1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--sync-bn needs CUDA" in proc.stderr and "Traceback" not in proc.stderr


def test_nproc_starts_torchrun(nas_cmd, tmp_path):
    """`nas search --nproc 2`, with SGAS's batch growing after each decision (8, 10, ... split over 2)."""
    out = tmp_path / "run"
    proc = subprocess.run([*nas_cmd, "search", "--nproc", "2", "--algo", "sgas", "--out", str(out), "--no-progress",
                           *TINY, "epochs=8", "sgas.batch_increase=2", "data.num_train=64"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes (gloo)" in proc.stderr
    assert (out / "best.json").exists() and proc.stdout.strip().endswith("best.json")
    sizes = [m["batch_size"] for m in RunDir.open(out).metrics()]
    assert sizes[0] == 8 and sizes[-1] > 8


def test_a_global_batch_that_does_not_split_is_refused(tmp_path):
    proc = torchrun(["-m", "nasbench", "search", "--out", str(tmp_path / "r"), "--no-progress", *TINY, "epochs=1",
                     "batch_size=7"])
    assert proc.returncode != 0
    assert "batch_size=7 does not split over 2 processes" in proc.stderr
