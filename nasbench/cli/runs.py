"""``nas plot``, ``nas show``, ``nas compare``: looking at genotypes and run directories."""

from __future__ import annotations

import datetime as _dt
import json
import math
import statistics
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from nasbench.cli.app import cells_table, app, err, out, user_errors
from nasbench.errors import GenotypeError, NasError, RunDirError

FINAL_RESULT_FILES = ("final.json", "result.json", "final/result.json", "final/final.json")
"""Where a train-final result may sit in (or under) a run directory."""
FINAL_ACC_KEYS = ("test_acc", "valid_acc", "best_acc", "accuracy", "top1")


# ---------------------------------------------------------------------------------------------- helpers
def _is_run_dir(p: Path) -> bool:
    return p.is_dir() and (p / "config.yaml").is_file()


def latest_genotype(run_dir: Path) -> tuple[Any, str]:
    """The run's best.json, else its latest per-epoch genotype; with where it came from."""
    from nasbench.spaces.darts.genotype import load_genotype

    best = run_dir / "best.json"
    if best.is_file():
        return load_genotype(best), "best.json"
    epochs = sorted((run_dir / "genotypes").glob("epoch_*.json"))
    if not epochs:
        raise RunDirError(f"{run_dir} has no genotype yet (no best.json, no genotypes/epoch_*.json)")
    return load_genotype(epochs[-1]), f"genotypes/{epochs[-1].name}"


def genotype_params(g: Any, C: int = 36, layers: int = 20, num_classes: int = 10) -> Optional[int]:
    """Weights of the CIFAR-10 evaluation network of ``g`` (DARTS: C=36, 20 cells), auxiliary head excluded,
    as the papers count them. None where the genotype cannot be built."""
    from nasbench.spaces.darts.network import NetworkCIFAR

    try:
        net = NetworkCIFAR(C, num_classes, layers, False, g)
    except Exception:
        return None
    return sum(p.numel() for p in net.parameters())


def final_result(run_dir: Path) -> Optional[dict[str, Any]]:
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


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _fmt_op_cell(cell: Any) -> str:
    if cell is None:
        return "(fixed)"
    return " ".join(f"{op}<-{j}" for op, j in cell)


def _run_summary(run_dir: Path) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------------- plot
@app.command()
@user_errors
def plot(
    source: Annotated[str, typer.Argument(help="A genotype: built-in name, .json or Genotype(...) text file, or a "
                                               "run directory (its best.json, else its latest epoch).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="png, svg, pdf, or dot (DOT text only).")] = "png",
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default RUN_DIR/plots, or "
                                                                         "the current folder).")] = None,
    run_plots: Annotated[bool, typer.Option("--run-plots/--no-run-plots", help="For a run directory also draw "
                                            "the edge-weight, curve and SGAS plots (matplotlib).")] = True,
) -> None:
    """Draw the normal and reduction cells as graphs (DOT always; PNG/SVG/PDF with Graphviz's dot)."""
    from nasbench.report import graph
    from nasbench.spaces.darts.genotype import load_genotype, validate

    if fmt not in graph.FORMATS:
        raise NasError(f"unknown plot format {fmt!r}; choose one of: {', '.join(graph.FORMATS)}")
    p = Path(source).expanduser()
    is_run = _is_run_dir(p)
    if is_run:
        g, _ = latest_genotype(p)
        target, stem = out_dir or p / "plots", ""
    else:
        g = load_genotype(source)
        target = out_dir or Path(".")
        stem = (p.stem if p.exists() else source) + "_"
    validate(g)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NasError(f"cannot write to output folder {target}: {exc.strerror or exc}") from exc
    written = graph.write_genotype_plots(g, target, "dot", stem)
    if fmt != "dot":
        if not graph.dot_available():
            for w in written:
                out.print(str(w), highlight=False, soft_wrap=True)
        for cell, text in graph.genotype_dots(g).items():
            written.append(graph.render(text, target / f"{stem}{cell}.{fmt}", fmt))
    if is_run and run_plots:
        from nasbench.report import plots
        from nasbench.config import load_run_config
        from nasbench.engine.rundir import RunDir

        run = RunDir.open(p)
        written += plots.write_run_plots(run, load_run_config(run.config_path), say=lambda m: err.print(m))
    for w in written:
        out.print(str(w), highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------- show
@app.command()
@user_errors
def show(run_dir: Annotated[Path, typer.Argument(help="A search run directory (finished or still running).")]) -> None:
    """A summary of a run: config highlights, progress, accuracy, current genotype, checkpoint age."""
    s = _run_summary(run_dir)
    cfg, run, metrics = s["cfg"], s["run"], s["metrics"]
    t = Table(title=f"run {run.path}", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    m = cfg.model
    t.add_row("algorithm", f"{cfg.algo} (preset {cfg.preset})")
    t.add_row("data", f"{cfg.data.dataset}" + (f", subset {cfg.data.subset}" if cfg.data.subset else "")
              + f", train_portion {cfg.data.train_portion}")
    t.add_row("supernet", f"C={m.channels}, {m.layers} cells, {m.steps} nodes")
    t.add_row("schedule", f"{cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.optim.lr}, "
                          f"arch lr {cfg.arch_optim.lr}, seed {cfg.seed}")
    section = cfg.get(cfg.algo.replace("-", "_"))
    if section:
        t.add_row(cfg.algo.replace("-", "_"), ", ".join(f"{k}={v}" for k, v in section.items()))
    status = "finished" if s["finished"] else "running or stopped"
    t.add_row("progress", f"{s['epochs_done']}/{cfg.epochs} epochs ({status}), search time {_hms(s['search_seconds'])}")
    if metrics:
        last = metrics[-1]
        t.add_row("last epoch", f"train {last.get('train_acc', float('nan')):.1f}%  valid "
                                f"{last.get('valid_acc', float('nan')):.1f}%  (loss {last.get('valid_loss', float('nan')):.3f})"
                                + (f"  stage {last['stage'] + 1}" if any(r.get("stage") for r in metrics) else ""))
        best_i = max(range(len(metrics)), key=lambda i: metrics[i].get("valid_acc") or -1)
        t.add_row("best valid", f"{metrics[best_i].get('valid_acc', 0):.2f}% at epoch {metrics[best_i]['epoch']}")
        skips = last.get("normal_skip_connect")
        if skips is not None:
            warn = "  [yellow](collapse: parameter-free ops dominate)[/]" if skips > 2 else ""
            t.add_row("normal skip_connects", f"{skips}{warn}")
    ck = run.checkpoint_path
    if ck.is_file():
        t.add_row("checkpoint", f"{ck.stat().st_size / 1e6:.1f} MB, written {_age(time.time() - ck.stat().st_mtime)} ago "
                                f"({_dt.datetime.fromtimestamp(ck.stat().st_mtime).isoformat(timespec='seconds')})")
    else:
        t.add_row("checkpoint", "none yet")
    if s["final"]:
        t.add_row("train-final", f"{s['final']['value']:.2f}% ({s['final']['key']}, {s['final']['file']})")
    out.print(t)
    if s["genotype"] is not None:
        out.print(cells_table(s["genotype"], f"current genotype ({s['genotype_source']})"))


# ---------------------------------------------------------------------------------------------- compare
def _is_final_run(d: Path) -> bool:
    """A train-final run directory (genotype.json + result.json, no best.json)."""
    return (d / "genotype.json").is_file() and (d / "result.json").is_file() and not (d / "best.json").is_file()


def _matching_final(search_dir: Path, finals: list[Path]) -> Optional[dict[str, Any]]:
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


def _settings(cfg: Any) -> str:
    m = cfg.model
    parts = [f"{cfg.data.dataset}", f"C{m.channels}", f"L{m.layers}", f"E{cfg.epochs}", f"B{cfg.batch_size}"]
    if cfg.data.subset:
        parts.append(f"n{cfg.data.subset}")
    return " ".join(parts)


def _config_without_seed(cfg: Any) -> str:
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(cfg, resolve=True)
    for k in ("seed", "out", "device", "tensorboard", "plots"):
        d.pop(k, None)
    d.get("data", {}).pop("data_dir", None)
    d.get("data", {}).pop("workers", None)
    return json.dumps(d, sort_keys=True)


def _mean_std(xs: list[float]) -> str:
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


@app.command()
@user_errors
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Search run directories.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Runs side by side, with mean ± std over runs that differ only in seed (as the papers' tables)."""
    finals = [d for d in run_dirs if _is_final_run(d)]
    searches = [d for d in run_dirs if d not in finals]
    if not searches:
        raise NasError("nas compare needs at least one search run directory (train-final runs are matched to "
                       "the search runs they trained)")
    rows = []
    for d in searches:
        s = _run_summary(d)
        matched = _matching_final(d, finals)
        if matched is not None:
            s["final"] = matched
        g = s["genotype"]
        params = genotype_params(g) if g is not None else None
        rows.append({
            "run": str(d), "algo": s["cfg"].algo, "seed": int(s["cfg"].seed), "settings": _settings(s["cfg"]),
            "epochs_done": s["epochs_done"], "finished": s["finished"],
            "search_seconds": s["search_seconds"], "valid_acc": s["final_valid"],
            "genotype_normal": None if g is None else _fmt_op_cell(g.normal),
            "genotype_reduce": None if g is None else _fmt_op_cell(g.reduce),
            "params": params,
            "final_acc": None if s["final"] is None else s["final"]["value"],
            "_group": _config_without_seed(s["cfg"]),
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
                        "valid_acc": _stats(vals), "final_acc": _stats(fin), "params_m": _stats(par),
                        "search_seconds": _stats(secs)})
    if as_json:
        print(json.dumps({"runs": [{k: v for k, v in r.items() if k != "_group"} for r in rows],
                          "seed_groups": summary}))
        return
    t = Table(title="runs")
    for col, just in (("run", "left"), ("algo", "left"), ("seed", "right"), ("settings", "left"),
                      ("search time", "right"), ("valid acc", "right"), ("params", "right"),
                      ("train-final", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in rows:
        done = "" if r["finished"] else f" ({r['epochs_done']} ep, unfinished)"
        t.add_row(Path(r["run"]).name, r["algo"], str(r["seed"]), r["settings"], _hms(r["search_seconds"]) + done,
                  "–" if r["valid_acc"] is None else f"{r['valid_acc']:.2f}%",
                  "–" if r["params"] is None else f"{r['params'] / 1e6:.2f}M",
                  "–" if r["final_acc"] is None else f"{r['final_acc']:.2f}%")
    out.print(t)
    g = Table(title="derived genotypes (op<-input; inputs 0, 1 are c_{k-2}, c_{k-1})", show_lines=True)
    g.add_column("run")
    g.add_column("normal cell")
    g.add_column("reduction cell")
    for r in rows:
        g.add_row(Path(r["run"]).name, r["genotype_normal"] or "–", r["genotype_reduce"] or "–")
    out.print(g)
    if summary:
        t = Table(title="runs that differ only in seed: mean ± std")
        for col in ("algo", "settings", "seeds", "valid acc", "params (M)", "train-final", "search time (s)"):
            t.add_column(col)
        for sgrp in summary:
            t.add_row(sgrp["algo"], sgrp["settings"], ",".join(map(str, sgrp["seeds"])), _txt(sgrp["valid_acc"]),
                      _txt(sgrp["params_m"]), _txt(sgrp["final_acc"]), _txt(sgrp["search_seconds"], 0))
        out.print(t)


def _stats(xs: list[float]) -> Optional[dict[str, float]]:
    if not xs:
        return None
    return {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def _txt(st: Optional[dict[str, float]], digits: int = 2) -> str:
    if st is None:
        return "–"
    return f"{st['mean']:.{digits}f} ± {st['std']:.{digits}f} (n={int(st['n'])})"
