"""Run directories and results are safe: a failed start writes nothing (and a start that failed before its
first checkpoint can start again), SGAS's batch growth fits the batch and data the user chose, `derive` and
`export` never overwrite a result silently, a run is locked while a process owns it, and every file the tool
writes gets the ordinary umask-derived mode."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import NAS_EXEC, nas_launcher, tiny_strategy

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY = ["device=cpu", "batch_size=8", "model.channels=4", "model.layers=3", "data.dataset=synthetic",
        "data.num_train=32", "data.image_size=8", "plots=false", "--no-progress"]
FINAL_TINY = ["device=cpu", "epochs=1", "batch_size=8", "eval_batch_size=16", "model.channels=4", "model.layers=3",
              "model.auxiliary=false", "model.drop_path_prob=0", "data.dataset=synthetic", "data.num_train=16",
              "data.num_test=8", "data.image_size=8", "data.cutout=0", "--no-progress"]
UMASK = 0o027  # every `nas` of this module runs with it: every file they write must be 0640


def nas(*args, cwd=None, umask: int = UMASK, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*nas_launcher(), *map(str, args)], capture_output=True, text=True, env=ENV, cwd=cwd, umask=umask,
                          timeout=timeout)


def assert_one_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-3000:]
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> Path:
    """A finished tiny DARTS search of two epochs."""
    out = tmp_path_factory.mktemp("search") / "run"
    proc = nas("search", "--out", out, *TINY, "epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def final_run(tmp_path_factory) -> Path:
    """A finished tiny train-final run of one epoch."""
    out = tmp_path_factory.mktemp("final") / "run"
    proc = nas("train-final", "--genotype", "darts-v2", "--out", out, *FINAL_TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


# ---------------------------------------------------------------------------------------------- failed starts
@pytest.mark.parametrize("args, message", [
    (["--subset", "5000"], "data.subset=5000 must be between 1 and the 32 training images"),
    (["data.train_portion=0.9", "--batch-size", "8"], "batch size 8 is larger than the 4 images of the architecture"),
    (["--dataset", "cifar10", "--data-dir", "{tmp}/none"], "cifar10 not found"),
    (["--dataset", "imagefolder", "--data-dir", "{tmp}/empty"], "no class sub-folders"),
], ids=["subset", "batch", "missing-data", "empty-folder"])
def test_a_failed_search_start_writes_nothing(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_one_error(nas("search", "--out", tmp_path / "r", *TINY, "epochs=1", *args), message)
    assert not (tmp_path / "r").exists()


def test_failed_starts_add_no_default_run_directory(tmp_path):
    """Without --out every failed try added a runs/... directory."""
    assert_one_error(nas("search", *TINY, "epochs=1", "--batch-size", "32", cwd=tmp_path),
                     "batch size 32 is larger than the 16 images of the weight half")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, message", [
    (["--subset", "500"], "data.subset=500 must be between 1 and the 16 training images"),
    (["--batch-size", "32"], "batch size 32 is larger than the 16 training images"),
], ids=["subset", "batch"])
def test_a_failed_train_final_start_writes_nothing(tmp_path, args, message):
    assert_one_error(nas("train-final", "--genotype", "darts-v2", "--out", tmp_path / "r", *FINAL_TINY, *args),
                     message)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["search", "train-final"])
def test_out_naming_a_file_is_one_error_line(tmp_path, command):
    f = tmp_path / "taken.txt"
    f.write_text("keep me\n")
    args = TINY if command == "search" else ["--genotype", "darts-v2", *FINAL_TINY]
    assert_one_error(nas(command, "--out", f, *args), f"--out {f} is a file")
    assert_one_error(nas(command, "--out", f / "run", *args), f"{f} is a file, not a directory")
    assert f.read_text() == "keep me\n"


def never_started_search(out: Path, *overrides: str) -> None:
    """What a start that failed before its first checkpoint leaves (as main left it after a failed data
    check): the resolved config.yaml and the empty arch/ and genotypes/ folders."""
    from nasbench.config import resolve_search_config, to_yaml

    cfg = resolve_search_config("darts", overrides=[o for o in TINY if "=" in o] + list(overrides))
    (out / "arch").mkdir(parents=True)
    (out / "genotypes").mkdir()
    (out / "config.yaml").write_text(to_yaml(cfg))


def test_a_start_that_failed_before_its_first_checkpoint_starts_again_in_the_same_directory(tmp_path):
    out = tmp_path / "r"
    never_started_search(out, "data.subset=5000")
    # --resume repeats the error, and --resume with the fix is refused: both say how to start it again
    assert_one_error(nas("search", "--resume", out), "data.subset=5000 must be", "never reached its first checkpoint",
                     f"--out {out}")
    assert_one_error(nas("search", "--resume", out, "--subset", "16"), "never reached its first checkpoint",
                     f"--out {out}")
    proc = nas("search", "--out", out, *TINY, "epochs=1", "--subset", "16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting again in" in proc.stderr
    from nasbench.config import load_run_config

    assert load_run_config(out / "config.yaml").data.subset == 16
    assert (out / "best.json").is_file() and (out / "checkpoint.pt").is_file()
    # a run that got somewhere is never started over
    assert_one_error(nas("search", "--out", out, *TINY, "epochs=1"), "already exists", f"--resume {out}")


def test_a_failed_train_final_start_can_start_again(tmp_path):
    out = tmp_path / "r"
    from nasbench.config import resolve_final_config, to_yaml

    cfg = resolve_final_config(overrides=[o for o in FINAL_TINY if "=" in o] + ["genotype=darts-v2", "data.subset=99"])
    out.mkdir()
    (out / "config.yaml").write_text(to_yaml(cfg))
    proc = nas("train-final", "--genotype", "darts-v2", "--out", out, *FINAL_TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "result.json").is_file() and (out / "genotype.json").is_file()


# ---------------------------------------------------------------------------------------------- SGAS batch growth
def test_sgas_grows_the_batch_in_proportion_to_the_batch_chosen():
    from nasbench.search.trainer import batch_plan

    _, paper, _ = tiny_strategy("sgas", build=False)
    assert paper.batch_increase() == 8  # the official 64 + 8 per decision
    _, s8, _ = tiny_strategy("sgas", "batch_size=8", "epochs=10", build=False)
    assert s8.batch_increase() == 1
    assert [s8.batch_size(e) for e in range(10)] == [8, 8, 8, 9, 10, 11, 12, 13, 14, 15]
    _, s32, _ = tiny_strategy("sgas", "batch_size=32", build=False)
    assert s32.batch_increase() == 4
    _, s20, _ = tiny_strategy("sgas", "batch_size=20", build=False)
    assert s20.batch_increase() == 3  # 2.5 rounds up
    # an explicit increment is taken as given, and a grown batch stops at what the data holds
    _, big, _ = tiny_strategy("sgas", "batch_size=8", "epochs=10", "sgas.batch_increase=8", build=False)
    assert big.batch_size(9) == 64
    big.limit_batch(32)
    assert [big.batch_size(e) for e in range(10)] == [8, 8, 8, 16, 24, 32, 32, 32, 32, 32]
    plan = batch_plan(big)
    assert plan == ("sgas batch size by epoch: 0-2: 8, 3: 16, 4: 24, 5-9: 32 (held at 32: the images of the "
                    "smaller half of the search split)")
    assert batch_plan(tiny_strategy("darts", build=False)[1]) is None


def test_a_sized_down_sgas_run_finishes_and_prints_its_batch_plan(tmp_path):
    """`nas search --algo sgas --preset quick --batch-size 8 --subset 64` (tiny network): its decisions grew
    the batch from 8 to 40 on main and failed on 32 images."""
    out = tmp_path / "r"
    proc = nas("search", "--algo", "sgas", "--preset", "quick", "--batch-size", "8", "--subset", "64",
               "--dataset", "synthetic", "--channels", "4", "--layers", "3", "data.image_size=8", "plots=false",
               "--device", "cpu", "--no-progress", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("sgas batch size by epoch: 0-2: 8, 3: 9, 4: 10, 5: 11, 6: 12, 7: 13, 8: 14, 9: 15"
            in " ".join(proc.stderr.split()))
    sizes = [json.loads(line)["batch_size"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sizes == [8, 8, 8, 9, 10, 11, 12, 13, 14, 15]
    assert json.loads((out / "best.json").read_text())["complete"] is True


def test_an_explicit_sgas_growth_stops_at_what_the_data_holds(tmp_path):
    """`sgas.batch_increase=8` from a batch of 8 on 32 + 32 images: 8, 16, 24, 32, then 40 failed on main (and
    the run could never be resumed); the batch now stays at 32 and the run finishes."""
    out = tmp_path / "r"
    proc = nas("search", "--algo", "sgas", "--out", out, *TINY, "epochs=8", "data.num_train=64",
               "sgas.batch_increase=8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(held at 32: the images of the smaller half of the search split)" in " ".join(proc.stderr.split())
    sizes = [json.loads(line)["batch_size"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sizes == [8, 16, 24, 32, 32, 32, 32, 32]


# ---------------------------------------------------------------------------------------------- derive / export
def test_derive_an_earlier_epoch_never_overwrites_the_result(search_run):
    best = (search_run / "best.json").read_text()
    proc = nas("derive", search_run, "--epoch", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = search_run / "genotypes" / "derived_epoch_000.json"
    assert proc.stdout.strip().endswith("derived_epoch_000.json")
    assert (search_run / "best.json").read_text() == best
    assert json.loads(written.read_text())["epoch"] == 0
    # the per-epoch genotypes stay what the run wrote (a derived_ file is not one of them)
    assert [p.name for p in sorted((search_run / "genotypes").glob("epoch_*.json"))] == ["epoch_000.json",
                                                                                       "epoch_001.json"]


def test_derive_and_export_refuse_to_overwrite_without_force(search_run, final_run, tmp_path):
    taken = tmp_path / "taken.json"
    taken.write_text("mine\n")
    assert_one_error(nas("derive", search_run, "-o", taken), f"{taken} already exists", "--force")
    assert taken.read_text() == "mine\n"
    proc = nas("derive", search_run, "-o", taken, "--force")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(taken.read_text())["normal"]
    # a path through a file, and a directory, are one line each
    assert_one_error(nas("derive", search_run, "-o", taken / "x.json"), f"{taken} is a file, not a directory")
    assert_one_error(nas("derive", search_run, "-o", tmp_path), "is a directory")
    model = tmp_path / "model.pt2"
    model.write_bytes(b"old")
    assert_one_error(nas("export", final_run, "--output", model), f"{model} already exists", "--force")
    assert model.read_bytes() == b"old"
    assert_one_error(nas("export", final_run, "--output", taken / "m.pt2"), f"{taken} is a file, not a directory")
    # (export --force: in test_every_file_written_has_the_umask_mode)


# ---------------------------------------------------------------------------------------------- the run lock
def test_a_run_held_by_another_process_is_refused_naming_it(search_run, final_run):
    from nasbench.engine.rundir import RunDir

    for run, command in ((search_run, "search"), (final_run, "train-final")):
        held = RunDir.open(run)
        held.lock()
        try:
            before = sorted((p.name, p.stat().st_mtime_ns) for p in files_under(run))
            line = assert_one_error(nas(command, "--resume", run), f"is in use by process {os.getpid()} on "
                                                                   f"{socket.gethostname()}")
            assert f"--resume {run}" in line
            assert sorted((p.name, p.stat().st_mtime_ns) for p in files_under(run)) == before
        finally:
            held.unlock()


def test_a_running_search_holds_its_directory_until_it_dies(tmp_path):
    """Two real processes: the second one, a resume or a new start into the same directory, is refused while
    the first runs; after `kill -9` of the first the directory is free."""
    out = tmp_path / "r"
    first = subprocess.Popen([*NAS_EXEC, "search", "--out", str(out), *TINY, "epochs=200", "data.num_train=256"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.time() + 60
        lock = out / ".lock"
        while not (lock.is_file() and lock.read_text().strip()) and time.time() < deadline:
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.02)
        assert lock.read_text().split()[0] == str(first.pid)
        assert_one_error(nas("search", "--resume", out), f"in use by process {first.pid}")
        assert_one_error(nas("search", "--out", out, *TINY, "epochs=1"), f"in use by process {first.pid}")
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)  # no clean-up at all: the kernel drops the lock
        first.wait(timeout=60)
    from nasbench.engine.rundir import RunDir

    run = RunDir.open(out)
    run.lock()  # free again, with no stale-lock clean-up (the .lock file still holds the dead pid)
    try:
        assert lock.read_text().split()[0] == str(os.getpid())
    finally:
        run.unlock()


# ---------------------------------------------------------------------------------------------- file modes
def test_every_file_written_has_the_umask_mode(search_run, final_run, tmp_path):
    (tmp_path / "m.pt2").write_bytes(b"old")
    for cmd in (["derive", search_run, "-o", tmp_path / "g.json"],
                ["derive", search_run, "--epoch", "1"],
                ["export", final_run, "--output", tmp_path / "m.pt2", "--force"]):
        proc = nas(*cmd)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "m.pt2").stat().st_size > 1000
    files = files_under(search_run) + files_under(final_run) + files_under(tmp_path)
    names = {p.name for p in files}
    assert {"config.yaml", "best.json", "checkpoint.pt", "metrics.jsonl", "epoch_000.json", "epoch_001.pt",
            "derived_epoch_001.json", ".lock", "result.json", "genotype.json", "g.json", "m.pt2"} <= names
    modes = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~UMASK)}, modes
