"""Starting (or continuing) a study: what is left of each run, handed to a launcher, then ``study.json``."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shlex
import time
from pathlib import Path
from typing import Any, Callable, Optional

from nasbench.study import LOG_FILE, PLOT_FILE, RESULTS_FILE, StudySpec, plan, threads_per_run, units
from nasbench.study import launch
from nasbench.study.results import collect, write_plot


def log_line(root: Path, text: str) -> None:
    """One line of ``study.log``: the time, then ``text``."""
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    with open(root / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(f"{stamp} {text}\n")


def _previous_machine(root: Path) -> Optional[dict[str, Any]]:
    try:
        machine = json.loads((root / RESULTS_FILE).read_text("utf-8")).get("machine")
    except (OSError, ValueError, AttributeError):
        return None
    return machine if isinstance(machine, dict) else None


def run_study(spec: StudySpec, root: Path, *, jobs: int = 1, threads: Optional[int] = None, launcher: str = "local",
              address: Optional[str] = None, say: Callable[[str], None] = print,
              command: Optional[str] = None) -> tuple[dict[str, Any], list[dict]]:
    """Carry out the runs of the study in ``root`` that are not finished, then write ``study.json`` and the plot.

    Returns the summary (:func:`~nasbench.study.results.collect`, with this start's command line, wall time and
    machine) and the reports of the runs that failed."""
    from nasbench.engine.distributed import cores

    t0 = time.time()
    per_run = threads_per_run(jobs, threads, cores())
    all_units = units(spec)
    todo = []
    for u in all_units:
        steps = plan(spec, u, root, per_run)
        if steps:
            todo.append(launch.Job(u.name, steps, str(root / "logs" / f"{u.name}.log"), per_run))
    how = (f"{jobs} at once" if launcher == "local" else f"as Ray tasks ({address or 'a local Ray instance'})")
    if command:
        log_line(root, f"command: {command}")
    plural = "s" if per_run > 1 else ""
    log_line(root, f"start: {len(todo)} of {len(all_units)} runs to do, {how}, {per_run} thread{plural} each")
    for u in all_units:
        if not any(j.name == u.name for j in todo):
            log_line(root, f"{u.name} finished before: skipped")
    if todo:
        say(f"{len(todo)} of {len(all_units)} runs to do ({len(all_units) - len(todo)} finished before), {how}, "
            f"{per_run} thread{'s' if per_run > 1 else ''} each; output in {root / 'logs'}")
    failed: list[dict] = []
    count = [0]

    def on_done(report: dict[str, Any]) -> None:
        count[0] += 1
        for s in report["steps"]:
            started = _dt.datetime.fromtimestamp(s["started"]).isoformat(timespec="milliseconds")
            log_line(root, f"{report['name']} {s['step']}: started {started}, exit code {s['rc']} after "
                           f"{s['seconds']:.2f} s: nas {shlex.join(s['args'])}")
        if report["ok"]:
            from nasbench.study.results import run_record

            u = next(u for u in all_units if u.name == report["name"])
            acc = run_record(u, root)["test_acc"]
            say(f"[{count[0]}/{len(todo)}] {report['name']}: test accuracy {acc:.2f}%")
        else:
            failed.append(report)
            if not report["steps"]:
                say(f"[{count[0]}/{len(todo)}] {report['name']}: not started")
                return
            last = report["steps"][-1]
            say(f"[{count[0]}/{len(todo)}] {report['name']}: `nas {last['step']}` failed (exit code {last['rc']}); "
                f"see {root / 'logs' / (report['name'] + '.log')}")

    if todo:
        if launcher == "ray":
            launch.run_ray(todo, address, on_done)
        else:
            launch.run_local(todo, jobs, on_done)
    summary = collect(spec, root)
    summary["wall_seconds"] = time.time() - t0
    summary["command"] = command
    summary["commands"] = [line.split(" command: ", 1)[1] for line in (root / LOG_FILE).read_text("utf-8").splitlines()
                           if " command: " in line]  # every start of the study, the first one made it
    summary["machine"] = {"host": platform.node(), "platform": platform.platform(), "cores": cores(),
                          "launcher": launcher, "jobs": jobs if launcher == "local" else None,
                          "threads_per_run": per_run}
    if not todo:  # a start that ran nothing keeps the machine and settings of the last start that ran runs
        before = _previous_machine(root)
        summary["machine"] = before or summary["machine"]
    summary["plot"] = None
    if any(r["test_acc"] is not None for r in summary["runs"]):
        plot = write_plot(summary, root / PLOT_FILE)
        summary["plot"] = None if plot is None else str(plot)
    from nasbench.engine.rundir import atomic_write_text

    atomic_write_text(root / RESULTS_FILE, json.dumps(summary, indent=2) + "\n")
    log_line(root, f"end: {len(todo) - len(failed)} runs done, {len(failed)} failed, "
                   f"{summary['wall_seconds']:.1f} s")
    return summary, failed


__all__ = ["run_study", "log_line"]
