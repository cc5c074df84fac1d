"""Carrying out the runs of a study: each run's ``nas`` commands in order, in processes of their own.

Two launchers hand the runs out and collect the same report of each (:func:`run_unit`'s value):

* ``local``: ``jobs`` runs at once on this machine, each a chain of ``python -m nasbench ...`` processes;
* ``ray``: every run a Ray task (``ray.init(address=...)``; a local Ray instance when no address is given),
  asking Ray for as many CPUs as the run has threads. The study folder must be on a filesystem the Ray
  workers share (the run directories are written there and read back by the study).

Each command starts as ``python -m nasbench ARGS`` with the interpreter that runs the launcher, or, where the
environment variable ``NASBENCH_NAS_COMMAND`` is set, as that command (split as a shell splits a line) with ARGS
after it (:mod:`nasbench.engine.command`).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from nasbench.engine.command import nas_command
from nasbench.errors import ConfigError

LAUNCHERS = ("local", "ray")
RAY_HINT = "pip install 'nasbench[ray]' (or: pip install ray)"


@dataclass
class Job:
    """One run handed to a launcher: its name, the ``nas`` commands left, where their output goes, its threads."""

    name: str
    steps: list[tuple[str, list[str]]]
    log_path: str
    threads: int


_running: set[subprocess.Popen] = set()
_lock = threading.Lock()
_stopping = threading.Event()


def run_unit(job: Job) -> dict[str, Any]:
    """Run ``job``'s commands one after the other (``python -m nasbench ARGS``, ``OMP_NUM_THREADS`` its thread
    count), their output appended to its log; stop at the first that fails. Returns the name, each command's
    exit code, start (epoch seconds) and duration, and whether all succeeded.

    Interrupted (KeyboardInterrupt here, or :func:`interrupt_running` from another thread), the running command
    gets a Ctrl-C of its own: it saves its checkpoint and stops, and no further command starts."""
    env = dict(os.environ, OMP_NUM_THREADS=str(job.threads))
    done: list[dict[str, Any]] = []
    Path(job.log_path).parent.mkdir(parents=True, exist_ok=True)
    for label, args in job.steps:
        if _stopping.is_set():
            break
        t0 = time.time()
        with open(job.log_path, "a", encoding="utf-8") as log:
            log.write(f"$ nas {shlex.join(args)}\n")
            log.flush()
            proc = subprocess.Popen([*nas_command(), *args], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env)
            with _lock:
                _running.add(proc)
            try:
                rc = proc.wait()
            except BaseException:
                proc.send_signal(signal.SIGINT)
                proc.wait()
                raise
            finally:
                with _lock:
                    _running.discard(proc)
            log.write(f"# exit code {rc}\n")
        done.append({"step": label, "args": args, "rc": rc, "started": t0, "seconds": time.time() - t0})
        if rc != 0:
            break
    return {"name": job.name, "steps": done, "ok": len(done) == len(job.steps) and all(s["rc"] == 0 for s in done)}


def interrupt_running() -> None:
    """Ctrl-C to every command :func:`run_unit` runs in this process; none starts after it."""
    _stopping.set()
    with _lock:
        for proc in _running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)


def check_launcher(launcher: str, address: Optional[str]) -> None:
    """An unknown launcher, an address without Ray, or Ray not installed: one line, before anything runs."""
    if launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {launcher!r}; choose one of: {', '.join(LAUNCHERS)}")
    if address is not None and launcher != "ray":
        raise ConfigError("--address is the Ray cluster of --launcher ray")
    if launcher == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(f"--launcher ray needs Ray, which is not installed; {RAY_HINT}") from None


def run_local(jobs: list[Job], parallel: int, on_done: Callable[[dict[str, Any]], None]) -> None:
    """``parallel`` runs at once on this machine; ``on_done`` gets each report as its run ends."""
    _stopping.clear()
    pool = ThreadPoolExecutor(max_workers=parallel)
    pending: set[Future] = {pool.submit(run_unit, j) for j in jobs}
    try:
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                on_done(f.result())
    except BaseException:
        interrupt_running()
        raise
    finally:  # an interrupt: the runs not yet started never start; the running ones stop at their checkpoint
        pool.shutdown(wait=True, cancel_futures=True)


def run_ray(jobs: list[Job], address: Optional[str], on_done: Callable[[dict[str, Any]], None]) -> None:
    """Every run a Ray task on the cluster at ``address`` (a local Ray instance when None)."""
    import ray

    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    refs: dict[Any, Job] = {}
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        wanted = max((j.threads for j in jobs), default=0)
        if address is None and wanted > cpus:  # (a cluster may grow; a local instance never does)
            raise ConfigError(f"each run asks Ray for {wanted} CPUs (--threads), more than the {cpus:g} of the local "
                              "Ray instance: its tasks would never start; lower --threads")
        refs = {ray.remote(num_cpus=j.threads)(run_unit).remote(j): j for j in jobs}
        while refs:
            finished, _ = ray.wait(list(refs), num_returns=1)
            for r in finished:
                refs.pop(r)
                on_done(ray.get(r))
    except BaseException:  # a KeyboardInterrupt in each running task: its command checkpoints and stops
        for r in refs:
            ray.cancel(r)
        ray.wait(list(refs), num_returns=len(refs), timeout=120)
        raise
    finally:
        ray.shutdown()


__all__ = ["Job", "LAUNCHERS", "run_unit", "check_launcher", "run_local", "run_ray"]
