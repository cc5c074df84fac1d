"""P-DARTS: Progressive Differentiable Architecture Search (Chen, Xie, Wu and Tian, ICCV 2019).

The search runs in stages (three by default). Each stage builds a new, deeper supernet over the ops
that survived the previous stage, trains it DARTS-style (first order) with fresh α, and at its end
drops the weakest ops of every edge by softmax(α): 8 → 5 → 3 candidates, and after the last stage
3 → 1, where 'none' is always dropped first so the kept op is never 'none'. Then each node keeps its two
strongest incoming edges, and the normal cell's skip_connects are capped at ``max_skip``.

Details taken from the official code (chenxin061/pdarts ``train_search.py``/``model_search.py``):

* stage ``s`` has ``p_darts.layers + add_layers[s]`` cells and ``C + add_width[s]`` channels;
* the first ``epochs_no_arch`` (10 of 25) epochs of every stage train the weights only;
* on stride-1 edges ``skip_connect`` is followed by dropout whose rate ``r = dropout_rate[s]`` decays:
  ``p = r·(E − e − 1)/E`` while ``e < epochs_no_arch``, then ``p = r·exp(−0.2·(e − epochs_no_arch))``;
* the pruning after stages 1 and 2 ranks all surviving ops, 'none' included ('none' may survive); the
  final pruning removes 'none' whenever it is present and then the weakest others;
* the final edge strength is the kept op's weight in the last stage's softmax (with 'none' zeroed);
  ties between edges keep the higher input index (the code's ascending stable sort, last two taken);
* the skip cap (normal cell only): the kept skip_connect with the lowest weight gets weight 0, every
  edge re-picks its best op from its last-stage candidates, every node re-picks its two strongest edges,
  repeat until at most ``max_skip`` skips remain.

``cfg.epochs`` is the whole run (the paper: 3 × 25 = 75); it is split evenly over the stages (earlier
stages get the remainder). With ``scale_schedules`` the no-architecture epochs and the dropout decay scale
with the stage length (10 of 25 epochs, exponent 0.2 per 1/25 of a stage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from nasbench import registry
from nasbench.algorithms.base import Decision, Strategy
from nasbench.errors import ConfigError, RunDirError
from nasbench.registry import register_algorithm
from nasbench.spaces.base import SupernetSpec, Topology

PAPER_STAGE_EPOCHS = 25


class SkipDropout(nn.Dropout):
    """The dropout placed after a stride-1 skip_connect; its rate is set per epoch by the strategy."""


def lowest_k(values: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` smallest values, picked one by one; ties pick the first (``np.argmin``)."""
    left = list(range(len(values)))
    out = []
    for _ in range(k):
        j = min(left, key=lambda i: (values[i], i))
        out.append(j)
        left.remove(j)
    return out


def final_drop(values: Sequence[float], ops: Sequence[str], k: int) -> list[int]:
    """The final-stage drop: 'none' first if present (it counts toward ``k``), then the weakest others."""
    drop = [ops.index("none")] if "none" in ops else []
    rest = [i for i in range(len(ops)) if i not in drop]
    drop += [rest[j] for j in lowest_k([values[i] for i in rest], k - len(drop))]
    return drop


def keep_strongest_edges(strength: Sequence[float], topology: Topology) -> list[int]:
    """Edges kept per node: the ``topology.keep`` largest strengths (ascending stable sort, last ones taken,
    as in the code)."""
    kept: list[int] = []
    for i in range(topology.nodes):
        edges = list(topology.node_edges(i))
        n_keep = len(edges) if topology.keep is None else topology.keep
        order = sorted(edges, key=lambda e: strength[e])
        kept += sorted(order[len(order) - n_keep:])
    return kept


def final_cell(probs: torch.Tensor, edge_ops: Sequence[Sequence[str]], topology: Topology,
               max_skip: Optional[int] = None, edge_scale: Optional[torch.Tensor] = None
               ) -> tuple[list[tuple[str, int]], list[dict[str, Any]]]:
    """The last stage's discretisation of one cell; returns the genotype cell and the skip-cap log.

    ``probs`` [edges, ops] is softmax(α) of the last stage over ``edge_ops``. 'none' gets weight 0, every
    edge keeps its best other op, every node its two strongest edges; with ``max_skip`` the weakest kept
    skip_connect is zeroed and everything re-picked until at most ``max_skip`` remain. ``edge_scale`` [edges]
    (normalised input weights: ENAS micro) multiplies each edge's strength when nodes rank their edges.
    """
    P = probs.detach().double().cpu().clone()
    scale = None if edge_scale is None else edge_scale.detach().double().cpu().tolist()
    n_edges = len(edge_ops)
    for e, ops in enumerate(edge_ops):
        if "none" in ops:
            P[e, ops.index("none")] = 0.0
    log: list[dict[str, Any]] = []

    def pick() -> tuple[list[int], list[int]]:
        keep_op = []
        for e, ops in enumerate(edge_ops):
            drop = final_drop(P[e].tolist(), ops, len(ops) - 1)
            keep_op.append(next(k for k in range(len(ops)) if k not in drop))
        strength = [float(P[e].max()) * (1.0 if scale is None else scale[e]) for e in range(n_edges)]
        return keep_op, keep_strongest_edges(strength, topology)

    keep_op, kept = pick()
    if max_skip is not None:
        while True:
            skips = [e for e in kept if edge_ops[e][keep_op[e]] == "skip_connect"]
            if len(skips) <= max_skip:
                break
            weakest = min(skips, key=lambda e: (float(P[e, keep_op[e]]), e))
            log.append({"edge": weakest, "weight": float(P[weakest, keep_op[weakest]]), "skips": len(skips)})
            P[weakest, keep_op[weakest]] = 0.0
            keep_op, kept = pick()
    gene = [(edge_ops[e][keep_op[e]], topology.edges[e][1]) for e in range(n_edges) if e in kept]
    return gene, log


@register_algorithm("p-darts")
class PDarts(Strategy):
    name = "p-darts"
    paper = ("Chen, Xie, Wu, Tian. Progressive Differentiable Architecture Search: Bridging the Depth Gap "
             "between Search and Evaluation. ICCV 2019.")
    summary = "3 stages with deeper supernets (5/11/17 cells); prunes ops 8→5→3→1; skip dropout and cap"

    @dataclass
    class Config:
        layers: int = 5  # cells of the first stage
        add_layers: list[int] = field(default_factory=lambda: [0, 6, 12])  # cells added per stage
        add_width: list[int] = field(default_factory=lambda: [0, 0, 0])  # channels added per stage
        num_to_keep: list[int] = field(default_factory=lambda: [5, 3, 1])  # candidate ops left after each stage
        dropout_rate: list[float] = field(default_factory=lambda: [0.1, 0.4, 0.7])  # skip dropout per stage
        epochs_no_arch: int = 10  # weight-only epochs at the start of every stage (of 25; scaled)
        dropout_decay: float = 0.2  # exponent of the skip-dropout decay per epoch (of a 25-epoch stage)
        max_skip: Optional[int] = 2  # cap on skip_connects in the final normal cell (null: no cap)

    paper_defaults = {
        "epochs": 75,
        "batch_size": 96,
        "optim.lr_min": 0.0,
        "arch_optim.lr": 6e-4,
        "arch_optim.grad_clip": 5.0,
    }
    quick_defaults = {"epochs": 9, "p_darts.add_layers": [0, 2, 4]}
    depth_key = "p_darts.layers"  # --layers N: N cells in the first stage, N + add_layers[s] in stage s
    paper_epochs = 75

    def __init__(self, cfg: DictConfig, space: Any = None):
        super().__init__(cfg, space)
        self.ops: dict[str, list[tuple[str, ...]]] = {t: list(ops) for t, ops in self.space.all_ops().items()}
        self.pending: Optional[dict[str, list[tuple[str, ...]]]] = None
        self.final: Optional[dict[str, list[tuple[str, int]]]] = None
        self.skip_log: list[dict[str, Any]] = []
        self.drop_p = 0.0

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        s = cfg.p_darts
        n = len(s.num_to_keep)
        if n < 1:
            raise ConfigError("p_darts.num_to_keep needs at least one stage")
        for key in ("add_layers", "add_width", "dropout_rate"):
            if len(s[key]) != n:
                raise ConfigError(f"p_darts.{key} needs one value per stage ({n}, as p_darts.num_to_keep), "
                                  f"got {list(s[key])}")
        prev = len(registry.get("space", cfg.model.space).primitives)
        for k in s.num_to_keep:
            if not 1 <= k < prev:
                raise ConfigError(f"p_darts.num_to_keep must decrease from {prev} ops, got {list(s.num_to_keep)}")
            prev = k
        if s.num_to_keep[-1] != 1:
            raise ConfigError("p_darts.num_to_keep must end with 1 (one op per edge after the last stage)")
        if n > 1 and s.num_to_keep[-2] < 2:
            raise ConfigError("the last P-DARTS stage needs at least 2 candidate ops per edge")
        if cfg.epochs < n:
            raise ConfigError(f"p-darts needs at least one epoch per stage ({n}), got epochs={cfg.epochs}")
        if min(s.layers + a for a in s.add_layers) < 1:
            raise ConfigError("p_darts.layers + add_layers must be at least 1 in every stage")

    @classmethod
    def stage_depths(cls, cfg: DictConfig) -> list[tuple[str, int]]:
        s = cfg.p_darts
        return [(f"p_darts.layers + p_darts.add_layers[{k}]", int(s.layers + a)) for k, a in enumerate(s.add_layers)]

    # ----------------------------------------------------------------- stages
    @property
    def num_stages(self) -> int:
        return len(self.section.num_to_keep)

    def stage_epochs(self, stage: Optional[int] = None) -> int:
        s = self.stage if stage is None else stage
        total, n = int(self.cfg.epochs), self.num_stages
        return total // n + (1 if s < total % n else 0)

    def stage_label(self) -> Optional[str]:
        return f"stage {self.stage + 1}/{self.num_stages}"

    def epochs_no_arch(self) -> int:
        E = self.stage_epochs()
        n = self.section.epochs_no_arch
        if self.cfg.scale_schedules:
            n = int(round(n * E / PAPER_STAGE_EPOCHS))
        return min(n, E)

    def supernet_spec(self, num_classes: int, in_channels: int) -> SupernetSpec:
        """The current stage's deeper (and optionally wider) supernet over the surviving ops."""
        m, s = self.cfg.model, self.section
        return self.space.supernet_spec(num_classes, in_channels, {t: tuple(o) for t, o in self.ops.items()},
                                        C=m.channels + int(s.add_width[self.stage]),
                                        layers=s.layers + int(s.add_layers[self.stage]))

    def make_edge(self, C: int, stride: int, ops: Sequence[str]) -> nn.Module:
        edge = super().make_edge(C, stride, ops)
        # the official code inserts the dropout only when the stage's rate is positive
        if stride == 1 and float(self.section.dropout_rate[self.stage]) > 0:
            for k, name in enumerate(ops):
                if name == "skip_connect":
                    edge.ops[k] = nn.Sequential(edge.ops[k], SkipDropout(self.drop_p))
        return edge

    def updates_arch(self, epoch: int) -> bool:
        return epoch >= self.epochs_no_arch()

    def skip_dropout_rate(self, epoch: int) -> float:
        rate = float(self.section.dropout_rate[self.stage])
        E, n0 = self.stage_epochs(), self.epochs_no_arch()
        if epoch < n0:
            return rate * (E - epoch - 1) / E
        decay = self.section.dropout_decay
        if self.cfg.scale_schedules:
            decay = decay * PAPER_STAGE_EPOCHS / E
        return rate * math.exp(-decay * (epoch - n0))

    def on_epoch_start(self, epoch: int, net: nn.Module) -> None:
        self.drop_p = self.skip_dropout_rate(epoch)
        for m in net.modules():
            if isinstance(m, SkipDropout):
                m.p = self.drop_p

    def epoch_metrics(self) -> dict[str, Any]:
        return {"stage_label": self.stage_label(), "skip_dropout": self.drop_p,
                "candidate_ops": len(self.ops[self.space.cell_types[0]][0])}

    def on_epoch_end(self, epoch: int, net: nn.Module) -> list[Decision]:
        if epoch != self.stage_epochs() - 1:
            return []
        return [self._prune()]

    def _prune(self) -> Decision:
        """End of a stage: drop the weakest ops (kept aside until ``next_stage``), or the final genotype."""
        last = self.stage == self.num_stages - 1
        keep = int(self.section.num_to_keep[self.stage])
        record: dict[str, Any] = {"event": "p-darts-prune", "stage": self.stage + 1, "keep": keep}
        new_ops: dict[str, list[tuple[str, ...]]] = {}
        for t in self.space.cell_types:
            P = self.op_probabilities(t).double().cpu()
            kept, dropped = [], []
            for e, ops in enumerate(self.ops[t]):
                k_drop = 0 if self.is_binary(t) else len(ops) - keep  # an on/off edge keeps both choices
                drop = final_drop(P[e].tolist(), ops, k_drop) if last else lowest_k(P[e].tolist(), k_drop)
                kept.append(tuple(o for k, o in enumerate(ops) if k not in drop))
                dropped.append([ops[k] for k in drop])
            new_ops[t] = kept
            record[t] = {"probs": P.tolist(), "ops": [list(o) for o in self.ops[t]], "kept": [list(o) for o in kept],
                         "dropped": dropped}
        first = self.space.cell_types[0]  # the normal cell in the darts space
        if not last:
            self.pending = new_ops
            msg = (f"p-darts: end of stage {self.stage + 1}/{self.num_stages}: kept {keep} ops per edge "
                   f"({first} edge 0: {', '.join(new_ops[first][0])})")
            return Decision(msg, record)
        self.final = {}
        for t in self.space.cell_types:
            cap = self.section.max_skip if t != "reduce" else None  # every searched cell but a reduction cell
            cell, log = self._final_cell(t, cap)
            self.final[t] = cell
            record[t]["genotype"] = [list(p) for p in cell]
            if t == first:
                self.skip_log = log
                record["skip_cap"] = log
        msg = (f"p-darts: final cells (skip cap removed {len(self.skip_log)} skip_connects): {first} "
               + " ".join(f"{o}<-{i}" for o, i in self.final[first]))
        return Decision(msg, record)

    def _final_cell(self, t: str, cap: Optional[int]) -> tuple[list[Any], list[dict[str, Any]]]:
        """The last stage's cell of type ``t``: :func:`final_cell`, or the space's rule for an on/off type."""
        if self.is_binary(t):
            return self.space.derive_cell(self.op_probabilities(t), self.ops[t], edge_scale=self.edge_scale(t),
                                          cell_type=t), []
        return final_cell(self.op_probabilities(t), self.ops[t], self.topology_of(t), cap, self.edge_scale(t))

    def next_stage(self) -> bool:
        if self.stage >= self.num_stages - 1 or self.pending is None:
            return False
        self.ops, self.pending = self.pending, None
        self.stage += 1
        return True

    # ----------------------------------------------------------------- result
    def derive_cell(self, cell_type: str) -> Any:
        """The final cell once the last stage ended; before, the space's rule on the current stage's ops."""
        if self.final is not None:
            return self.final[cell_type]
        return super().derive_cell(cell_type)

    def make_genotype(self, cells: Mapping[str, Any]) -> Any:
        g = super().make_genotype(cells)
        return g.with_meta(stage=self.stage + 1, final=self.final is not None)

    def capped_genotype(self, max_skip: Optional[int]) -> Any:
        """The final genotype with at most ``max_skip`` skip_connects in the capped cells (None: no cap),
        from the last stage's α: the official search logs one such genotype per cap, 8 down to 0."""
        if self.final is None:
            raise RunDirError("the P-DARTS search has not finished its last stage: no final genotype to cap yet")
        if max_skip is not None and max_skip < 0:
            raise ConfigError(f"the skip cap must be 0 or more, got {max_skip}")
        cells = {t: self._final_cell(t, max_skip if t != "reduce" else None)[0] for t in self.space.cell_types}
        return self.make_genotype(cells).with_meta(max_skip=max_skip)

    def genotype_variants(self) -> dict[str, Any]:
        """``pdarts_max_skip_N`` for every cap N from the cell's number of kept edges (8: no cap binds)
        down to 0, as the official search prints them."""
        if self.final is None:
            return {}
        n = len(self.final[self.space.cell_types[0]])
        return {f"pdarts_max_skip_{c}": self.capped_genotype(c) for c in range(n, -1, -1)}

    # ----------------------------------------------------------------- checkpoints
    def extra_state(self) -> dict[str, Any]:
        def plain(ops: Optional[dict[str, list[tuple[str, ...]]]]) -> Any:
            return None if ops is None else {t: [list(o) for o in v] for t, v in ops.items()}

        return {"ops": plain(self.ops), "pending": plain(self.pending),
                "final": None if self.final is None else {t: [list(p) for p in c] for t, c in self.final.items()},
                "skip_log": list(self.skip_log), "drop_p": self.drop_p}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        def tup(ops: Any) -> Any:
            return None if ops is None else {t: [tuple(o) for o in v] for t, v in ops.items()}

        self.ops = tup(state["ops"])
        self.pending = tup(state.get("pending"))
        final = state.get("final")
        self.final = None if final is None else {t: [(str(o), int(i)) for o, i in c] for t, c in final.items()}
        self.skip_log = list(state.get("skip_log", []))
        self.drop_p = float(state.get("drop_p", 0.0))
