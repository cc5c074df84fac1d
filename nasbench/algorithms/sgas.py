"""SGAS: Sequential Greedy Architecture Search (Li, Qian, Delgadillo, Müller, Thabet and Ghanem, CVPR 2020).

DARTS (first order) on one supernet, but edges are decided one at a time. At the end of epoch ``e``
(from 0) with ``e >= warmup_epochs`` and ``(e − warmup_epochs) % decision_freq == 0``, one edge per cell
type is decided greedily. With p = softmax(α) of each edge over all ops:

* importance = Σ of the non-'none' p (= 1 − p_none);
* q = the non-'none' p renormalised, certainty = 1 − H(q) / log(#non-'none' ops);
* Criterion 1: score = norm(importance) · norm(certainty);
* Criterion 2 (``criterion=2``) also multiplies by norm(mean over the last ``history_size`` epochs'
  q of Σ_k min(q_past, q)) — the history is recorded at every epoch end, before the decision;

``norm`` is min-max over all edges of the cell type, decided and pruned ones included (an all-equal vector
normalises to zeros), as the official code (lightaime/sgas ``cnn/train_search.py``) does; only undecided
edges compete. The winner gets its strongest non-'none' op and its α row is frozen; a node with two
decided edges has its other edges pruned (frozen, computing nothing). Decided edges compute only their
op, so steps get cheaper, and the batch size grows after every decision epoch: by ``batch_increase``, or
(the default, ``None``) by the official 8 images per 64 of batch, in proportion to the batch the run starts
with (``round(8 · batch_size / 64)``, at least 1: 8 for the paper's 64, 1 for a batch of 8). A grown batch
stops at what the data holds (the smaller half of the search split), so a run sized down still finishes.

Schedule: the paper's 50 epochs are warm-up 9 + decision_freq 5 × (8 − 1) + post_train 5 + 1, so the
last of the 8 decisions is at epoch 44. With ``scale_schedules`` (default) warm-up, decision frequency and
post-training scale by ``epochs / 50`` (decision frequency at least 1) and are then shrunk until all 8
decisions fit into ``epochs``: post-training first, then the frequency, then the warm-up. ``--preset
quick`` (10 epochs) thus gets warm-up 2 and a decision every epoch from epoch 2 to 9. Without scaling
the schedule is taken as given and must fit.

In a space without a zero op whose nodes choose their inputs (ENAS micro: a β per edge, normalised over
each node's incoming edges, as every strategy keeps there) SGAS's criteria carry over with the input weight
in place of the mass off 'none': importance = the edge's normalised β, q = p over all ops (certainty over
all of them), the winner gets its strongest op; a decided or pruned edge's β freezes with its α row, and
each edge's output is scaled by its normalised β as in DARTS on that space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from omegaconf import DictConfig

from torch import nn

from nasbench import registry
from nasbench.algorithms.base import Decision, Strategy
from nasbench.errors import ConfigError
from nasbench.registry import register_algorithm
from nasbench.spaces.base import CellWeights

UNDECIDED = -1
PRUNED = -2


def minmax(v: torch.Tensor) -> torch.Tensor:
    """(v − min) / (max − min); zeros when all values are equal (the official ``utils.normalize``)."""
    lo, hi = v.min(), v.max()
    if hi - lo > 0:
        return (v - lo) / (hi - lo)
    return torch.zeros_like(v)


def edge_scores(alpha: torch.Tensor, none_idx: Optional[int], history: Optional[list[torch.Tensor]] = None,
                importance: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """SGAS's per-edge quantities from α [edges, ops]; ``history`` (list of past q) turns on Criterion 2.
    ``importance`` [edges] replaces Σ of the non-'none' p (a space without a zero op: the input weights)."""
    p = torch.softmax(alpha.detach().double().cpu(), dim=-1)
    others = [k for k in range(p.shape[1]) if k != none_idx]
    certainty_only = none_idx is None and importance is None  # no zero op, no input weights: all equally important
    if certainty_only:
        importance = torch.ones(p.shape[0], dtype=torch.float64)
    elif importance is None:
        importance = p[:, others].sum(dim=-1)
    else:
        importance = importance.detach().double().cpu()
    q = p[:, others] / p[:, others].sum(dim=-1, keepdim=True)
    entropy = -(q * torch.log(q.clamp_min(1e-300))).sum(dim=-1) / math.log(len(others))
    score = minmax(1 - entropy) if certainty_only else minmax(importance) * minmax(1 - entropy)
    out = {"importance": importance, "entropy": entropy, "q": q}
    if history is not None:
        hist = torch.zeros(p.shape[0], dtype=torch.float64)
        for past in history:
            hist += torch.minimum(past.double(), q).sum(dim=-1)
        if history:
            hist /= len(history)
        out["histogram"] = hist
        score = score * minmax(hist)
    out["score"] = score
    return out


@register_algorithm("sgas")
class Sgas(Strategy):
    name = "sgas"
    paper = ("Li, Qian, Delgadillo, Müller, Thabet, Ghanem. SGAS: Sequential Greedy Architecture Search. "
             "CVPR 2020.")
    summary = "decides one edge per cell greedily every few epochs (importance × certainty [× stability])"
    unused_weights = True  # a decided edge runs its op only, a pruned one nothing

    def leaves_weights_unused(self) -> bool:
        """From the first decision on: before it every op of every edge runs."""
        return any(s != UNDECIDED for sel in self.selected.values() for s in sel)

    @dataclass
    class Config:
        criterion: int = 1  # 1: importance × certainty; 2: × history stability (histogram intersection)
        warmup_epochs: int = 9  # first decision at the end of this epoch (counted from 0; scaled)
        decision_freq: int = 5  # epochs between decisions (scaled, at least 1)
        post_train: int = 5  # weight-only epochs after the last decision (scaled; shrinks first)
        history_size: int = 4  # epochs of q kept for Criterion 2
        # the batch grows by this after every decision epoch (0: off; None: 8 per 64 of batch_size, ≥ 1)
        batch_increase: Optional[int] = None
        unrolled: bool = False  # second order (the official --unrolled): through one virtual weight step
        hvp_r: float = 0.01  # ε = hvp_r / ‖∇_w' L_val‖ of the finite-difference Hessian-vector product

    paper_defaults = {"epochs": 50}
    quick_defaults = {"epochs": 10}
    paper_epochs = 50
    official_batch, official_increase = 64, 8  # the official code grows its batch of 64 by 8 per decision

    def __init__(self, cfg: DictConfig, space: Any = None):
        super().__init__(cfg, space)
        zero = self.space.zero_op
        self.none_idxs: dict[str, Optional[int]] = {
            t: self.space.ops_of(t).index(zero) if zero in self.space.ops_of(t) else None
            for t in self.space.cell_types}
        self.none_idx = self.none_idxs[self.space.cell_types[0]]
        self.pruned_marks = {t: k if k is not None else PRUNED for t, k in self.none_idxs.items()}
        """The mark of a pruned edge in ``selected``: the zero op's index, or PRUNED in a cell type without one."""
        self.selected = {t: [UNDECIDED] * self.topology_of(t).num_edges for t in self.space.cell_types}
        self.history: dict[str, list[torch.Tensor]] = {t: [] for t in self.space.cell_types}
        self.decisions: list[dict[str, Any]] = []

    # ----------------------------------------------------------------- schedule
    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        s = cfg.sgas
        if s.criterion not in (1, 2):
            raise ConfigError(f"sgas.criterion must be 1 or 2, got {s.criterion}")
        if s.decision_freq < 1 or s.warmup_epochs < 0 or s.post_train < 0 or s.history_size < 1:
            raise ConfigError("sgas.decision_freq and sgas.history_size must be ≥ 1, warmup_epochs and "
                              "post_train ≥ 0")
        space_cls = registry.get("space", cfg.model.space)
        if space_cls.zero_op is None and not getattr(space_cls, "input_choice", False):
            raise ConfigError(f"sgas ranks edges by their weight off the zero op; the {cfg.model.space} space has none")
        if s.batch_increase is not None and s.batch_increase < 0:
            raise ConfigError(f"sgas.batch_increase must be ≥ 0, got {s.batch_increase}")
        n = _decisions(cfg)
        w, f = _schedule(cfg, n)
        if w + f * (n - 1) + 1 > cfg.epochs:
            need = (n if cfg.scale_schedules else w + f * (n - 1) + 1)
            raise ConfigError(f"sgas makes {n} decisions per cell; with these settings that needs at least "
                              f"{need} epochs, got epochs={cfg.epochs}")

    def schedule(self) -> tuple[int, int]:
        """(warm-up, decision frequency) of this run, scaled (see the module docstring)."""
        return _schedule(self.cfg, _decisions(self.cfg, self.space))

    def decision_epochs(self) -> list[int]:
        w, f = self.schedule()
        return [w + k * f for k in range(_decisions(self.cfg, self.space))]

    def is_decision_epoch(self, epoch: int) -> bool:
        w, f = self.schedule()
        return epoch >= w and (epoch - w) % f == 0

    def batch_increase(self) -> int:
        """Images added to the batch after each decision: ``sgas.batch_increase``, or by default the official
        8 per 64 scaled to this run's batch size (rounded half up, at least 1)."""
        inc = self.section.get("batch_increase")
        if inc is not None:
            return int(inc)
        return max(1, int(self.official_increase * int(self.cfg.batch_size) / self.official_batch + 0.5))

    def batch_size(self, epoch: int) -> int:
        done = sum(1 for d in self.decision_epochs() if d < epoch)
        base = int(self.cfg.batch_size)
        grown = base + self.batch_increase() * done
        if self.max_batch is not None:
            grown = min(grown, max(base, self.max_batch))
        return grown

    def updates_arch(self, epoch: int) -> bool:
        # after the last decision no α row can move any more: skip the architecture steps
        return epoch <= self.decision_epochs()[-1]

    # ----------------------------------------------------------------- forward
    def frozen_rows(self) -> dict[str, torch.Tensor]:
        out = {}
        for t in self.spec.cell_types:
            mask = torch.tensor([s != UNDECIDED for s in self.selected[t]], device=self.alpha(t).device)
            out[f"alpha_{t}"] = mask
            if f"beta_{t}" in self.arch:
                out[f"beta_{t}"] = mask
        return out

    def edge_weights(self, cell_type: str) -> CellWeights:
        w = torch.softmax(self.alpha(cell_type), dim=-1)
        ops: list[Any] = []
        for e, s in enumerate(self.selected[cell_type]):
            if s == UNDECIDED:
                ops.append(w[e])
            elif s == self.pruned_marks[cell_type]:
                ops.append(None)
            else:
                ops.append(int(s))
        return CellWeights(ops, edges=self.input_weights(cell_type))

    # ----------------------------------------------------------------- decisions
    def on_epoch_end(self, epoch: int, net: nn.Module) -> list[Decision]:
        events = []
        decide = self.is_decision_epoch(epoch)
        for t in self.spec.cell_types:
            if self.is_binary(t):  # on/off edges: weighted as DARTS does, derived by the space's rule
                continue
            history = list(self.history[t]) if self.section.criterion == 2 else None
            none_idx = self.none_idxs[t]
            sc = edge_scores(self.alpha(t), none_idx, history, None if none_idx is not None else self.edge_scale(t))
            # the official code records q every epoch, after computing the intersection
            self.history[t].append(sc["q"].clone())
            self.history[t] = self.history[t][-int(self.section.history_size):]
            candidates = [e for e, s in enumerate(self.selected[t]) if s == UNDECIDED]
            if decide and candidates:
                events.append(self._decide(t, epoch, sc, candidates))
        return events

    def _decide(self, t: str, epoch: int, sc: dict[str, torch.Tensor], candidates: list[int]) -> Decision:
        score = sc["score"]
        edge = max(candidates, key=lambda e: (float(score[e]), -e))  # argmax, first on ties
        q = sc["q"][edge]
        k = int(torch.argmax(q))
        none_idx, mark, topo = self.none_idxs[t], self.pruned_marks[t], self.topology_of(t)
        op = k + (1 if none_idx is not None and k >= none_idx else 0)
        status_before = list(self.selected[t])
        self.selected[t][edge] = op
        pruned = self._prune_nodes(t)
        prims = self.space.ops_of(t)
        node, src = topo.edges[edge]
        table = [{"edge": e, "node": topo.edges[e][0], "input": topo.edges[e][1],
                  "status": ("candidate" if s == UNDECIDED else "pruned" if s == mark else "decided"),
                  "importance": float(sc["importance"][e]), "entropy": float(sc["entropy"][e]),
                  **({"histogram": float(sc["histogram"][e])} if "histogram" in sc else {}),
                  "score": float(sc["score"][e])} for e, s in enumerate(status_before)]
        record = {"event": "sgas-decision", "cell": t, "epoch": epoch, "edge": edge, "node": node, "input": src,
                  "op": prims[op], "pruned": pruned, "criterion": int(self.section.criterion),
                  "decision": len([s for s in self.selected[t] if s not in (UNDECIDED, mark)]),
                  "scores": table}
        self.decisions.append({k: v for k, v in record.items() if k != "scores"})
        msg = (f"sgas: epoch {epoch} {t} edge {edge} := {prims[op]}<-{src} (into node "
               f"{node + topo.n_inputs}) "
               f"score {float(score[edge]):.3f}" + (f"; pruned edges {pruned}" if pruned else ""))
        return Decision(msg, record)

    def _prune_nodes(self, t: str) -> list[int]:
        """Nodes with two decided edges: their undecided edges become 'none' (official ``check_edges``)."""
        pruned: list[int] = []
        topo = self.topology_of(t)
        if topo.keep is None:  # every edge of a node stays (NAS-Bench-201): nothing to prune
            return pruned
        for i in range(topo.nodes):
            rows = topo.node_edges(i)
            if sum(1 for e in rows if self.selected[t][e] != UNDECIDED) >= topo.keep:
                for e in rows:
                    if self.selected[t][e] == UNDECIDED:
                        self.selected[t][e] = self.pruned_marks[t]
                        pruned.append(e)
        return pruned

    # ----------------------------------------------------------------- result
    def derive_cell(self, cell_type: str) -> Any:
        """The decisions; nodes not yet complete are filled as the official ``parse_gene_force`` does.

        The missing edges of a node are its undecided edges of largest importance (1 − p_none), each with
        its strongest non-'none' op. Pairs are listed per node in input order, as in the official code.
        """
        if self.is_binary(cell_type):
            return super().derive_cell(cell_type)
        prims = self.space.ops_of(cell_type)
        none_idx, topo = self.none_idxs[cell_type], self.topology_of(cell_type)
        p = torch.softmax(self.alpha(cell_type).detach().double().cpu(), dim=-1)
        if none_idx is not None:
            importance = 1 - p[:, none_idx]
        elif self.edge_scale(cell_type) is not None:
            importance = self.edge_scale(cell_type).double().cpu()
        else:
            importance = torch.ones(p.shape[0], dtype=torch.float64)
        sel = self.selected[cell_type]
        gene = []
        for i in range(topo.nodes):
            rows = list(topo.node_edges(i))
            keep = len(rows) if topo.keep is None else topo.keep
            need = keep - sum(1 for e in rows if sel[e] != UNDECIDED)
            undecided = [e for e in rows if sel[e] == UNDECIDED]
            extra = sorted(undecided, key=lambda e: (-float(importance[e]), e))[:max(need, 0)]
            for e in rows:
                src = topo.edges[e][1]
                if sel[e] == UNDECIDED:
                    if e in extra:
                        row = p[e].clone()
                        if none_idx is not None:
                            row[none_idx] = -1.0
                        gene.append((prims[int(torch.argmax(row))], src))
                elif sel[e] != self.pruned_marks[cell_type]:
                    gene.append((prims[sel[e]], src))
        return gene

    def derive(self) -> Any:
        g = super().derive()
        done = all(s != UNDECIDED for t in self.spec.cell_types if not self.is_binary(t) for s in self.selected[t])
        return g.with_meta(decisions=len(self.decisions), complete=done)

    # ----------------------------------------------------------------- checkpoints
    def extra_state(self) -> dict[str, Any]:
        return {"selected": {t: list(v) for t, v in self.selected.items()},
                "history": {t: [h.cpu().clone() for h in v] for t, v in self.history.items()},
                "decisions": [dict(d) for d in self.decisions]}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.selected = {t: [int(s) for s in v] for t, v in state["selected"].items()}
        self.history = {t: [h.clone() for h in v] for t, v in state.get("history", {}).items()}
        for t in self.space.cell_types:
            self.history.setdefault(t, [])
        self.decisions = [dict(d) for d in state.get("decisions", [])]


def _decisions(cfg: DictConfig, space: Any = None) -> int:
    """Decisions of the greedy schedule: every node's kept inputs, of the cell type that has most (on/off cell
    types are not decided greedily)."""
    space = space if space is not None else registry.get("space", cfg.model.space)(cfg)
    return max(space.topology_of(t).decisions for t in space.cell_types if t not in space.binary_cell_types)


def _schedule(cfg: DictConfig, n_decisions: int) -> tuple[int, int]:
    s = cfg.sgas
    w, f, p = int(s.warmup_epochs), int(s.decision_freq), int(s.post_train)
    if not cfg.scale_schedules:
        return w, f
    r = cfg.epochs / Sgas.paper_epochs
    w, f, p = int(round(w * r)), max(1, int(round(f * r))), int(round(p * r))
    E = int(cfg.epochs)
    while w + f * (n_decisions - 1) + p + 1 > E:
        if p > 0:
            p -= 1
        elif f > 1:
            f -= 1
        elif w > 0:
            w -= 1
        else:
            break
    return w, f
