"""``nas study``: does the search find better cells than chance? The study itself is :mod:`nasbench.study`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from nasbench.cli.app import DataDir, Overrides, app, err, known_name, out, user_errors
from nasbench.errors import ConfigError


def _algos(given: Optional[list[str]], extra: list[str]) -> Optional[list[str]]:
    """``--algos a b c`` (Click gives the first to the option and the rest as arguments; no algorithm name holds
    an ``=``, every key=value does), ``--algos a,b,c`` or ``--algos a --algos b``."""
    bare = [x for x in extra if "=" not in x]
    if bare and not given:
        raise ConfigError(f"{bare[0]!r} is no key=value argument (algorithms follow --algos)")
    if given is None:
        return None
    return [name for item in [*given, *bare] for name in item.split(",") if name]


def _num(x: Optional[dict[str, float]], digits: int = 0, sep: bool = True) -> str:
    """Mean (± std for more than one value) of :func:`~nasbench.report.summaries.stats`."""
    if x is None:
        return "–"
    fmt = f"{{:{',' if sep else ''}.{digits}f}}"
    return fmt.format(x["mean"]) + (f" ± {fmt.format(x['std'])}" if x["n"] > 1 else "")


def study_table(summary: dict[str, Any]) -> Table:
    """One row per algorithm (over its seeds) and one for the random cells: test accuracy mean ± std, best and
    worst; mean parameters, MACs and search time; each searched cell's rank among the random cells."""
    from nasbench.report.summaries import format_hms

    st = summary["study"]
    n_random = summary["random"]["runs"]
    ranks = (f"; rank among random: 1 + the random cells more accurate, per search seed (1 = best, {n_random + 1} = "
             "worst); p: one-sided permutation test of the searched cells' mean against as many cells picked from "
             "the searched and random ones (≤ 0.05: better than chance)" if n_random else "")
    t = Table(title=f"searched vs random cells: {st['space']} space, {st['dataset']}, preset {st['preset']}",
              caption=f"test accuracy of the last epoch (mean ± std over the runs); params (no auxiliary head), MACs, "
                      f"the share of parameter-free ops among a cell's ops and search time: means{ranks}; "
                      f"{_spearman(summary)}{summary['folder']}")
    for name in ("cells", "runs", "test acc %", "best", "worst", "params", "MACs", "param-free", "search",
                 "rank among random", "p"):
        t.add_column(name, justify="left" if name in ("cells", "rank among random") else "right",
                     no_wrap=name == "test acc %")
    rows = [(algo, a, a["test_acc"]) for algo, a in summary["algorithms"].items()]
    if n_random:
        rows.append(("random", summary["random"], summary["random"]["test_acc"]))
    for name, a, acc in rows:
        accs = [r["test_acc"] for r in summary["runs"] if r["algo"] == name and r["test_acc"] is not None]
        search = a.get("search_seconds")
        ranks = ", ".join(str(r) for r in a.get("ranks", []))
        t.add_row(name, str(a["runs"]), _num(acc, 2, sep=False), f"{max(accs):.2f}" if accs else "–",
                  f"{min(accs):.2f}" if accs else "–", _mean(a["params"]), _mean(a["macs"]),
                  "–" if not a.get("param_free") else f"{100 * a['param_free']['mean']:.0f}%",
                  "–" if search is None else format_hms(search["mean"]),
                  f"{ranks} of {n_random + 1}" if ranks else "–", _p(a.get("p_vs_random")),
                  style="dim" if name == "random" else None)
    return t


def _spearman(summary: dict[str, Any]) -> str:
    rho = summary.get("acc_params_spearman")
    return "" if rho is None else f"test accuracy against parameters over all cells: Spearman ρ = {rho:+.2f}. "


def _p(test: Optional[dict[str, Any]]) -> str:
    return "–" if test is None else f"{test['p']:.3f}" + ("" if test["exact"] else "~")


def _mean(x: Optional[dict[str, float]]) -> str:
    return "–" if x is None else f"{x['mean']:,.0f}"


@app.command()
@user_errors
def study(
    overrides: Overrides = None,
    algos: Annotated[Optional[list[str]], typer.Option("--algos", "-a", help="Algorithms to search with: "
                                                       "--algos darts gdas (default: all of them).",
                                                       show_default=False)] = None,
    space: Annotated[Optional[str], typer.Option("--space", "-s", help="Search space of every cell (default darts).",
                                                 callback=known_name("space"))] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Dataset of the searches and the "
                                                   "trainings (default cifar10).",
                                                   callback=known_name("dataset"))] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", help="Search seeds per algorithm: 0..N-1 "
                                                 "(default 3).")] = None,
    random: Annotated[Optional[int], typer.Option("--random", help="Random cells of the space, random:0..N-1, "
                                                  "trained with the same recipe (default 8).")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="paper (default) or quick, for the searches and "
                                                  "the trainings.")] = None,
    data_dir: DataDir = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="The study folder (default "
                                                    "runs/study-<space>-<dataset>-<time>).")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the study in this folder (finished "
                                                   "runs are not redone).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Runs at once on this machine, each its own "
                                      "processes.")] = 1,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads of each run (default: the cores "
                                                   "shared over --jobs).")] = None,
    launcher: Annotated[str, typer.Option("--launcher", help="local, or ray: each run a Ray task (needs the ray "
                                          "extra).")] = "local",
    address: Annotated[Optional[str], typer.Option("--address", help="The Ray cluster (ray.init(address=...); "
                                                   "default: a local Ray instance).")] = None,
) -> None:
    """Searched against random cells: for each algorithm and seed search → derive → train-final, and
    --random random cells trained the same way; one table, STUDY/study.json and STUDY/study.png.

    key=value arguments go to the searches and the trainings; search.KEY=V or final.KEY=V to one of them.
    """
    from nasbench import study as S
    from nasbench.engine import command
    from nasbench.study import launch
    from nasbench.study.runner import run_study

    extra = list(overrides or [])
    algo_list = _algos(algos, extra)
    extra = [x for x in extra if "=" in x]
    S.check_runs(jobs, threads)
    launch.check_launcher(launcher, address)
    command.check_command()
    given = {"algos": algo_list, "space": space, "dataset": dataset, "seeds": seeds, "random": random,
             "preset": preset, "data_dir": S.absolute(data_dir), "overrides": extra or None}
    if resume is not None:
        if out_dir is not None and Path(out_dir).resolve() != Path(resume).resolve():
            raise ConfigError("--resume DIR continues a study in DIR; leave --out out")
        root = Path(resume).resolve()
        spec = S.resumed_spec(root, given)
    else:
        spec = S.StudySpec(**{k: v for k, v in given.items() if v is not None} | {"algos": algo_list or _all_algos()})
        S.check_spec(spec)
        root = Path(out_dir or S.default_folder(spec)).resolve()
        S.check_new_folder(root)
        S.make_folder(root, spec)
    S.lock_folder(root)  # one study process per folder (held until this process ends)
    try:
        summary, failed = run_study(spec, root, jobs=jobs, threads=threads, launcher=launcher, address=address,
                                    say=lambda m: err.print(m, highlight=False, soft_wrap=True),
                                    command=shlex.join(["nas", *sys.argv[1:]]))
    except KeyboardInterrupt:
        err.print(f"interrupted: the running runs saved their checkpoints; continue with `nas study --resume {root}`",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    wide = out if out.is_terminal else Console(width=max(out.width, 150))  # into a file: one line a row
    wide.print(study_table(summary))
    from nasbench.report.summaries import format_hms

    n = len(summary["runs"])
    err.print(f"{n} run{'s' if n > 1 else ''}: {format_hms(summary['run_seconds'])} of searches and trainings "
              f"(their own times summed); this start took {format_hms(summary['wall_seconds'])}",
              highlight=False, soft_wrap=True)
    if summary.get("plot"):
        err.print(f"plot: {summary['plot']}", highlight=False, soft_wrap=True)
    out.print(str(root / S.RESULTS_FILE), highlight=False, soft_wrap=True)
    if failed:
        err.print(f"[bold red]error:[/] {len(failed)} run{'s' if len(failed) > 1 else ''} failed "
                  f"({', '.join(f['name'] for f in failed)}); their logs are in {root / 'logs'}; continue with "
                  f"`nas study --resume {root}`", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _all_algos() -> list[str]:
    from nasbench import registry

    return registry.known("algorithm")
