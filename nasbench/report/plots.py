"""Pictures of a run, written to ``RUN_DIR/plots/`` with matplotlib (the optional ``plot`` extra).

* ``edges_normal.png``, ``edges_reduce.png``: the softmax weight of every op on every edge over the epochs,
  one small panel per edge (how the architecture settles);
* ``curves.png``: training and validation loss and accuracy per epoch;
* ``sgas_scores_<cell>.png`` (SGAS): every candidate edge's decision score at each decision, the chosen one starred.

Without matplotlib the run says once that plots are skipped and how to get them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional

from nasbench.engine.rundir import RunDir, torch_load

INSTALL_HINT = "pip install 'nasbench[plot]' (or: pip install matplotlib)"
_warned = False


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def edge_history(run: RunDir, cfg: Any) -> dict[str, dict[int, dict[str, list[tuple[int, float]]]]]:
    """cell type → edge → op → [(epoch, weight)] from the saved per-epoch architecture states."""
    from nasbench.algorithms.base import create_strategy

    hist: dict[str, dict[int, dict[str, list[tuple[int, float]]]]] = {}
    strategy = create_strategy(cfg.algo, cfg)
    for epoch in run.epochs_saved():
        strategy.load_state_dict(torch_load(run.arch_path(epoch)))
        for t in strategy.spec.cell_types:
            probs = strategy.op_probabilities(t).double().cpu()
            ops = strategy.spec.ops(t)
            for e in range(probs.shape[0]):
                for k, op in enumerate(ops[e]):
                    hist.setdefault(t, {}).setdefault(e, {}).setdefault(op, []).append((epoch, float(probs[e, k])))
    return hist


def plot_edges(run: RunDir, cfg: Any, out_dir: Path) -> list[Path]:
    plt = _pyplot()
    written = []
    hist = edge_history(run, cfg)
    from nasbench.spaces.base import create_space

    space = create_space(cfg.model.space, cfg)
    ops_order: list[str] = []
    for cells in hist.values():
        for edges in cells.values():
            for op in edges:
                if op not in ops_order:
                    ops_order.append(op)
    colors = {op: plt.get_cmap("tab10")(i % 10) for i, op in enumerate(ops_order)}
    for t, edges in hist.items():
        topology = space.topology_of(t)
        n = len(edges)
        cols = min(5, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 1.9 * rows + 0.6), sharex=True, sharey=True,
                                 squeeze=False)
        for ax in axes.flat[n:]:
            ax.axis("off")
        idx = 0
        for e in sorted(edges):
            node, src = topology.edges[e]
            ax = axes.flat[idx]
            idx += 1
            for op, pts in edges[e].items():
                xs, ys = zip(*pts)
                ax.plot(xs, ys, color=colors[op], marker="." if len(xs) < 20 else None, lw=1.2, label=op)
            ax.set_title(f"node {node + topology.n_inputs} <- {src}", fontsize=9)  # the genotypes' input index
            ax.tick_params(labelsize=7)
        handles = [plt.Line2D([], [], color=colors[op], lw=2) for op in ops_order]
        fig.legend(handles, ops_order, loc="lower center", ncol=min(len(ops_order), 4), fontsize=8, frameon=False)
        fig.suptitle(f"{cfg.algo}: {t} cell, op weights (softmax) per edge over epochs", fontsize=10)
        fig.tight_layout(rect=(0, 0.08 + 0.02 * math.ceil(len(ops_order) / 4), 1, 0.95))
        path = out_dir / f"edges_{t}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def plot_curves(run: RunDir, out_dir: Path) -> list[Path]:
    records = run.metrics()
    if not records:
        return []
    plt = _pyplot()
    ep = [r["epoch"] for r in records]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, label in (("train_loss", "train"), ("valid_loss", "valid"), ("arch_loss", "architecture step")):
        pts = [(e, r[key]) for e, r in zip(ep, records) if r.get(key) is not None]
        if pts:
            a1.plot(*zip(*pts), marker=".", label=label)
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend(fontsize=8)
    for key, label in (("train_acc", "train"), ("valid_acc", "valid")):
        a2.plot(ep, [r.get(key) for r in records], marker=".", label=label)
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy (%)")
    a2.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


def plot_sgas_scores(run: RunDir, out_dir: Path) -> list[Path]:
    decisions = [e for e in run.events() if e.get("event") == "sgas-decision" and e.get("scores")]
    if not decisions:
        return []
    plt = _pyplot()
    written = []
    for cell in dict.fromkeys(d.get("cell") for d in decisions):
        ds = [d for d in decisions if d.get("cell") == cell]
        if not ds:
            continue
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for d in ds:
            x = d.get("epoch", 0)
            cands = [s for s in d["scores"] if s.get("status") == "candidate"]
            ax.scatter([x] * len(cands), [s["score"] for s in cands], s=14, color="tab:blue", alpha=0.6)
            chosen = [s for s in cands if s["edge"] == d["edge"]]
            if chosen:
                ax.scatter([x], [chosen[0]["score"]], marker="*", s=140, color="tab:red", zorder=3)
                ax.annotate(f"e{d['edge']} {d.get('op', '')}", (x, chosen[0]["score"]), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("epoch")
        ax.set_ylabel("decision score")
        ax.set_title(f"SGAS decisions, {cell} cell (★ chosen edge, dots other candidates)", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"sgas_scores_{cell}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def write_run_plots(run: RunDir, cfg: Any, say: Optional[Callable[[str], None]] = None) -> list[Path]:
    """All plots of a run into ``RUN_DIR/plots``; without matplotlib say so once (per process) and return []."""
    global _warned
    if not matplotlib_available():
        if say is not None and not _warned:
            say(f"plots skipped: matplotlib is not installed; {INSTALL_HINT}")
        _warned = True
        return []
    out_dir = run.path / "plots"
    out_dir.mkdir(exist_ok=True)
    return [*plot_edges(run, cfg, out_dir), *plot_curves(run, out_dir), *plot_sgas_scores(run, out_dir)]
