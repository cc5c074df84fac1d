"""GDAS's search data as AutoDL-Projects builds it (get_nas_search_loaders + SearchDataset): a seeded random split
of the training set into a weight half and an architecture half, recorded in the run and kept on resume, and
architecture images drawn with replacement, independently of the weight batch. The other algorithms keep their
official index split (DARTS's train_search.py: indices[:split] / indices[split:]) and architecture stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from nasbench.config import resolve_search_config
from nasbench.data.sampling import DrawBatchSampler, random_search_split, subset_indices
from nasbench.search.data import SPLIT_FILE, ArchDraws, ArchStream, arch_batches, load_search_data
from conftest import lock_pid, nas_launcher

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY = ["--dataset", "synthetic", "data.num_train=48", "data.image_size=8", "--channels", "4", "--layers", "3",
        "--batch-size", "8", "--no-progress", "plots=false", "memory_format=contiguous"]
MASK64 = (1 << 64) - 1


def expected_split(n: int, portion: float, seed: int, indices=None):
    """The split recomputed from its definition: torch.randperm of the images under a generator seeded with
    seed·1000003 + 0x5B117, the first floor(portion·n) positions to the weights, each half in ascending order
    (as AutoDL-Projects' cifar-split.txt lists them)."""
    indices = list(range(n)) if indices is None else indices
    g = torch.Generator().manual_seed((seed * 1000003 + 0x5B117) & MASK64)
    perm = torch.randperm(len(indices), generator=g).tolist()
    k = int(portion * len(indices) // 1)
    return sorted(indices[i] for i in perm[:k]), sorted(indices[i] for i in perm[k:])


def expected_draw(arch_idx, batch, seed, k):
    """Architecture batch k: batch positions uniform with replacement over the half, from a generator seeded
    with (seed + 0xD4A3)·1000003 + k alone."""
    g = torch.Generator().manual_seed(((seed + 0xD4A3) * 1000003 + k) & MASK64)
    return [arch_idx[i] for i in torch.randint(len(arch_idx), (batch,), generator=g).tolist()]


def test_random_split_is_a_seeded_permutation():
    w, a = random_search_split(list(range(100)), 0.5, 7)
    assert (w, a) == expected_split(100, 0.5, 7)
    assert len(w) == len(a) == 50 and sorted(w + a) == list(range(100)) and not set(w) & set(a)
    assert (w, a) != (list(range(50)), list(range(50, 100)))  # not DARTS's index split
    assert random_search_split(list(range(100)), 0.5, 8) != (w, a)  # another seed, another split
    idx = subset_indices(1000, 30, 3)  # a subset: the split permutes the subset's images
    assert random_search_split(idx, 0.3, 3) == expected_split(0, 0.3, 3, idx)
    assert len(random_search_split(idx, 0.3, 3)[0]) == 9


def test_gdas_and_only_gdas_take_the_random_split_and_draws():
    for algo in ("darts", "pc-darts", "p-darts", "sgas", "gdas"):
        cfg = resolve_search_config(algo, overrides=["data.dataset=synthetic", "data.num_train=40"])
        want = ("random", "draw") if algo == "gdas" else ("index", "stream")
        assert (cfg.data.split, cfg.data.arch_batches) == want
        data = load_search_data(cfg)
        if algo == "gdas":
            assert (data.weight_idx, data.arch_idx) == expected_split(40, 0.5, cfg.seed)
            assert isinstance(arch_batches(cfg, data, False), ArchDraws)
        else:  # DARTS's train_search.py: the first half of the indices, the rest
            assert (data.weight_idx, data.arch_idx) == (list(range(20)), list(range(20, 40)))
            assert isinstance(arch_batches(cfg, data, False), ArchStream)
    cfg = resolve_search_config("darts", overrides=["data.dataset=synthetic", "data.num_train=40", "data.split=random"])
    assert load_search_data(cfg).arch_idx == expected_split(40, 0.5, cfg.seed)[1]  # an option for any algorithm


def test_arch_draws_are_independent_of_the_weight_batches_and_resumable():
    n = 30
    ds = TensorDataset(torch.arange(n).float().view(n, 1), torch.arange(n))  # each image is its own index
    arch_idx = [1, 4, 5, 9, 12, 17, 20, 22, 28]
    draws = ArchDraws(ds, arch_idx, seed=3, workers=0, pin=False)
    got = [draws.next(8)[1].tolist() for _ in range(6)]
    assert got == [expected_draw(arch_idx, 8, 3, k) for k in range(6)]
    flat = [i for b in got for i in b]
    assert set(flat) <= set(arch_idx) and any(len(set(b)) < len(b) for b in got)  # with replacement
    # the k-th draw is fixed by (seed, k) alone: whatever the weight batches were, a fresh stream moved to
    # position 4 (a resumed run) continues with the same batches
    again = ArchDraws(ds, arch_idx, seed=3, workers=0, pin=False)
    again.load({"draws": 4})
    assert [again.next(8)[1].tolist() for _ in range(2)] == got[4:]
    assert again.state() == {"draws": 6}
    # two processes: the ranks' shares of each draw, interleaved, are the one-process global draw
    ranks = [ArchDraws(ds, arch_idx, seed=3, workers=0, pin=False, rank=r, world=2) for r in (0, 1)]
    for k in range(3):
        r0, r1 = (r.next(4)[1].tolist() for r in ranks)
        assert [x for pair in zip(r0, r1) for x in pair] == expected_draw(arch_idx, 8, 3, k)
    assert DrawBatchSampler(arch_idx, 8, 3).draw(2) == expected_draw(arch_idx, 8, 3, 2)
    # one architecture image per weight image: a partial weight batch (the epoch's last) gets as many
    assert again.next(8, paired=5)[1].tolist() == expected_draw(arch_idx, 5, 3, 6)
    assert again.next(8, paired=8)[1].tolist() == expected_draw(arch_idx, 8, 3, 7)
    stream = ArchStream(ds, arch_idx, seed=3, workers=0, pin=False)  # DARTS's queue: its own batch size
    assert len(stream.next(4, paired=3)[1]) == 4


def test_a_stored_split_wins_on_resume(tmp_path):
    cfg = resolve_search_config("gdas", overrides=["data.dataset=synthetic", "data.num_train=40"])
    stored = {"split": "random", "seed": cfg.seed, "weights": list(range(0, 40, 2)), "arch": list(range(1, 40, 2))}
    (tmp_path / SPLIT_FILE).write_text(json.dumps(stored))
    data = load_search_data(cfg, run_path=tmp_path)
    assert (data.weight_idx, data.arch_idx) == (stored["weights"], stored["arch"])
    (tmp_path / SPLIT_FILE).write_text(json.dumps({**stored, "arch": [1, 99]}))
    from nasbench.errors import RunDirError

    with pytest.raises(RunDirError, match="outside the 40 training images"):
        load_search_data(cfg, run_path=tmp_path)


def _cmd(out: Path, nas: list[str], algo: str = "gdas") -> list[str]:
    return [*nas, "search", "--algo", algo, "--epochs", "2", "--out", str(out), *TINY,
            "--checkpoint-every", "1"]


def test_split_recorded_and_identical_after_kill_and_resume(tmp_path):
    """A real GDAS search killed (SIGKILL) after its first mid-epoch checkpoint and resumed: the recorded split
    is the seed's, unchanged by the resume, and the run ends where an uninterrupted one ends."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    r = subprocess.run(_cmd(ref, nas_launcher()), env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((ref / SPLIT_FILE).read_text())
    assert (rec["weights"], rec["arch"]) == expected_split(48, 0.5, 2) and rec["seed"] == 2

    proc = subprocess.Popen(_cmd(cut, nas_launcher()), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    try:
        while not (cut / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.time() < deadline
            time.sleep(0.01)
        os.kill(lock_pid(cut), signal.SIGKILL)  # the process that trains
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    before = (cut / SPLIT_FILE).read_bytes()
    state = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert state["arch_stream"]["draws"] >= 1  # the position of the architecture draws is checkpointed
    r = subprocess.run([*nas_launcher(), "search", "--resume", str(cut), "--no-progress"],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (cut / SPLIT_FILE).read_bytes() == before == (ref / SPLIT_FILE).read_bytes()
    for name in ("epoch_000.pt", "epoch_001.pt"):
        assert_same(torch.load(ref / "arch" / name, weights_only=True),
                    torch.load(cut / "arch" / name, weights_only=True))


def assert_same(a, b):
    """Bitwise equality of two nested states (tensors, dicts, lists, numbers)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_other_algorithms_write_no_split_file(tmp_path):
    r = subprocess.run([*_cmd(tmp_path / "d", nas_launcher(), "darts")[:-2], "--epochs", "1"], env=ENV, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (tmp_path / "d" / SPLIT_FILE).exists()
