"""Distributed search: 2 real gloo processes started by torchrun, as users start them.

The workers start through the test fork server (``nas_launcher``: torchrun's ``--no-python`` with the
launcher, or ``NASBENCH_NAS_COMMAND`` for ``nas --nproc``) except where a test kills a run and looks for its
processes by their command line, or runs ``torchrun -m nasbench`` itself.

The 2-process run must take the architecture steps of a 1-process run over the same global batches in
which BatchNorm sees each rank's share of a batch on its own (rank r's share of a global batch is every
2nd sample from r: ``batch[r::2]``); DDP averages the ranks' gradients, which is the gradient of the
global batch's mean loss.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from nasbench.engine import distributed
from nasbench.config import resolve_final_config, resolve_search_config
from nasbench.data import EpochSampler
from nasbench.final.train import FinalTrainer, has_unused_parameters
from nasbench.spaces.genotypes import load_genotype
from nasbench.spaces.darts.genotype import Genotype
from nasbench.engine.rundir import RunDir, torch_load
from nasbench.search.trainer import SearchTrainer
from conftest import NAS_EXEC, nas_launcher, rel

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["device=cpu", "batch_size=8", "model.channels=4", "model.layers=3", "data.dataset=synthetic",
        "data.num_train=32", "data.image_size=8", "plots=false"]
CASES = {
    "darts": ("darts", ["epochs=1"]),
    # the second-order cases: ε = hvp_r/‖v‖ large enough for a finite difference that fp32 rounding does not
    # dominate: at the default 0.01 a net this tiny has an fp32 second-order gradient 1.6–2.3 relative away from
    # its float64 value, so the two runs' last-bit differences (the gradient averages) come out at 1e-5 to 1e-3
    # instead of ~1e-7
    "darts-2nd": ("darts", ["epochs=1", "darts.unrolled=true", "darts.hvp_r=1.0"]),
    "gdas": ("gdas", ["epochs=1"]),
    "pc-darts-2nd": ("pc-darts", ["epochs=1", "model.channels=8", "pc_darts.k=2", "pc_darts.warmup_epochs=0",
                                  "pc_darts.unrolled=true", "pc_darts.hvp_r=1.0"]),
    "pc-darts": ("pc-darts", ["epochs=1", "model.channels=8", "pc_darts.k=2", "pc_darts.warmup_epochs=0"]),
    "p-darts": ("p-darts", ["epochs=3", "p_darts.layers=3", "p_darts.add_layers=[0,1,2]",
                            "p_darts.dropout_rate=[0.0,0.0,0.0]"]),
    # a decision at the end of every epoch of one step (the decided rows then frozen). 16×16 images: at 8×8
    # the last cell's 2×2 maps make this run chaotic (a 1e-7 change of the initial weights grows to 3e-2 in
    # α by the 8th step, in one process as in two). The growing batch leaves partial last batches, which a
    # distributed epoch drops (see test_nproc_...)
    "sgas": ("sgas", ["epochs=8", "data.num_train=16", "data.image_size=16", "scale_schedules=false",
                      "sgas.warmup_epochs=0", "sgas.decision_freq=1", "sgas.post_train=0", "sgas.batch_increase=0"]),
    "sgas-2nd": ("sgas", ["epochs=8", "data.num_train=16", "data.image_size=16", "scale_schedules=false",
                          "sgas.warmup_epochs=0", "sgas.decision_freq=1", "sgas.post_train=0", "sgas.batch_increase=0",
                          "sgas.unrolled=true", "sgas.hvp_r=1.0"]),
}
FINAL_TINY = ["device=cpu", "epochs=1", "batch_size=8", "eval_batch_size=16", "model.channels=8", "model.layers=3",
              "model.auxiliary=false", "model.drop_path_prob=0", "data.dataset=synthetic", "data.num_train=48",
              "data.num_test=20", "data.image_size=8", "data.cutout=0", "optim.lr=0.1"]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def forked() -> dict:
    """:data:`ENV` with ``nas --nproc``'s workers started through the fork server (``NASBENCH_NAS_COMMAND``)."""
    return {**ENV, "NASBENCH_NAS_COMMAND": shlex.join(nas_launcher())}


def torchrun(args: list[str], nproc: int = 2, launcher: str = "torch.distributed.run") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", launcher, "--standalone", f"--nproc-per-node={nproc}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)


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


class SlicedEvalNet(nn.Module):
    """The evaluation network run on each rank's share of the batch separately (training mode)."""

    def __init__(self, net: nn.Module, ranks: int):
        super().__init__()
        self.net, self.ranks = net, ranks

    def forward(self, x: torch.Tensor):
        if not self.training:
            return self.net(x)
        outs = [self.net(x[r::self.ranks])[0] for r in range(self.ranks)]
        out = x.new_empty(x.shape[0], outs[0].shape[1])
        for r, o in enumerate(outs):
            out[r::self.ranks] = o
        return out, None


class SlicedFinalTrainer(FinalTrainer):
    def _build(self) -> None:
        super()._build()
        self.net = self.ddp = SlicedEvalNet(self.net, 2)


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_take_the_steps_of_one_process_with_per_rank_batchnorm(case, tmp_path):
    algo, extra = CASES[case]
    out = tmp_path / "ddp"
    proc = torchrun(["--no-python", *nas_launcher(), "search", "--algo", algo, "--out", str(out), "--no-progress",
                     *TINY, *extra])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "global batch 8 = 2 × 4 per process" in proc.stderr
    assert proc.stderr.count("epoch   0") == 1  # only rank 0 prints
    # no warning from DDP: none on gradient strides (see test_weight_gradients_reach_ddp_in_...), and SGAS tells
    # DDP to look for unused parameters only from its first decision on (none is unused before)
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]
    cfg = resolve_search_config(algo, overrides=[*TINY, *extra])
    trainer = SlicedTrainer(cfg, RunDir.create(tmp_path / "ref"), show_progress=False)
    trainer.fit()
    last = len(trainer.run.metrics()) - 1  # the last epoch: after P-DARTS's prunings, SGAS's decisions
    ddp = torch_load(out / "arch" / f"epoch_{last:03d}.pt")["arch"]
    ref = torch_load(trainer.run.arch_path(last))["arch"]
    assert set(ddp) == set(ref)
    # the second-order cases run with hvp_r=1.0 (see CASES): with the default 0.01 the finite difference divides
    # the two runs' last-bit differences (their gradient averages) by 2ε, which took PC-DARTS to 5e-5 and SGAS's 8
    # epochs to 7e-4; with 1.0 every case agrees to ~1e-7
    tol = 1e-5
    for k, v in ref.items():
        assert float((v - ddp[k]).norm()) <= tol * float(v.norm()), (k, rel(ddp[k], v))
    if algo == "sgas":  # the same edges decided, for the same ops
        assert torch_load(out / "arch" / f"epoch_{last:03d}.pt")["extra"]["selected"] == \
            torch_load(trainer.run.arch_path(last))["extra"]["selected"]


def test_a_desynchronized_rank_stops_the_run(tmp_path):
    """Rank 1 nudges its α after its first step; the per-epoch check stops both ranks with exit code 2
    (passed on by `python -m nasbench.engine.distributed`, the torchrun that `--nproc` starts)."""
    script = Path(__file__).with_name("distributed_desync.py")
    proc = torchrun([str(script), "search", "--algo", "darts", "--out", str(tmp_path / "run"), "--no-progress",
                     *TINY, "epochs=2"], launcher="nasbench.engine.distributed")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: the architecture parameter alpha_normal of rank 1 differs from rank 0's" in proc.stderr
    assert "error (rank 1): the architecture parameter alpha_normal of rank 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "arch" / "epoch_000.pt").exists()


def kill_at_first_checkpoint(cmd: list[str], out: Path) -> None:
    """Start ``cmd`` and SIGKILL its whole process group once ``out/checkpoint.pt`` exists."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (out / "checkpoint.pt").exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        # torchrun starts its workers in sessions of their own: they outlive the launcher and would go on
        # training into ``out`` (the run's lock refuses a resume while rank 0 lives): kill them too
        for pid in _pids_running_in(out):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 30
        while _pids_running_in(out) and time.time() < deadline:
            time.sleep(0.05)


def _pids_running_in(out: Path) -> list[int]:
    """The processes whose command line names ``out`` (Linux /proc)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                cmdline = (d / "cmdline").read_bytes().split(b"\0")
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if str(out).encode() in cmdline and ") Z " not in stat:  # zombies hold no lock
                pids.append(int(d.name))
    return pids


def test_resume_a_two_process_run_with_one_process(tmp_path, nas_cmd):
    out = tmp_path / "run"
    kill_at_first_checkpoint([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                              "-m", "nasbench", "search", "--out", str(out), "--no-progress", *TINY, "epochs=3"], out)
    state = torch_load(out / "checkpoint.pt")
    assert state["world"] == 2
    proc = subprocess.run([*nas_cmd, "search", "--resume", str(out), "--no-progress"], capture_output=True,
                          text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "re-sharded from 2 to 1 process(es)" in proc.stderr
    assert {m["epoch"] for m in RunDir.open(out).metrics()} == {0, 1, 2}
    assert (out / "best.json").exists()


def test_resume_a_one_process_train_final_with_two(tmp_path, nas_cmd):
    """train-final: killed after its first epoch in one process, finished by two (the position re-sharded)."""
    out = tmp_path / "run"
    kill_at_first_checkpoint([*NAS_EXEC, "train-final", "--genotype", "darts-v2", "--out", str(out), "--no-progress",
                              *FINAL_TINY, "epochs=3"], out)
    assert torch_load(out / "checkpoint.pt")["world"] == 1
    proc = subprocess.run([*nas_cmd, "train-final", "--resume", str(out), "--nproc", "2", "--no-progress"],
                          capture_output=True, text=True, env=forked(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "re-sharded from 1 to 2 process(es)" in proc.stderr
    assert [m["epoch"] for m in RunDir.open(out).metrics()] == [0, 1, 2]
    state = torch_load(out / "checkpoint.pt")
    assert state["world"] == 2 and state["epoch"] == 3
    assert json.loads((out / "result.json").read_text())["test_images"] == 20


def test_ctrl_c_stops_every_process_at_one_step_after_a_checkpoint(tmp_path, nas_cmd):
    """SIGINT to the terminal's process group (what Ctrl-C does) mid-epoch: all ranks checkpoint the same
    step, `nas` exits 130 with one line, and `--resume --nproc 2` finishes the run."""
    out = tmp_path / "run"
    cmd = [*NAS_EXEC, "search", "--nproc", "2", "--out", str(out), "--no-progress", *TINY, "epochs=2",
           "data.num_train=256"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=forked(),
                         start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (out / "metrics.jsonl").exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # into the second epoch
        os.killpg(p.pid, signal.SIGINT)
        _, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, stderr[-3000:]
    assert stderr.count("interrupted: the checkpoint was saved") == 1
    assert "Traceback" not in stderr and "closing signal" not in stderr
    state = torch_load(out / "checkpoint.pt")
    assert state["world"] == 2 and state["epoch"] == 1 and 0 < state["step"] < 16
    proc = subprocess.run([*nas_cmd, "search", "--resume", str(out), "--nproc", "2", "--no-progress"],
                          capture_output=True, text=True, env=forked(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"epoch 1, step {state['step']}" in proc.stderr.replace("\n", " ")
    assert [m["epoch"] for m in RunDir.open(out).metrics()] == [0, 1]


@pytest.mark.parametrize("command, args, message", [
    ("search", ["--sync-bn"], "--sync-bn needs CUDA"),
    ("search", ["--nproc", "2", "--sync-bn"], "--sync-bn needs CUDA"),
    ("search", ["--nproc", "2", "batch_size=7"], "batch_size=7 does not split over 2 processes"),
    ("search", ["--nproc", "2", "--algo", "sgas", "sgas.batch_increase=3"],
     "sgas grows the batch to 67 at epoch 10, which does not split over 2 processes"),
    ("search", ["--nproc", "0"], "--nproc must be at least 1"),
    ("train-final", ["--nproc", "2", "--genotype", "darts-v2", "batch_size=7"],
     "batch_size=7 does not split over 2 processes"),
])
def test_distributed_mistakes_are_one_line_before_any_process_starts(nas_cmd, tmp_path, command, args, message):
    proc = subprocess.run([*nas_cmd, command, "--out", str(tmp_path / "r"), *args, "data.dataset=synthetic"],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert not (tmp_path / "r").exists()


def test_a_nas_command_that_cannot_start_is_one_line_before_any_process_starts(nas_cmd, tmp_path):
    proc = subprocess.run([*nas_cmd, "search", "--nproc", "2", "--out", str(tmp_path / "r"), "data.dataset=synthetic"],
                          capture_output=True, text=True, env={**ENV, "NASBENCH_NAS_COMMAND": "/nonexistent/python -m x"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: NASBENCH_NAS_COMMAND: '/nonexistent/python' is not an executable program"
    assert not (tmp_path / "r").exists()


def test_nproc_starts_torchrun(nas_cmd, tmp_path):
    """`nas search --nproc 2`, with SGAS's batch growing after each decision (8, 10, ... split over 2)."""
    out = tmp_path / "run"
    proc = subprocess.run([*nas_cmd, "search", "--nproc", "2", "--algo", "sgas", "--out", str(out), "--no-progress",
                           *TINY, "epochs=8", "sgas.batch_increase=2", "data.num_train=48"],
                          capture_output=True, text=True, env=forked(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes (gloo)" in proc.stderr
    assert (out / "best.json").exists() and proc.stdout.strip().endswith("best.json")
    sizes = [m["batch_size"] for m in RunDir.open(out).metrics()]
    assert sizes[0] == 8 and sizes[-1] > 8


def test_nproc_1_runs_the_distributed_path_with_one_process(nas_cmd, tmp_path):
    """`--nproc 1` joins a process group of one (gloo here, nccl on a GPU: the GPU check's one-GPU run) and
    wraps the supernet in DDP, so the distributed path can be checked on a single device."""
    out = tmp_path / "run"
    # NASBENCH_NAS_COMMAND starts the process: a shell that says so, then execs the fork server's launcher
    wrapper = ["sh", "-c", 'echo "started by the nas command: $1" >&2; exec "$@"', "sh", *nas_launcher()]
    env = {**ENV, "NASBENCH_NAS_COMMAND": shlex.join(wrapper)}
    proc = subprocess.run([*nas_cmd, "search", "--nproc", "1", "--algo", "darts", "--out", str(out), "--no-progress",
                           *TINY, "epochs=1"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("started by the nas command: ") == 1
    assert "distributed: 1 process (gloo); global batch 8 = 1 × 8 per process" in (out / "log.txt").read_text()
    assert (out / "best.json").exists()


def test_a_global_batch_that_does_not_split_under_torchrun_stops_every_rank(tmp_path):
    """Started by torchrun directly (no `--nproc` check first): each rank says it in one line, exit code 2
    through `python -m nasbench.engine.distributed`."""
    assert distributed.split_batch(8, 2) == 4 and distributed.split_batch(7, 1) == 7
    proc = torchrun(["-m", "nasbench", "search", "--out", str(tmp_path / "r"), "--no-progress", *TINY, "epochs=1",
                     "batch_size=7"], launcher="nasbench.engine.distributed")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: batch_size=7 does not split over 2 processes" in proc.stderr
    assert "error (rank 1): batch_size=7 does not split" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("n, start, world", [(50, 0, 2), (50, 17, 2), (49, 3, 3), (10, 0, 4)])
def test_ranks_share_every_global_batch_and_consume_a_prefix(n, start, world):
    """Rank r takes positions r, r+N, ... of the epoch order; `even` gives every rank as many indices."""
    idx = list(range(100, 100 + n))
    order = EpochSampler(idx, seed=1, epoch=3).order()
    shards = [list(EpochSampler(idx, 1, 3, start=start, rank=r, world=world, even=True)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1 and all(len(s) == len(EpochSampler(idx, 1, 3, start=start, rank=r,
                                                                                    world=world, even=True))
                                                      for r, s in enumerate(shards))
    merged = [s[k] for k in range(len(shards[0])) for s in shards]
    assert merged == order[start:start + len(merged)] and len(merged) > n - start - world
    uneven = [list(EpochSampler(idx, 1, 3, start=start, rank=r, world=world)) for r in range(world)]
    assert sorted(sum(uneven, [])) == sorted(order[start:])  # validation: every image once


def test_the_command_line_without_nproc():
    assert distributed.strip_nproc(["search", "--nproc", "2", "--algo", "gdas", "--nproc=3", "x=1"]) == \
        ["search", "--algo", "gdas", "x=1"]


@pytest.mark.parametrize("shape, fmt", [((6, 1, 3, 3), torch.channels_last), ((6, 4, 1, 1), torch.channels_last),
                                         ((6, 4, 3, 3), torch.channels_last), ((6, 4, 3, 3), torch.contiguous_format)])
def test_weight_gradients_reach_ddp_in_the_strides_of_their_weight(shape, fmt):
    """DDP warns of (and copies) a gradient whose strides are not its weight's. A [C, 1, k, k] or [C', C, 1, 1]
    weight in channels_last has strides that differ from the gradient kernels' only in dimensions of size 1:
    the gradient comes as a view (same memory); a gradient in another memory order comes as a copy."""
    w = torch.randn(shape).to(memory_format=fmt).requires_grad_()
    g = torch.randn(shape)  # NCHW, as the conv kernels give a weight's gradient
    h = distributed.in_layout_of(g, w)
    assert h.stride() == w.stride() and torch.equal(h, g)
    assert (h.data_ptr() == g.data_ptr()) == w.is_contiguous()  # a view wherever only size-1 strides differ
    distributed._grads_in_layout_of(w)
    distributed._grads_in_layout_of(w)  # once per parameter
    (w * g).sum().backward()
    assert w.grad.stride() == w.stride() and torch.equal(w.grad, g)


def test_cells_that_leave_parameters_unused_are_told_to_ddp():
    g = load_genotype("darts-v2")
    assert not has_unused_parameters(g)
    # node 3 (state 5) read by nothing and not concatenated: its ops' parameters get no gradient
    assert has_unused_parameters(Genotype(g.normal, [2, 3, 4], g.reduce, g.reduce_concat))


def test_train_final_with_nproc_takes_the_steps_of_one_process_with_per_rank_batchnorm(nas_cmd, tmp_path):
    """`nas train-final --nproc 2`: DDP's weights after an epoch equal a 1-process run with BN per rank's share."""
    out = tmp_path / "ddp"
    proc = subprocess.run([*nas_cmd, "train-final", "--genotype", "darts-v2", "--nproc", "2", "--out", str(out),
                           "--no-progress", *FINAL_TINY], capture_output=True, text=True, env=forked(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "global batch 8 = 2 × 4 per process" in proc.stderr
    assert proc.stderr.count("epoch   0") == 1 and proc.stdout.strip().endswith("result.json")
    result = json.loads((out / "result.json").read_text())
    cfg = resolve_final_config(overrides=FINAL_TINY)
    trainer = SlicedFinalTrainer(cfg, RunDir.create(tmp_path / "ref"), load_genotype("darts-v2"),
                                 show_progress=False)
    ref_result = trainer.fit()
    ddp = torch_load(out / "checkpoint.pt")
    assert ddp["world"] == 2 and len(ddp["rng_ranks"]) == 2
    ref = dict(trainer.net.net.named_parameters())
    assert set(ref) <= set(ddp["net"])
    for k, v in ref.items():
        v = v.detach()
        assert float((v - ddp["net"][k]).norm()) <= 1e-5 * float(v.norm()) + 1e-12, (k, rel(ddp["net"][k], v))
    # the test set is sharded and the meters summed: every image counted once
    assert result["test_images"] == 20 and ref_result["test_images"] == 20
    loss, ref_loss = RunDir(out).metrics()[0]["train_loss"], trainer.run.metrics()[0]["train_loss"]
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss)  # the ranks' summed meters: the whole epoch's mean
