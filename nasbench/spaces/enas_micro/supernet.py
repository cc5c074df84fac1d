"""The ENAS micro search network: NNI's ``MicroNetwork`` of ``ENASMicroLayer`` s with every choice relaxed.

The layout, the cells' input processing and output conv are the evaluation network's
(:mod:`.network`). In a search cell every (node, earlier state) pair is an edge carrying the strategy's
module over the five ops (``make_edge``); node ``i`` is Σ over its incoming edges e of
``w.edges[e] · edge_e(state)`` (``w.edges``: the strategy's input weights, the normalised β of each node's
incoming edges, or a sample of two of them), edges that receive ``None`` left out.

The output. In NNI's layer (and the TF search code) the output conv reads the loose ends of the sampled
cell through the matching slices of one weight [C, nodes + 2, C, 1, 1]. Here the conv reads every state
``k`` scaled by how loose it is, ``u_k = Π_e (1 − ρ_e)`` over the edges e leaving state k, where
``ρ_e = min(1, 2 · w_e / Σ w)`` (the sum over the node's computing edges) is how much edge e's node uses
state k: with a sample of two inputs per node (GDAS, ``w`` one-hot in value) ``ρ`` is 1 on the sampled
edges and 0 elsewhere, so ``u`` marks exactly the sampled cell's loose ends and the output is NNI's for that
cell; with softmax input weights ``u`` is a soft version of it. An edge that computes nothing (``None``)
does not use its state; without input weights every computing edge uses its state fully (only the last
node is loose, which is what NNI's layer computes when every input is taken).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from nasbench.spaces.base import (CellWeights, EdgeFactory, SearchNetwork, SupernetSpec, Topology, recomputed,
                                  reference_nodes)
from nasbench.spaces.enas_micro.network import CellInputs, OutputConv, cell_layout, kaiming_init

KEEP = 2
"""Inputs a node takes."""


def looseness(w: CellWeights, topology: Topology) -> torch.Tensor:
    """u [states]: how loose each state of a cell is under edge weights ``w`` (see the module docstring)."""
    n_states = topology.n_inputs + topology.nodes
    computes = [op is not None for op in w.ops]
    like = w.edges if w.edges is not None else None
    factors: list[list[torch.Tensor]] = [[] for _ in range(n_states)]
    for i in range(topology.nodes):
        rows = [e for e in topology.node_edges(i) if computes[e]]
        if not rows:
            continue
        if like is None:
            for e in rows:
                factors[topology.edges[e][1]].append(torch.zeros(()))
            continue
        s = w.edges[rows]
        rho = torch.clamp(KEEP * s / s.sum(), max=1.0)
        for e, r in zip(rows, rho.unbind(0)):
            factors[topology.edges[e][1]].append(1.0 - r)
    out = []
    for k in range(n_states):
        if not factors[k]:
            out.append(torch.ones(()) if like is None else like.new_ones(()))
        else:
            f = factors[k][0]
            for g in factors[k][1:]:
                f = f * g
            out.append(f if like is None else f.to(like))
    return torch.stack(out)


class CellBody(nn.Module):
    """A search cell after its input processing: the dense edges of ``topology`` and the looseness-weighted
    output conv. ``forward(a, b, w)`` → the cell's output."""

    def __init__(self, C: int, edge_ops: Sequence[Sequence[str]], make_edge: EdgeFactory, topology: Topology):
        super().__init__()
        self.topology = topology
        self.edges = nn.ModuleList(make_edge(C, 1, edge_ops[e]) for e in range(topology.num_edges))
        self.output = OutputConv(C, topology.n_inputs + topology.nodes)

    def forward(self, a: torch.Tensor, b: torch.Tensor, w: CellWeights) -> torch.Tensor:
        states = reference_nodes(self.edges, self.topology, [a, b], w, empty=lambda: torch.zeros_like(a))
        u = looseness(w, self.topology).to(a.dtype)
        return self.output([states[k] * u[k] for k in range(len(states))])


class SearchCell(nn.Module):
    """One search cell: its inputs (:class:`~.network.CellInputs`) and its :class:`CellBody`; ``forward`` →
    (the next cell's first input, the cell's output). ``memory_efficient`` recomputes the body in the backward
    pass."""

    def __init__(self, C_pp: int, C_p: int, C: int, reduction: bool, edge_ops: Sequence[Sequence[str]],
                 make_edge: EdgeFactory, topology: Topology):
        super().__init__()
        self.reduction = reduction
        self.inputs = CellInputs(C_pp, C_p, C, reduction)
        self.body = CellBody(C, edge_ops, make_edge, topology)
        self.memory_efficient = False

    @property
    def edges(self) -> nn.ModuleList:
        return self.body.edges

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, w: CellWeights) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, passed = self.inputs(s0, s1)
        if self.memory_efficient and torch.is_grad_enabled():
            return passed, recomputed(self.body, a, b, w)
        return passed, self.body(a, b, w)


class Supernet(SearchNetwork):
    """The search network. ``forward(x, {"normal": CellWeights, "reduce": CellWeights})`` → logits. Its one
    execution is the reference (NNI's modules run as they are)."""

    def __init__(self, spec: SupernetSpec, make_edge: EdgeFactory, topology: Topology):
        super().__init__()
        for t in ("normal", "reduce"):
            if spec.ops(t) is None:
                raise ValueError(f"the ENAS micro search network needs the candidate ops of its {t!r} cells")
        self.spec = spec
        C = spec.C
        self.stem = nn.Sequential(nn.Conv2d(spec.in_channels, 3 * C, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(3 * C))
        self.cells = nn.ModuleList()
        self.cell_types: list[str] = []
        C_last = 3 * C
        for C_pp, C_p, C_cur, reduction in cell_layout(C, spec.layers):
            t = "reduce" if reduction else "normal"
            self.cells.append(SearchCell(C_pp, C_p, C_cur, reduction, spec.ops(t), make_edge, topology))
            self.cell_types.append(t)
            C_last = C_cur
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_last, spec.num_classes)
        kaiming_init(self.stem)
        for cell in self.cells:
            kaiming_init(cell.inputs)

    def set_execution(self, impl: str = "reference", memory_efficient: bool = False) -> "Supernet":
        if impl != "reference":
            raise ValueError(f"the ENAS micro search network has one execution, 'reference'; got {impl!r}")
        super().set_execution(impl, memory_efficient)
        for cell in self.cells:
            cell.memory_efficient = memory_efficient
        return self

    def forward(self, x: torch.Tensor, weights: Mapping[str, CellWeights]) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell, t in zip(self.cells, self.cell_types):
            s0, s1 = cell(s0, s1, weights[t])
        out = self.global_pooling(torch.relu(s1))
        return self.classifier(out.flatten(1))
