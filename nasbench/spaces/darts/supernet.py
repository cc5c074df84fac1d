"""The one search supernet every strategy runs on.

It follows the DARTS code's ``model_search.Network``: a 3×3 conv + BN stem with ``stem_multiplier·C``
channels (or, with the ``imagenet`` stem, PC-DARTS's ``model_search_imagenet.Network``: see
:class:`ImageNetStem`), ``layers`` search cells with reduction cells (channels doubled) at ``layers//3`` and
``2·layers//3``, global average pooling and a linear classifier. A cell preprocesses its two inputs
(ReLU-conv1×1-BN, or a factorized reduce after a reduction cell), feeds every intermediate node from all
earlier states (the space's :class:`~nasbench.spaces.base.Topology`: 14 edges for 4 nodes) and
concatenates the last ``multiplier`` nodes.

What happens on an edge is the strategy's business: the supernet asks the strategy's ``make_edge`` for
each edge module and passes each edge whatever the strategy's ``edge_weights`` produced for it.

Two executions of the same modules (:meth:`Supernet.set_execution`): ``reference`` runs every op of every
edge on its own, as the DARTS code does (the tests' oracle and the benchmark's baseline); ``fast`` (the
default of a search) computes the same numbers with less work (:mod:`nasbench.spaces.darts.fast`). Either can
recompute each search cell's activations in the backward pass instead of storing them
(``memory_efficient``).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from nasbench.spaces.base import (CellWeights, EdgeFactory, SearchNetwork, SupernetSpec, Topology, recomputed,
                                  reference_nodes)
from nasbench.spaces.darts import fast as supernet_fast
from nasbench.spaces.darts.network import FixedReductionCell, ImageNetStem
from nasbench.spaces.darts.ops import FactorizedReduce, ReLUConvBN
from nasbench.spaces.edges import global_pool


class SearchCell(nn.Module):
    """One search cell: two preprocessed inputs and the nodes of ``topology``, each the sum of its incoming
    edges; the output concatenates the states ``topology.output``."""

    def __init__(self, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool,
                 edge_ops: Sequence[Sequence[str]], make_edge: EdgeFactory, topology: Topology):
        super().__init__()
        self.impl = "reference"
        self.recompute_ops = False  # fast execution: recompute each op's 1×1 conv + BN and the pools in the backward
        self.reduction = reduction
        self.topology = topology
        self.multiplier = len(topology.output)
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_pp, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(make_edge(C, 2 if reduction and src < topology.n_inputs else 1, edge_ops[e])
                                   for e, (_, src) in enumerate(topology.edges))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, w: CellWeights,
                relus: Optional[supernet_fast.ReluMemo] = None) -> torch.Tensor:
        """``relus`` (fast execution only) shares the preprocessing's ReLUs with the cells around."""
        if self.impl == "fast":
            return supernet_fast.cell_forward(self, s0, s1, w, relus)
        states = reference_nodes(self.edges, self.topology, [self.preprocess0(s0), self.preprocess1(s1)], w)
        return torch.cat([states[k] for k in self.topology.output], dim=1)


class Supernet(SearchNetwork):
    """The search network. ``forward(x, weights)`` takes ``{cell_type: CellWeights}``; returns logits.

    ``spec.options`` holds ``steps``, ``multiplier``, ``stem_multiplier``, ``final_bn_relu`` and ``stem``
    (``cifar``: one conv3×3+BN whose output feeds both inputs of the first cell; ``imagenet``:
    :class:`ImageNetStem`); a spec without ``reduce`` ops gets GDAS-FRC's fixed reduction cell (non-affine BN)
    at the reduction positions.
    """

    def __init__(self, spec: SupernetSpec, make_edge: EdgeFactory, topology: Topology):
        super().__init__()
        self.spec = spec
        opt = spec.options
        C_curr = int(opt.get("stem_multiplier", 3)) * spec.C
        self.stem_kind = str(opt.get("stem", "cifar"))
        if self.stem_kind == "imagenet":
            self.stem: nn.Module = ImageNetStem(spec.in_channels, C_curr)
        elif self.stem_kind == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(spec.in_channels, C_curr, 3, padding=1, bias=False),
                nn.BatchNorm2d(C_curr),
            )
        else:
            raise ValueError(f"unknown stem {self.stem_kind!r} (cifar or imagenet)")
        C_pp, C_p, C_curr = C_curr, C_curr, spec.C
        self.cells = nn.ModuleList()
        self.cell_types: list[str] = []
        reduction_prev = self.stem_kind == "imagenet"  # s0 has twice s1's resolution
        for i in range(spec.layers):
            reduction = i in (spec.layers // 3, 2 * spec.layers // 3)
            if reduction:
                C_curr *= 2
            cell_type = "reduce" if reduction else "normal"
            if spec.ops(cell_type) is None:
                cell: nn.Module = FixedReductionCell(C_pp, C_p, C_curr, reduction_prev, affine=False)
                self.cell_types.append("fixed")
            else:
                cell = SearchCell(C_pp, C_p, C_curr, reduction, reduction_prev, spec.ops(cell_type), make_edge,
                                  topology)
                self.cell_types.append(cell_type)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_curr
        self.lastact = (nn.Sequential(nn.BatchNorm2d(C_p), nn.ReLU(inplace=False)) if opt.get("final_bn_relu")
                        else None)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, spec.num_classes)

    def forward(self, x: torch.Tensor, weights: Mapping[str, CellWeights]) -> torch.Tensor:
        if self.stem_kind == "imagenet":
            s0, s1 = self.stem(x)
        else:
            s0 = s1 = self.stem(x)
        recompute = self.memory_efficient and torch.is_grad_enabled()
        # fast: a state's ReLU is computed once for all cells that preprocess it (not across recomputed
        # cells: each recomputation would keep its own)
        relus = supernet_fast.ReluMemo() if self.impl == "fast" and not recompute else None
        for cell, cell_type in zip(self.cells, self.cell_types):
            args = (s0, s1) if cell_type == "fixed" else (s0, s1, weights[cell_type])
            if recompute:
                s0, s1 = s1, recomputed(cell, *args)
            elif relus is not None and cell_type != "fixed":
                s0, s1 = s1, cell(*args, relus=relus)
            else:
                s0, s1 = s1, cell(*args)
        if self.lastact is not None:
            s1 = self.lastact(s1)
        out = global_pool(self.global_pooling, s1) if self.impl == "fast" else self.global_pooling(s1)
        return self.classifier(out.flatten(1))
