"""Exact resume: a search killed with SIGKILL and resumed ends bitwise where an uninterrupted one ends.

For every registered algorithm a tiny search runs once uninterrupted and once in a real subprocess that is
killed (SIGKILL, no chance to clean up) right after its first mid-epoch checkpoint appears, then continued
with ``nas search --resume``. The per-epoch architecture states and the final genotypes must be identical.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from nasbench import registry
from conftest import lock_pid, nas_launcher

BASE = ["--dataset", "synthetic", "--channels", "4", "--layers", "3", "--subset", "64", "--batch-size", "16",
        "--checkpoint-every", "1", "--device", "cpu", "--no-progress", "data.image_size=16", "plots=false"]

# Per algorithm: epochs and the schedule keys that make its defining step happen inside a tiny run.
ALGO_ARGS: dict[str, tuple[int, list[str]]] = {
    "darts": (3, []),
    "gdas": (3, []),  # Gumbel sampling every step: exercises the torch RNG state
    # warm-up epoch 0 without architecture steps, then partial-channel search with β (C=4 divisible by K=2)
    # memory_format=contiguous: with channels_last on CPU this tiny pc-darts run aborts in native code
    # ("double free or corruption") in the torch build used here, an issue apart from resuming
    "pc-darts": (3, ["scale_schedules=false", "pc_darts.k=2", "pc_darts.warmup_epochs=1",
                     "memory_format=contiguous"]),
    # three stages of one epoch each, a deeper supernet per stage, architecture steps in every stage
    "p-darts": (3, ["scale_schedules=false", "p_darts.layers=3", "p_darts.add_layers=[0,0,1]",
                    "p_darts.epochs_no_arch=0"]),
    # 8 greedy decisions, one per epoch from epoch 0, the batch growing after each (16 + 2·k ≤ 32 images)
    "sgas": (9, ["scale_schedules=false", "sgas.warmup_epochs=0", "sgas.decision_freq=1", "sgas.post_train=0",
                 "sgas.batch_increase=2"]),
}

SPACE_CASES = {"gdas@nas-bench-201": ("gdas", ["--space", "nas-bench-201", "--layers", "1"]),
               # GDAS on ENAS micro also samples two inputs per node from the same noise stream
               "gdas@enas-micro": ("gdas", ["--space", "enas-micro", "--layers", "3"]),
               "gdas@enas-macro": ("gdas", ["--space", "enas-macro", "--layers", "4"])}
"""Algorithm cases on another space (the default ``--layers 3`` is overridden by the later flag)."""

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # each process its own hash seed


def _cmd(case: str, out: Path, nas: list[str]) -> list[str]:
    algo, space_args = SPACE_CASES.get(case, (case, []))
    epochs, extra = ALGO_ARGS[algo]
    return [*nas, "search", "--algo", algo, "--epochs", str(epochs), "--out", str(out), *BASE, *space_args, *extra]


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def _genotype(run: Path) -> dict:
    d = json.loads((run / "best.json").read_text())
    return {k: v for k, v in d.items() if k not in ("run",)}


def _assert_same_state(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {list(a)} vs {list(b)}"
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


@pytest.mark.parametrize("algo", [*registry.names("algorithm"), *SPACE_CASES])
def test_sigkill_and_resume_is_bitwise_identical(algo: str, tmp_path: Path) -> None:
    if SPACE_CASES.get(algo, (algo,))[0] not in ALGO_ARGS:
        pytest.skip(f"no tiny schedule known for algorithm {algo!r}: add it to ALGO_ARGS in {Path(__file__).name}")
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    _run(_cmd(algo, ref, nas_launcher()))

    # the run killed is the process that trains: the one whose pid its lock names (the fork server's process,
    # not its launcher, which then dies of the same signal)
    proc = subprocess.Popen(_cmd(algo, cut, nas_launcher()), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    ckpt = cut / "checkpoint.pt"
    deadline = time.time() + 240
    try:
        while not ckpt.exists():  # the first checkpoint is mid-epoch 0 (after step 1 of 2)
            assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        os.kill(lock_pid(cut), signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (cut / "best.json").exists()

    _run([*nas_launcher(), "search", "--resume", str(cut), "--no-progress"])

    epochs = sorted(p.name for p in (ref / "arch").glob("epoch_*.pt"))
    assert epochs and epochs == sorted(p.name for p in (cut / "arch").glob("epoch_*.pt"))
    for name in epochs:
        a = torch.load(ref / "arch" / name, weights_only=True)
        b = torch.load(cut / "arch" / name, weights_only=True)
        _assert_same_state(a, b, f"arch/{name}")
    assert _genotype(ref) == _genotype(cut)


class Killed(Exception):
    """Stands for SIGKILL at one exact point of a run."""


def _kill_before_checkpoint(monkeypatch, cls, when) -> None:
    """Make ``cls._checkpoint`` die (before writing) on the first call for which ``when(self, epoch, step)``."""
    original = cls._checkpoint

    def checkpoint(self, epoch, step, *args):
        if when(self, epoch, step):
            raise Killed
        return original(self, epoch, step, *args)

    monkeypatch.setattr(cls, "_checkpoint", checkpoint)


def _epochs(path: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()]


def test_a_kill_between_logging_an_epoch_and_its_checkpoint_logs_nothing_twice(tmp_path: Path, monkeypatch) -> None:
    """Killed after an epoch's metrics and events lines but before its checkpoint (and with a torn line at the
    end of metrics.jsonl), a resumed search writes each epoch's records exactly once."""
    from nasbench.config import resolve_search_config
    from nasbench.search.trainer import SearchTrainer, search

    epochs, extra = ALGO_ARGS["sgas"]
    cfg = resolve_search_config("sgas", overrides=["device=cpu", "data.dataset=synthetic", "model.channels=4",
                                                   "model.layers=3", "data.subset=64", "batch_size=16",
                                                   "data.image_size=16", "plots=false", f"epochs={epochs}",
                                                   f"out={tmp_path / 'run'}", *extra])
    _kill_before_checkpoint(monkeypatch, SearchTrainer, lambda self, epoch, step: self.global_epoch == 2 and not step)
    with pytest.raises(Killed):
        search(cfg, show_progress=False)
    run = tmp_path / "run"
    assert _epochs(run / "metrics.jsonl") == [0, 1] and _epochs(run / "events.jsonl") == [0, 0, 1, 1]
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')  # torn by the kill
    monkeypatch.undo()
    _run([*nas_launcher(), "search", "--resume", str(run), "--no-progress"])
    assert _epochs(run / "metrics.jsonl") == list(range(epochs))
    assert _epochs(run / "events.jsonl") == [e for e in range(8) for _ in (0, 1)]  # a decision per cell type


def test_a_train_final_killed_before_its_checkpoint_logs_each_epoch_once(tmp_path: Path, monkeypatch) -> None:
    from nasbench.config import resolve_final_config
    from nasbench.final.train import FinalTrainer, train_final

    cfg = resolve_final_config(overrides=["device=cpu", "data.dataset=synthetic", "data.image_size=8",
                                          "data.num_train=32", "data.num_test=16", "model.channels=8",
                                          "model.layers=3", "epochs=2", "batch_size=16", f"out={tmp_path / 'run'}"])
    _kill_before_checkpoint(monkeypatch, FinalTrainer, lambda self, epoch, step: epoch == 1 and not step)
    with pytest.raises(Killed):
        train_final(cfg, show_progress=False)
    run = tmp_path / "run"
    assert _epochs(run / "metrics.jsonl") == [0] and not (run / "checkpoint.pt").exists()
    monkeypatch.undo()
    _run([*nas_launcher(), "train-final", "--resume", str(run), "--no-progress"])
    assert _epochs(run / "metrics.jsonl") == [0, 1]
