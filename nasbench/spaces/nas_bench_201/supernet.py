"""The NAS-Bench-201 search network (the official ``TinyNetworkDarts``, which GDAS shares).

Stem (3×3 conv, bias-free, + BN) to C channels; three stages of N search cells at C, 2C and 4C channels
separated by stride-2 :class:`~nasbench.spaces.nas_bench_201.ops.ResNetBasicblock` s (affine BN);
BN-ReLU, global average pooling, linear classifier. Every search cell has the space's 6 edges; what
happens on an edge is the strategy's (its ``make_edge``), and each edge receives ``w.ops[e]`` and, when
given, is scaled by ``w.edges[e]``, as in the DARTS space's supernet. Every search cell shares its cell
type's weights (``weights["cell"]``). The cell ops' BatchNorms are not affine; with
``spec.options["track_running_stats"]`` false they normalise with batch statistics in eval mode too.

Two executions of the same modules (:meth:`Supernet.set_execution`): ``reference`` runs every op of every
edge on its own, as the official code does; ``fast`` computes the same numbers with less work: the ReLU
that opens both convolutions and the pooling of a source state are computed once for all the edges that
leave it, ``none`` is neither computed nor summed, a node's weighted sum accumulates in place, and a
convolution's op weight folds into its BatchNorm, so its output is not kept for the weight's gradient.
``memory_efficient`` recomputes each search cell's activations in the backward pass instead of storing them.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn

from nasbench.spaces import recompute
from nasbench.spaces.base import (CellWeights, EdgeFactory, SearchNetwork, SupernetSpec, Topology, recomputed,
                                  reference_nodes)
from nasbench.spaces.edges import NodeSum, SourceCache, add_edge, batch_norm, global_pool
from nasbench.spaces.nas_bench_201.network import stage_layout
from nasbench.spaces.nas_bench_201.ops import (Identity, Pooling, ReLUConvBN, ResNetBasicblock, Zero,
                                               untrack_running_stats)

CELL = "cell"


class Nb201Source(SourceCache):
    """A source state whose edges run NAS-Bench-201 ops, sharing its ReLU and its pooling."""

    def run(self, op: nn.Module) -> Optional[torch.Tensor]:
        if isinstance(op, Zero):
            return None
        if isinstance(op, Identity):
            return self.x
        if type(op) is ReLUConvBN and isinstance(op[0], nn.ReLU):
            h = self.relu()
            for child in list(op)[1:]:
                h = batch_norm(child, h) if isinstance(child, nn.BatchNorm2d) else child(h)
            return h
        if type(op) is Pooling and op.preprocess is None:
            return self.pool(op.pool)
        if (type(op) is nn.Sequential and len(op) == 2 and isinstance(op[0], Identity)
                and isinstance(op[1], nn.Dropout)):  # P-DARTS's skip dropout: the reference's mask
            return self.dropped(op[1])
        return op(self.x)

    def add_to(self, node: NodeSum, op: nn.Module, w: Optional[torch.Tensor], part: str = "out") -> None:
        """A ReLU-conv-BN op's weight folds into its BN (:func:`~nasbench.spaces.recompute.scaled_bn`: the op's
        output is not kept for the weight's gradient); everything else as :meth:`SourceCache.add_to`."""
        if w is not None and type(op) is ReLUConvBN and isinstance(op[0], nn.ReLU) and len(op) == 3:
            h = op[1](self.relu())
            if recompute.bn_applies(op[2], h):
                node.add(recompute.scaled_bn(op[2], h, w), None, part, owned=True)
            else:
                node.add(batch_norm(op[2], h), w, part)
            return
        super().add_to(node, op, w, part)


class SearchCell(nn.Module):
    """One search cell: node ``i`` sums its incoming edges; the output is the last node."""

    def __init__(self, C: int, edge_ops: Any, make_edge: EdgeFactory, topology: Topology):
        super().__init__()
        self.impl = "reference"
        self.topology = topology
        self.edges = nn.ModuleList(make_edge(C, 1, edge_ops[e]) for e in range(topology.num_edges))

    def forward(self, x: torch.Tensor, w: CellWeights) -> torch.Tensor:
        if self.impl == "fast":
            return self._fast(x, w)
        states = reference_nodes(self.edges, self.topology, [x], w, empty=lambda: torch.zeros_like(x))
        return states[self.topology.output[-1]]

    def _fast(self, x: torch.Tensor, w: CellWeights) -> torch.Tensor:
        """The same numbers as the reference forward, nodes and edges in the same order (so ops that draw
        random numbers draw the same ones)."""
        sources = [Nb201Source(x)]
        scales = w.edges.unbind(0) if w.edges is not None else None
        out = x
        for i in range(self.topology.nodes):
            node = NodeSum()
            for e in self.topology.node_edges(i):
                add_edge(node, self.edges[e], sources[self.topology.edges[e][1]], w.ops[e],
                         None if scales is None else scales[e])
            out = node.result(tuple(x.shape), x)
            sources.append(Nb201Source(out))
        return sources[self.topology.output[-1]].x


class Supernet(SearchNetwork):
    """The search network. ``forward(x, {"cell": CellWeights})`` → logits."""

    def __init__(self, spec: SupernetSpec, make_edge: EdgeFactory, topology: Topology):
        super().__init__()
        ops = spec.ops(CELL)
        if ops is None:
            raise ValueError("the NAS-Bench-201 search network needs the candidate ops of its one cell type 'cell'")
        self.spec = spec
        track = bool(spec.options.get("track_running_stats", True))
        C = spec.C
        self.stem = nn.Sequential(nn.Conv2d(spec.in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        C_prev = C
        for C_curr, block in stage_layout(C, spec.layers):
            if block:
                cell: nn.Module = ResNetBasicblock(C_prev, C_curr, 2)
            else:
                cell = SearchCell(C_curr, ops, make_edge, topology)
                if not track:
                    untrack_running_stats(cell.edges)
            self.cells.append(cell)
            C_prev = C_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, spec.num_classes)

    def forward(self, x: torch.Tensor, weights: Mapping[str, CellWeights]) -> torch.Tensor:
        w = weights[CELL]
        h = self.stem(x)
        for cell in self.cells:
            if not isinstance(cell, SearchCell):
                h = cell(h)
            elif self.memory_efficient and torch.is_grad_enabled():
                h = recomputed(cell, h, w)
            else:
                h = cell(h, w)
        h = self.lastact(h)
        h = global_pool(self.global_pooling, h) if self.impl == "fast" else self.global_pooling(h)
        return self.classifier(h.flatten(1))
