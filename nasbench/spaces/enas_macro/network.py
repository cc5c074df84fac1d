"""The ENAS macro networks, after NNI's ``ENASMacroGeneralModel`` / ``ENASMacroLayer`` (``enas_cell.py``).

A stem (3×3 conv, bias-free, + BN) to C channels, then L layers at C channels. Layer ``i`` applies its branch
to state ``i`` (the previous layer's output; state 0 is the stem's), adds the states of its skip connections
and normalises the sum with a non-affine BN. After layers L//3 − 1 and 2·(L//3) − 1 (NNI's
``pool_layers_idx``) every state so far is halved by that position's factorized reduce (one module per
position, shared by the states, as in NNI; non-affine BN). Global average pooling and a linear classifier
follow the last layer (no ReLU before the pooling, no dropout: NNI's default ``dropout_rate=0``).

The search network (:class:`Supernet`) has every branch on every layer (the strategy's module over the six
branches) and every skip connection (the strategy's module over ``none``/``skip_connect``), each edge scaled
by the strategy's edge weight where it gives one. Its one execution is the reference.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from nasbench.spaces.base import CellWeights, EdgeFactory, SearchNetwork, SupernetSpec, Topology
from nasbench.spaces.darts.network import classifier_dropout
from nasbench.spaces.enas_macro.genotype import EnasMacroGenotype
from nasbench.spaces.enas_macro.ops import build_op
from nasbench.spaces.enas_micro.ops import FactorizedReduce


def pool_positions(L: int) -> tuple[int, int]:
    d = L // 3
    return d - 1, 2 * d - 1


def branch_topology(L: int) -> Topology:
    """One edge per layer: node ``i`` (layer i) reads state ``i``."""
    return Topology(n_inputs=1, nodes=L, edges=tuple((i, i) for i in range(L)), keep=1, output=(L,))


def skip_topology(L: int) -> Topology:
    """Node ``i`` is layer ``i + 1``; its edges come from states ``0 .. i`` (all but the layer's input)."""
    return Topology(n_inputs=1, nodes=L - 1, edges=tuple((i, j) for i in range(L - 1) for j in range(i + 1)),
                    keep=None, output=())


def _stem(in_channels: int, C: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))


def _pools(L: int, C: int) -> nn.ModuleList:
    return nn.ModuleList(FactorizedReduce(C, C, affine=False) for _ in range(2))


def _run(layers: int, layer_fn, stem: nn.Module, pools: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    states = [stem(x)]
    positions = pool_positions(layers)
    for i in range(layers):
        states.append(layer_fn(i, states))
        if i in positions:
            fr = pools[positions.index(i)]
            states = [fr(s) for s in states]
    return states[-1]


class Supernet(SearchNetwork):
    """``forward(x, {"branch": CellWeights, "skip": CellWeights})`` → logits."""

    def __init__(self, spec: SupernetSpec, make_edge: EdgeFactory):
        super().__init__()
        self.spec = spec
        C, L = spec.C, spec.layers
        self.layers = L
        self.branch_topology, self.skip_topology = branch_topology(L), skip_topology(L)
        self.stem = _stem(spec.in_channels, C)
        self.branches = nn.ModuleList(make_edge(C, 1, spec.ops("branch")[e]) for e in range(L))
        self.skips = nn.ModuleList(make_edge(C, 1, spec.ops("skip")[e]) for e in range(self.skip_topology.num_edges))
        self.bns = nn.ModuleList(nn.BatchNorm2d(C, affine=False) for _ in range(L))
        self.pools = _pools(L, C)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C, spec.num_classes)

    def set_execution(self, impl: str = "reference", memory_efficient: bool = False) -> "Supernet":
        if impl != "reference" or memory_efficient:
            raise ValueError("the ENAS macro search network has one execution, 'reference', without recomputation")
        return super().set_execution(impl, False)

    def forward(self, x: torch.Tensor, weights: Mapping[str, CellWeights]) -> torch.Tensor:
        wb, ws = weights["branch"], weights["skip"]
        skip_rows = self.skip_topology.node_slices()

        def layer(i: int, states: list[torch.Tensor]) -> torch.Tensor:
            terms = []
            out = self.branches[i](states[i], wb.ops[i])
            if out is not None:
                terms.append(out if wb.edges is None else wb.edges[i] * out)
            if i > 0:
                for e in skip_rows[i - 1]:
                    s = self.skips[e](states[self.skip_topology.edges[e][1]], ws.ops[e])
                    if s is not None:
                        terms.append(s if ws.edges is None else ws.edges[e] * s)
            total = sum(terms[1:], terms[0]) if terms else torch.zeros_like(states[i])
            return self.bns[i](total)

        h = _run(self.layers, layer, self.stem, self.pools, x)
        return self.classifier(self.global_pooling(h).flatten(1))


class EnasMacroNetwork(nn.Module):
    """The evaluation network of a genotype; ``forward(x)`` → ``(logits, None)`` (no auxiliary head)."""

    def __init__(self, genotype: EnasMacroGenotype, C: int, num_classes: int, in_channels: int = 3,
                 dropout: float = 0.0):
        super().__init__()
        self.drop_path_prob = 0.0  # set by train-final; the macro network has no drop-path
        self.dropout = dropout  # before the classifier (the TF code's 1 − keep_prob)
        self.layers = len(genotype.layers)
        self.skip_sources: list[Sequence[int]] = [s for _, s in genotype.layers]
        self.stem = _stem(in_channels, C)
        self.branches = nn.ModuleList(build_op(b, C) for b, _ in genotype.layers)
        self.bns = nn.ModuleList(nn.BatchNorm2d(C, affine=False) for _ in range(self.layers))
        self.pools = _pools(self.layers, C)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        def layer(i: int, states: list[torch.Tensor]) -> torch.Tensor:
            out = self.branches[i](states[i])
            for j in self.skip_sources[i]:
                out = out + states[j]
            return self.bns[i](out)

        h = _run(self.layers, layer, self.stem, self.pools, x)
        return self.classifier(classifier_dropout(self.global_pooling(h).flatten(1), self.dropout, self.training)), None
