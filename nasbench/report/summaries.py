"""Summaries of run directories, as data: what ``nas show`` and ``nas compare`` print.

:func:`run_summary` reads one search run (config, metrics, current genotype, a train-final result);
:func:`compare_runs` turns several into table rows and groups the runs that differ only in seed, with
mean ± std (as the papers' tables). Nothing here prints; the commands in :mod:`nasbench.cli.runs` do.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable, Optional

from nasbench.errors import NasError, RunDirError

FINAL_RESULT_FILES = ("final.json", "result.json", "final/result.json", "final/final.json")
"""Where a train-final result may sit in (or under) a run directory."""
FINAL_ACC_KEYS = ("test_acc", "valid_acc", "best_acc", "accuracy", "top1")


def _space_of(g: Any) -> Any:
    """The space of ``g``, imported here: the spaces import PyTorch, which `nas --help` should not wait for."""
    from nasbench.spaces.genotypes import space_of

    return space_of(g)


# ---------------------------------------------------------------------------------------------- run directories
def is_run_dir(p: Path) -> bool:
    """A search run directory (it has a config.yaml)."""
    return p.is_dir() and (p / "config.yaml").is_file()


def is_final_run(d: Path) -> bool:
    """A train-final run directory: its config says so (finished or not), or, for a result copied without its
    config, genotype.json + result.json and no best.json."""
    from nasbench.engine.runkind import FINAL, run_kind

    if run_kind(d) == FINAL:
        return True
    return (d / "genotype.json").is_file() and (d / "result.json").is_file() and not (d / "best.json").is_file()


def latest_genotype(run_dir: Path) -> tuple[Any, str]:
    """The run's best.json, else its latest per-epoch genotype; with where it came from."""
    from nasbench.spaces.genotypes import load_genotype

    best = run_dir / "best.json"
    if best.is_file():
        return load_genotype(best), "best.json"
    epochs = sorted((run_dir / "genotypes").glob("epoch_*.json"))
    if not epochs:
        raise RunDirError(f"{run_dir} has no genotype yet (no best.json, no genotypes/epoch_*.json)")
    return load_genotype(epochs[-1]), f"genotypes/{epochs[-1].name}"


def final_result(run_dir: Path) -> Optional[dict[str, Any]]:
    """A train-final result stored in (or under) ``run_dir``: its file, accuracy key and value, and contents."""
    for name in FINAL_RESULT_FILES:
        p = run_dir / name
        if p.is_file():
            try:
                d = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(d, dict):
                for k in FINAL_ACC_KEYS:
                    if isinstance(d.get(k), (int, float)):
                        return {"file": name, "key": k, "value": float(d[k]), **d}
    return None


def matching_final(search_dir: Path, finals: list[Path]) -> Optional[dict[str, Any]]:
    """The result of a given train-final run that trained ``search_dir``'s genotype (its dir or best.json)."""
    here = search_dir.resolve()
    for f in finals:
        try:
            res = json.loads((f / "result.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        src = Path(str(res.get("genotype", ""))).expanduser().resolve()
        if (src == here or src.parent == here) and isinstance(res.get("test_acc"), (int, float)):
            return {"file": str(f / "result.json"), "key": "test_acc", "value": float(res["test_acc"]), **res}
    return None


def run_summary(run_dir: Path) -> dict[str, Any]:
    """Everything compare and show need from a run directory (no checkpoint loading)."""
    from nasbench.config import load_run_config
    from nasbench.engine.rundir import RunDir

    run = RunDir.open(run_dir)
    cfg = load_run_config(run.config_path)
    metrics = run.metrics()
    valid = [m["valid_acc"] for m in metrics if m.get("valid_acc") is not None]
    try:
        g, g_src = latest_genotype(run.path)
    except NasError:
        g, g_src = None, None
    return {
        "run": run, "cfg": cfg, "metrics": metrics, "genotype": g, "genotype_source": g_src,
        "finished": run.best_path.is_file(),
        "epochs_done": len(metrics),
        "search_seconds": sum(float(m.get("seconds") or 0.0) for m in metrics),
        "final_valid": valid[-1] if valid else None,
        "best_valid": max(valid) if valid else None,
        "final": final_result(run.path),
    }


def final_run_summary(run_dir: Path) -> dict[str, Any]:
    """What ``nas show`` prints of a train-final run: its config, metrics, genotype and result (if finished)."""
    from nasbench.config import load_final_config
    from nasbench.engine.rundir import RunDir
    from nasbench.spaces.genotypes import load_genotype

    run = RunDir.open(run_dir)
    cfg = load_final_config(run.config_path)
    metrics = run.metrics()
    g_path = run.path / "genotype.json"
    result = None
    try:
        result = json.loads((run.path / "result.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        pass
    return {
        "run": run, "cfg": cfg, "metrics": metrics,
        "genotype": load_genotype(g_path) if g_path.is_file() else None,
        "finished": isinstance(result, dict), "result": result if isinstance(result, dict) else None,
        "epochs_done": len(metrics),
        "seconds": sum(float(m.get("seconds") or 0.0) for m in metrics),
    }


def _checkpoint_json(path: Path) -> Optional[dict[str, Any]]:
    if not path.is_file():
        return None
    st = path.stat()
    return {"path": str(path), "bytes": st.st_size, "modified": st.st_mtime}


def _genotype_json(g: Any) -> Optional[dict[str, Any]]:
    from nasbench.spaces.genotypes import space_of  # (here: `nas --help` should not wait for PyTorch)

    if g is None:
        return None
    return {**g.to_dict(), "text": space_of(g).format_text(g)}


def summary_json(s: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_summary` or :func:`final_run_summary` as plain JSON data (``nas show --json``)."""
    from omegaconf import OmegaConf

    from nasbench.spaces.genotypes import space_of

    run, cfg, metrics = s["run"], s["cfg"], s["metrics"]
    common = {"run": str(run.path), "epochs_done": s["epochs_done"], "epochs": int(cfg.epochs),
              "finished": s["finished"], "last_epoch": metrics[-1] if metrics else None,
              "genotype": _genotype_json(s["genotype"]), "checkpoint": _checkpoint_json(run.checkpoint_path),
              "config": OmegaConf.to_container(cfg, resolve=True)}
    if "result" in s:
        return {"kind": "train-final", **common, "seconds": s["seconds"], "result": s["result"]}
    best = None
    scored = [m for m in metrics if m.get("valid_acc") is not None]
    if scored:
        top = max(scored, key=lambda m: m["valid_acc"])
        best = {"epoch": top["epoch"], "valid_acc": top["valid_acc"]}
    collapse = None
    if s["genotype"] is not None:
        figures, warning = space_of(s["genotype"]).collapse(s["genotype"])
        collapse = {**figures, "warning": warning}
    return {"kind": "search", **common, "algo": cfg.algo, "search_seconds": s["search_seconds"],
            "best_valid": best, "genotype_source": s["genotype_source"], "collapse": collapse,
            "final": None if s["final"] is None else {k: s["final"][k] for k in ("file", "key", "value")}}


# ---------------------------------------------------------------------------------------------- comparison
def cells(cfg: Any) -> str:
    """The supernet's depth as it ran: ``8``, or one figure per stage (P-DARTS: ``5/11/17``)."""
    from nasbench import registry

    depths = [d for _, d in registry.get("algorithm", cfg.algo).stage_depths(cfg)]
    return "/".join(map(str, depths))


def settings(cfg: Any) -> str:
    """The run's size in a few tokens: ``dataset C16 L8 E50 B64 [n1000]`` (P-DARTS: ``L5/11/17``)."""
    m = cfg.model
    parts = [f"{cfg.data.dataset}", f"C{m.channels}", f"L{cells(cfg)}", f"E{cfg.epochs}", f"B{cfg.batch_size}"]
    if cfg.data.subset:
        parts.append(f"n{cfg.data.subset}")
    return " ".join(parts)


def config_without_seed(cfg: Any) -> str:
    """The config as canonical JSON, without the keys that do not change the result (seed, paths, devices...):
    runs with equal strings differ only in seed."""
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(cfg, resolve=True)
    for k in ("seed", "out", "device", "tensorboard", "plots"):
        d.pop(k, None)
    d.get("data", {}).pop("data_dir", None)
    d.get("data", {}).pop("workers", None)
    return json.dumps(d, sort_keys=True)


def stats(xs: list[float]) -> Optional[dict[str, float]]:
    """Mean, sample standard deviation (0 for one value) and count; None for no values."""
    if not xs:
        return None
    return {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def compare_runs(
    run_dirs: list[Path], params_of: Callable[[Any], Optional[int]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One row per search run in ``run_dirs``, and the groups of runs that differ only in seed (two or more).

    Train-final run directories among ``run_dirs`` are matched to the search runs they trained (their
    ``test_acc`` becomes the row's ``final_acc``). ``params_of(genotype)`` counts a genotype's weights (None
    where it cannot). Each row keeps its grouping key under ``_group``.
    """
    finals = [d for d in run_dirs if is_final_run(d)]
    searches = [d for d in run_dirs if d not in finals]
    if not searches:
        raise NasError("nas compare needs at least one search run directory (train-final runs are matched to "
                       "the search runs they trained)")
    rows = []
    for d in searches:
        s = run_summary(d)
        matched = matching_final(d, finals)
        if matched is not None:
            s["final"] = matched
        g = s["genotype"]
        params = params_of(g) if g is not None else None
        rows.append({
            "run": str(d), "algo": s["cfg"].algo, "seed": int(s["cfg"].seed), "settings": settings(s["cfg"]),
            "epochs_done": s["epochs_done"], "finished": s["finished"],
            "search_seconds": s["search_seconds"], "valid_acc": s["final_valid"],
            # the darts space's two cells; another space's genotype on one line in the first column
            "genotype_normal": None if g is None else (format_cell(g.normal) if hasattr(g, "normal")
                                                       else _space_of(g).short(g)),
            "genotype_reduce": None if g is None or not hasattr(g, "reduce") else format_cell(g.reduce),
            "params": params,
            "final_acc": None if s["final"] is None else s["final"]["value"],
            "_group": config_without_seed(s["cfg"]),
        })
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["_group"], []).append(r)
    summary = []
    for members in groups.values():
        if len(members) < 2:
            continue
        vals = [r["valid_acc"] for r in members if r["valid_acc"] is not None]
        fin = [r["final_acc"] for r in members if r["final_acc"] is not None]
        par = [r["params"] / 1e6 for r in members if r["params"] is not None]
        secs = [r["search_seconds"] for r in members]
        summary.append({"algo": members[0]["algo"], "settings": members[0]["settings"],
                        "seeds": [r["seed"] for r in members], "runs": [r["run"] for r in members],
                        "valid_acc": stats(vals), "final_acc": stats(fin), "params_m": stats(par),
                        "search_seconds": stats(secs)})
    return rows, summary


# ---------------------------------------------------------------------------------------------- formatting
def format_age(seconds: float) -> str:
    """``42 s``, ``17 min``, ``3.5 h`` or ``2.0 days``."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def format_hms(seconds: float) -> str:
    """``h:mm:ss``."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def format_cell(cell: Any) -> str:
    """A genotype cell as ``op<-input`` pairs; ``(fixed)`` for a cell the space does not search."""
    if cell is None:
        return "(fixed)"
    return " ".join(f"{op}<-{j}" for op, j in cell)


def format_stats(st: Optional[dict[str, float]], digits: int = 2) -> str:
    """:func:`stats` as ``mean ± std (n=N)``; ``–`` for None."""
    if st is None:
        return "–"
    return f"{st['mean']:.{digits}f} ± {st['std']:.{digits}f} (n={int(st['n'])})"


__all__ = [
    "FINAL_RESULT_FILES", "FINAL_ACC_KEYS", "is_run_dir", "is_final_run", "latest_genotype", "final_result",
    "matching_final", "run_summary", "final_run_summary", "summary_json", "settings",
    "config_without_seed", "stats", "compare_runs", "format_age",
    "format_hms", "format_cell", "format_stats",
]
