"""A study's results, read from its run directories: ``study.json`` and the plot.

Every number comes from the files the runs wrote: a train-final run's ``result.json`` (test accuracy of the last
epoch, parameters without the auxiliary head, MACs, seconds) and a search run's ``metrics.jsonl`` (search time:
the sum of its epochs' seconds, as ``nas compare`` counts it).

The rank of a searched cell among the random cells is 1 + the number of random cells with a strictly higher
test accuracy: 1 is the best, ``random + 1`` the worst; a tie counts for the searched cell. Each cell's share of
parameter-free ops (the space's ``parameter_free_share``) and the rank correlation of test accuracy with
parameters over all cells say whether a search lost to chance by choosing weightless ops or small cells.

Whether an algorithm's cells beat chance is tested by permutation: pool its k searched cells with the random
ones; p is the share of the ways to pick k cells of the pool whose mean accuracy is at least the searched cells'
mean (one-sided; exact by enumeration up to ``EXACT_PICKS`` ways, else ``DRAWS`` seeded random picks). Under
"searching is drawing at random" every pick is equally likely, so p ≤ 0.05 says the search beat chance. With
k searched and n random cells p cannot go below 1 / C(k + n, k): 1/9 for one seed against 8 random cells.
"""

from __future__ import annotations

import itertools
import json
import math
import random as _random
from pathlib import Path
from typing import Any, Optional

from nasbench.report.summaries import stats
from nasbench.study import FINAL_RESULT, StudySpec, Unit, units


def _read_json(p: Path) -> Optional[dict[str, Any]]:
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def search_seconds(search_dir: Path) -> Optional[float]:
    """The search's time: its epochs' seconds summed (None without a metrics file)."""
    from nasbench.engine.rundir import read_jsonl

    p = search_dir / "metrics.jsonl"
    if not p.is_file():
        return None
    return sum(float(m.get("seconds") or 0.0) for m in read_jsonl(p))


def run_record(unit: Unit, root: Path) -> dict[str, Any]:
    """One run of the study as its directories hold it (``test_acc`` None while it has no result)."""
    final_dir = unit.final_dir(root)
    result = _read_json(final_dir / FINAL_RESULT) or {}
    record: dict[str, Any] = {
        "name": unit.name, "algo": unit.algo or "random", "seed": unit.seed,
        "genotype": f"random:{unit.seed}" if unit.algo is None else None,
        "final_dir": str(final_dir),
        "test_acc": result.get("test_acc"), "params": result.get("params"), "macs": result.get("macs"),
        "final_seconds": result.get("seconds"),
    }
    search_dir = unit.search_dir(root)
    if search_dir is not None:
        record.update(search_dir=str(search_dir), search_seconds=search_seconds(search_dir))
    cell = _read_json(final_dir / "genotype.json")
    record["cell"] = cell
    record["param_free"] = parameter_free_share(cell) if cell is not None else None
    return record


def parameter_free_share(cell: dict[str, Any]) -> Optional[float]:
    """The share of parameter-free ops among the ops a cell (its JSON object) chose (None where unknown)."""
    from nasbench.errors import NasError
    from nasbench.spaces.genotypes import genotype_from_dict, space_of

    try:
        g = genotype_from_dict(cell)
    except NasError:
        return None
    return space_of(g).parameter_free_share(g)


def spearman(xs: list[float], ys: list[float]) -> Optional[float]:
    """Spearman's rank correlation (average ranks for ties); None for fewer than 3 pairs or a constant side."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / (sxx * syy) ** 0.5


def rank_among(acc: float, others: list[float]) -> int:
    """1 + how many of ``others`` are strictly more accurate."""
    return 1 + sum(1 for o in others if o > acc)


EXACT_PICKS = 200_000
DRAWS = 100_000


def permutation_p(searched: list[float], random: list[float]) -> Optional[dict[str, Any]]:
    """One-sided permutation test of "the searched cells are more accurate than random ones" (module docstring):
    ``{"p", "ways", "exact"}``; None without a searched and a random cell."""
    if not searched or not random:
        return None
    pool, k = [*searched, *random], len(searched)
    target = math.fsum(searched) - 1e-9 * max(1.0, abs(math.fsum(searched)))  # equal sums tie, rounding aside
    ways = math.comb(len(pool), k)
    if ways <= EXACT_PICKS:
        hits = sum(math.fsum(c) >= target for c in itertools.combinations(pool, k))
        return {"p": hits / ways, "ways": ways, "exact": True}
    rng = _random.Random(0)
    hits = sum(math.fsum(rng.sample(pool, k)) >= target for _ in range(DRAWS))
    return {"p": (hits + 1) / (DRAWS + 1), "ways": ways, "exact": False}


def collect(spec: StudySpec, root: Path) -> dict[str, Any]:
    """``study.json``'s content: the settings, every run, per algorithm and for the random cells."""
    records = [run_record(u, root) for u in units(spec)]
    rand = [r for r in records if r["algo"] == "random" and r["test_acc"] is not None]
    rand_acc = [float(r["test_acc"]) for r in rand]
    for r in records:
        if r["algo"] != "random" and r["test_acc"] is not None and rand_acc:
            r["rank"] = rank_among(float(r["test_acc"]), rand_acc)
    algorithms = {}
    for a in spec.algos:
        rs = [r for r in records if r["algo"] == a and r["test_acc"] is not None]
        algorithms[a] = {
            "runs": len(rs),
            "test_acc": stats([float(r["test_acc"]) for r in rs]),
            "params": stats([float(r["params"]) for r in rs if r["params"] is not None]),
            "macs": stats([float(r["macs"]) for r in rs if r["macs"] is not None]),
            "search_seconds": stats([float(r["search_seconds"]) for r in rs if r.get("search_seconds") is not None]),
            "ranks": [r["rank"] for r in rs if "rank" in r],
            "param_free": stats([float(r["param_free"]) for r in rs if r.get("param_free") is not None]),
            "p_vs_random": permutation_p([float(r["test_acc"]) for r in rs], rand_acc),
            "beats_random_mean": (None if not rs or not rand_acc else
                                  sum(float(r["test_acc"]) > sum(rand_acc) / len(rand_acc) for r in rs)),
        }
    random_summary = {
        "runs": len(rand),
        "test_acc": stats(rand_acc),
        "best": max(rand_acc) if rand_acc else None,
        "worst": min(rand_acc) if rand_acc else None,
        "params": stats([float(r["params"]) for r in rand if r["params"] is not None]),
        "macs": stats([float(r["macs"]) for r in rand if r["macs"] is not None]),
        "param_free": stats([float(r["param_free"]) for r in rand if r.get("param_free") is not None]),
    }
    sized = [r for r in records if r["test_acc"] is not None and r["params"] is not None]
    run_seconds = sum(float(r.get("final_seconds") or 0.0) + float(r.get("search_seconds") or 0.0) for r in records)
    return {"study": spec.to_dict(), "folder": str(root), "runs": records, "algorithms": algorithms,
            "random": random_summary, "run_seconds": run_seconds,
            "acc_params_spearman": spearman([float(r["params"]) for r in sized], [float(r["test_acc"]) for r in sized]),
            "finished": all(r["test_acc"] is not None for r in records)}


def write_plot(summary: dict[str, Any], path: Path) -> Optional[Path]:
    """Test accuracy against parameters: the random cells as a grey cloud (their mean dashed), each algorithm's
    cells in a colour and marker of their own. None without matplotlib."""
    from nasbench.report.plots import _pyplot, matplotlib_available

    if not matplotlib_available():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    rand = [r for r in summary["runs"] if r["algo"] == "random" and r["test_acc"] is not None]
    if rand:
        ax.scatter([r["params"] for r in rand], [r["test_acc"] for r in rand], s=26, color="0.6", alpha=0.7,
                   label=f"random cells ({len(rand)})", zorder=2)
        mean = summary["random"]["test_acc"]["mean"]
        ax.axhline(mean, color="0.5", ls="--", lw=1, label=f"random mean {mean:.2f}%", zorder=1)
    markers = "o^sDvP*Xh<>"
    for k, (algo, _) in enumerate(summary["algorithms"].items()):
        rs = [r for r in summary["runs"] if r["algo"] == algo and r["test_acc"] is not None]
        if rs:
            ax.scatter([r["params"] for r in rs], [r["test_acc"] for r in rs], s=60, marker=markers[k % len(markers)],
                       color=plt.get_cmap("tab10")(k % 10), edgecolor="black", lw=0.6, label=algo, zorder=3)
    st = summary["study"]
    ax.set_xlabel("parameters (evaluation network, no auxiliary head)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"searched vs random cells: {st['space']} space, {st['dataset']}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["search_seconds", "run_record", "rank_among", "permutation_p", "collect", "write_plot"]
