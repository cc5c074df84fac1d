"""The suite's fork server (``forkserver.py``, ``nas_launcher`` in conftest) stands in for ``python -m nasbench``:
the same output and exit status, the caller's environment, working directory and umask, signals forwarded,
and no process left behind when its launcher is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import NAS_EXEC, lock_pid, nas_launcher

pytestmark = pytest.mark.skipif(os.environ.get("NASBENCH_TEST_FORKSERVER") == "0", reason="fork server off")

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
LONG = ["search", "--algo", "darts", "--out", "r", "--no-progress", "device=cpu", "batch_size=8", "epochs=200",
        "model.channels=4", "model.layers=3", "data.dataset=synthetic", "data.num_train=256", "data.image_size=8",
        "plots=false"]


def test_the_launcher_prints_and_exits_as_a_new_interpreter_does(tmp_path):
    widths = []
    for args, extra in ((["search", "--algo", "nope"], {}), (["--help"], {"COLUMNS": "60"}),
                        (["--help"], {"COLUMNS": "150"}), (["derive", "missing-run"], {"NO_COLOR": "1"}),
                        (["search", "--dataset", "synthetic", "--out", "r", "epochs=0"], {"OMP_NUM_THREADS": "x"})):
        env = {**ENV, **extra}
        real = subprocess.run([*NAS_EXEC, *args], capture_output=True, text=True, env=env, cwd=tmp_path)
        forked = subprocess.run([*nas_launcher(), *args], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr)
        if args == ["--help"]:
            widths.append(max(map(len, forked.stdout.splitlines())))
    assert widths[0] <= 60 < widths[1]


def _started(p: subprocess.Popen, run: Path) -> int:
    """The pid in the run's lock once the search has taken it (the forked process, not the launcher) and written
    its config (which it does after taking the lock)."""
    deadline = time.time() + 120
    lock = run / ".lock"
    while not (lock.is_file() and lock.read_text().strip() and (run / "config.yaml").is_file()) \
            and time.time() < deadline:
        assert p.poll() is None, p.stderr.read()
        time.sleep(0.05)
    return lock_pid(run)


def _gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.time() + seconds
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.02)
    return not Path(f"/proc/{pid}").exists()


def test_the_forked_process_has_the_caller_s_directory_and_umask_and_gets_its_signals(tmp_path):
    p = subprocess.Popen([*nas_launcher(), *LONG], cwd=tmp_path, env=ENV, umask=0o077, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    child = _started(p, tmp_path / "r")  # a relative --out: the caller's working directory
    assert child != p.pid
    assert (tmp_path / "r" / "config.yaml").stat().st_mode & 0o777 == 0o600
    p.send_signal(signal.SIGINT)  # forwarded: the search's Ctrl-C, a checkpoint and exit 130
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    assert "interrupted: the checkpoint was saved" in stderr
    assert _gone(child)


@pytest.mark.parametrize("extra, forked", [({}, True), ({"PYTHONHASHSEED": "7"}, False)])
def test_killing_the_launcher_kills_its_process(tmp_path, extra, forked):
    """And a variable that only a new interpreter reads (the hash seed) makes the launcher that interpreter."""
    p = subprocess.Popen([*nas_launcher(), *LONG], cwd=tmp_path, env={**ENV, **extra}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    child = _started(p, tmp_path / "r")
    assert (child != p.pid) == forked
    p.kill()
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    assert _gone(child)


def test_a_process_killed_by_sigkill_ends_its_launcher_by_sigkill(tmp_path):
    """As `kill -9` of a `python -m nasbench` process: the launcher's status is the process's (what the resume
    tests kill is the process whose pid the run's lock names)."""
    p = subprocess.Popen([*nas_launcher(), *LONG], cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    child = _started(p, tmp_path / "r")
    assert child != p.pid
    os.kill(child, signal.SIGKILL)
    _, stderr = p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL, stderr
    assert "Traceback" not in stderr
