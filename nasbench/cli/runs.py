"""``nas plot``, ``nas show``, ``nas compare``: looking at genotypes and run directories.

The commands print; what they print about runs is computed by :mod:`nasbench.report.summaries`.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from nasbench.cli.app import cells_table, app, err, out, user_errors
from nasbench.errors import NasError
from nasbench.report import summaries as S


# ---------------------------------------------------------------------------------------------- helpers
def genotype_params(g: Any) -> Optional[int]:
    """Weights of ``g``'s evaluation network at its paper's size (DARTS space: CIFAR-10, C=36, 20 cells),
    auxiliary head excluded, as the papers count them. None where the genotype cannot be built."""
    from nasbench.spaces.genotypes import space_of

    try:
        return space_of(g).reference_params(g)
    except Exception:
        return None


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
    from nasbench.spaces.genotypes import load_genotype, space_of

    if fmt not in graph.FORMATS:
        raise NasError(f"unknown plot format {fmt!r}; choose one of: {', '.join(graph.FORMATS)}")
    from nasbench.engine.runkind import FINAL, run_kind

    p = Path(source).expanduser()
    is_run = S.is_run_dir(p)
    if is_run and run_kind(p) == FINAL:  # a train-final run: the cell it trains (no search plots)
        g = load_genotype(str(p / "genotype.json"))
        target, stem, is_run = out_dir or p / "plots", "", False
    elif is_run:
        g, _ = S.latest_genotype(p)
        target, stem = out_dir or p / "plots", ""
    else:
        g = load_genotype(source)
        target = out_dir or Path(".")
        stem = (p.stem if p.exists() else source) + "_"
    space_of(g).validate(g)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NasError(f"cannot write to output folder {target}: {exc.strerror or exc}") from exc
    written = graph.write_genotype_plots(g, target, "dot", stem)
    if fmt != "dot":
        if not graph.dot_available():
            for w in written:
                out.print(str(w), highlight=False, soft_wrap=True)
        for cell, text in space_of(g).dot(g).items():
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
def show(
    run_dir: Annotated[Path, typer.Argument(help="A search or train-final run directory (finished or still "
                                                 "running).")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """A summary of a run: config highlights, progress, accuracy, current genotype, checkpoint age."""
    from nasbench.engine.runkind import FINAL, run_kind

    final_run = run_kind(run_dir) == FINAL
    s = S.final_run_summary(run_dir) if final_run else S.run_summary(run_dir)
    if as_json:
        print(json.dumps(S.summary_json(s)))
        return
    if final_run:
        _show_final(s)
        return
    cfg, run, metrics = s["cfg"], s["run"], s["metrics"]
    t = Table(title=f"run {run.path}", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    m = cfg.model
    t.add_row("algorithm", f"{cfg.algo} (preset {cfg.preset})")
    shares = cfg.data.get("balanced_split")
    split = (f", class-balanced {shares[0]:g} + {shares[1]:g} of each class" if shares is not None
             else f", train_portion {cfg.data.train_portion}"
             + (f", {cfg.data.split} split" if cfg.data.get("split", "index") != "index" else ""))
    t.add_row("data", f"{cfg.data.dataset}" + (f", subset {cfg.data.subset}" if cfg.data.subset else "") + split)
    depth = S.cells(cfg)
    stem = f", {m.stem} stem" if m.get("stem", "auto") not in ("auto", "cifar") else ""
    t.add_row("supernet", f"C={m.channels}, {depth} cells{' (per stage)' if '/' in depth else ''}, {m.steps} nodes"
                          + stem)
    t.add_row("schedule", f"{cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.optim.lr}, "
                          f"arch lr {cfg.arch_optim.lr}, seed {cfg.seed}")
    section = cfg.get(cfg.algo.replace("-", "_"))
    if section:
        t.add_row(cfg.algo.replace("-", "_"), ", ".join(f"{k}={v}" for k, v in section.items()))
    status = "finished" if s["finished"] else "running or stopped"
    t.add_row("progress", f"{s['epochs_done']}/{cfg.epochs} epochs ({status}), "
                          f"search time {S.format_hms(s['search_seconds'])}")
    if metrics:
        last = metrics[-1]
        t.add_row("last epoch", f"epoch {last.get('epoch')}: train {last.get('train_acc', float('nan')):.1f}%  valid "
                                f"{last.get('valid_acc', float('nan')):.1f}%  (loss {last.get('valid_loss', float('nan')):.3f})"
                                + (f"  stage {last['stage'] + 1}" if any(r.get("stage") for r in metrics) else ""))
        best_i = max(range(len(metrics)), key=lambda i: metrics[i].get("valid_acc") or -1)
        t.add_row("best valid", f"{metrics[best_i].get('valid_acc', 0):.2f}% at epoch {metrics[best_i]['epoch']}")
    g = s.get("genotype")
    if metrics and g is not None:  # the space's own collapse figures of the current cell
        from nasbench.spaces.genotypes import space_of

        figures, warning = space_of(g).collapse(g)
        if figures:
            text = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in figures.items())
            t.add_row("parameter-free ops", text + (f"  [yellow]({escape(warning)})[/]" if warning else ""))
    _checkpoint_row(t, run.checkpoint_path)
    if s["final"]:
        t.add_row("train-final", f"{s['final']['value']:.2f}% ({s['final']['key']}, {s['final']['file']})")
    out.print(t)
    if s["genotype"] is not None:
        out.print(cells_table(s["genotype"], f"current genotype ({s['genotype_source']})"))


def _checkpoint_row(t: Table, ck: Path) -> None:
    if ck.is_file():
        t.add_row("checkpoint", f"{ck.stat().st_size / 1e6:.1f} MB, "
                                f"written {S.format_age(time.time() - ck.stat().st_mtime)} ago "
                                f"({_dt.datetime.fromtimestamp(ck.stat().st_mtime).isoformat(timespec='seconds')})")
    else:
        t.add_row("checkpoint", "none yet")


def _show_final(s: dict[str, Any]) -> None:
    """``nas show`` of a train-final run: its genotype, recipe, progress and accuracy."""
    cfg, run, metrics, result = s["cfg"], s["run"], s["metrics"], s["result"]
    m, o = cfg.model, cfg.optim
    t = Table(title=f"train-final run {run.path}", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    t.add_row("genotype", f"{cfg.genotype} (trained: genotype.json)")
    t.add_row("data", f"{cfg.data.dataset}" + (f", subset {cfg.data.subset}" if cfg.data.subset else "")
              + (f", val_split {cfg.data.val_split}" if cfg.data.val_split else ""))
    t.add_row("network", f"C={m.channels}, {m.layers} cells, auxiliary "
                         f"{f'weight {m.auxiliary_weight}' if m.auxiliary else 'off'}, drop-path {m.drop_path_prob}")
    warm = f", warm-up {o.warmup_epochs} ({o.warmup})" if o.get("warmup_epochs") else ""
    t.add_row("recipe", f"{cfg.get('recipe') or 'darts'}: {cfg.epochs} epochs, batch {cfg.batch_size}, lr {o.lr} "
                        f"({o.schedule}{warm}), weight decay {o.weight_decay}{', Nesterov' if o.nesterov else ''}, "
                        f"cutout {cfg.data.cutout}, seed {cfg.seed} (preset {cfg.preset})")
    status = "finished" if s["finished"] else "running or stopped"
    t.add_row("progress", f"{s['epochs_done']}/{cfg.epochs} epochs ({status}), time {S.format_hms(s['seconds'])}")
    if metrics:
        last = metrics[-1]
        t.add_row("last epoch", f"epoch {last.get('epoch')}: train {last.get('train_acc', float('nan')):.2f}%  "
                                f"test {last.get('test_acc', float('nan')):.2f}%"
                                + (f"  val {last['val_acc']:.2f}%" if last.get("val_acc") is not None else ""))
    if result is not None:
        t.add_row("test accuracy", f"{result.get('test_acc', float('nan')):.2f}% (result.json)")
        if isinstance(result.get("params"), int):
            t.add_row("parameters", f"{result['params']:,} (without the auxiliary head)")
        if result.get("best_epoch") is not None:
            t.add_row("best val", f"{result.get('best_val_acc', float('nan')):.2f}% at epoch {result['best_epoch']}")
    _checkpoint_row(t, run.checkpoint_path)
    out.print(t)
    if s["genotype"] is not None:
        out.print(cells_table(s["genotype"], "trained genotype (genotype.json)"))


# ---------------------------------------------------------------------------------------------- compare
@app.command()
@user_errors
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Search run directories.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Runs side by side, with mean ± std over runs that differ only in seed (as the papers' tables)."""
    rows, summary = S.compare_runs(run_dirs, params_of=genotype_params)
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
        t.add_row(Path(r["run"]).name, r["algo"], str(r["seed"]), r["settings"],
                  S.format_hms(r["search_seconds"]) + done,
                  "–" if r["valid_acc"] is None else f"{r['valid_acc']:.2f}%",
                  "–" if r["params"] is None else f"{r['params'] / 1e6:.2f}M",
                  "–" if r["final_acc"] is None else f"{r['final_acc']:.2f}%")
    out.print(t)
    darts_cells = any(r["genotype_reduce"] for r in rows)  # two cells per genotype (the darts space)
    g = Table(title="derived genotypes" + (" (op<-input; inputs 0, 1 are c_{k-2}, c_{k-1})" if darts_cells else ""),
              show_lines=True)
    g.add_column("run")
    g.add_column("normal cell" if darts_cells else "genotype")
    if darts_cells:
        g.add_column("reduction cell")
    for r in rows:
        cells = [r["genotype_normal"] or "–"] + ([r["genotype_reduce"] or "–"] if darts_cells else [])
        g.add_row(Path(r["run"]).name, *cells)
    out.print(g)
    if summary:
        t = Table(title="runs that differ only in seed: mean ± std")
        for col in ("algo", "settings", "seeds", "valid acc", "params (M)", "train-final", "search time (s)"):
            t.add_column(col)
        for sgrp in summary:
            t.add_row(sgrp["algo"], sgrp["settings"], ",".join(map(str, sgrp["seeds"])),
                      S.format_stats(sgrp["valid_acc"]), S.format_stats(sgrp["params_m"]),
                      S.format_stats(sgrp["final_acc"]), S.format_stats(sgrp["search_seconds"], 0))
        out.print(t)
