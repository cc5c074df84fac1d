"""The one search supernet every strategy runs on.

It follows the DARTS code's ``model_search.Network``: a 3×3 conv + BN stem with ``stem_multiplier·C``
channels, ``layers`` search cells with reduction cells (channels doubled) at ``layers//3`` and
``2·layers//3``, global average pooling and a linear classifier. A cell preprocesses its two inputs
(ReLU-conv1×1-BN, or a factorized reduce after a reduction cell), feeds every intermediate node from all
earlier states (14 edges for 4 nodes) and concatenates the last ``multiplier`` nodes.

What happens on an edge is the strategy's business: the supernet asks the strategy's ``make_edge`` for
each edge module and passes each edge whatever the strategy's ``edge_weights`` produced for it.

Two executions of the same modules (:meth:`Supernet.set_execution`): ``reference`` runs every op of every
edge on its own, as the DARTS code does (the tests' oracle and the benchmark's baseline); ``fast`` (the
default of a search) computes the same numbers with less work (:mod:`nasbench.spaces.darts.ops.fast`). Either can
recompute each search cell's activations in the backward pass instead of storing them
(``memory_efficient``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from nasbench.spaces.darts import fast as supernet_fast
from nasbench.spaces.darts.ops import FactorizedReduce, ReLUConvBN, search_op

IMPLS = ("fast", "reference")

CELL_TYPES = ("normal", "reduce")


@dataclass(frozen=True)
class SupernetSpec:
    """Everything needed to build a supernet.

    ``normal_ops``/``reduce_ops`` hold the candidate op names of each edge (all primitives, or the
    survivors of P-DARTS's pruning); ``reduce_ops=None`` means the reduction cell is fixed, not searched.
    """

    C: int
    layers: int
    num_classes: int
    normal_ops: tuple[tuple[str, ...], ...]
    reduce_ops: Optional[tuple[tuple[str, ...], ...]]
    in_channels: int = 3
    steps: int = 4
    multiplier: int = 4
    stem_multiplier: int = 3
    final_bn_relu: bool = False

    def ops(self, cell_type: str) -> Optional[tuple[tuple[str, ...], ...]]:
        return self.normal_ops if cell_type == "normal" else self.reduce_ops

    @property
    def cell_types(self) -> tuple[str, ...]:
        """Cell types that carry architecture parameters."""
        return ("normal", "reduce") if self.reduce_ops is not None else ("normal",)


class CellWeights(NamedTuple):
    """What one cell type's edges receive on a forward pass.

    ``ops[e]`` is handed to edge ``e``'s module as is: a weight vector over its candidate ops, a sampled
    choice, an op index, or ``None`` for an edge that computes nothing. ``edges`` is an optional tensor
    [num_edges] multiplying each edge's output (PC-DARTS's edge normalization).
    """

    ops: Sequence[Any]
    edges: Optional[torch.Tensor] = None


EdgeFactory = Callable[[int, int, Sequence[str]], nn.Module]
"""(C, stride, candidate op names) → edge module with ``forward(x, w)``."""


class MixedOp(nn.Module):
    """A DARTS edge: ō(x) = Σ_k w_k · o_k(x) over the edge's candidate ops.

    ``w`` may also be an ``int`` (compute only that op, unweighted: a decided edge) or ``None`` (the
    edge is pruned and contributes nothing).
    """

    def __init__(self, C: int, stride: int, ops: Sequence[str]):
        super().__init__()
        self.op_names = tuple(ops)
        self.ops = nn.ModuleList(search_op(name, C, stride) for name in ops)

    def forward(self, x: torch.Tensor, w: Any) -> Optional[torch.Tensor]:
        if w is None:
            return None
        if isinstance(w, int):
            return self.ops[w](x)
        return sum(wk * op(x) for wk, op in zip(w, self.ops))

    def contribute(self, node: supernet_fast.NodeSum, src: supernet_fast.SourceCache, w: Any,
                   scale: Optional[torch.Tensor], part: str = "out") -> None:
        """The fast execution's equivalent of ``node += scale · forward(x, w)`` (see :mod:`nasbench.spaces.darts.ops.fast`)."""
        if w is None:
            return
        if isinstance(w, int):
            out = supernet_fast.run_op(self.ops[w], src)
            if out is not None:
                node.add(out, scale, part)
            return
        weights = (w * scale if scale is not None else w).unbind(0)
        for op, wk in zip(self.ops, weights):
            out = supernet_fast.run_op(op, src)
            if out is not None:
                node.add(out, wk, part)


class SearchCell(nn.Module):
    """One search cell: two preprocessed inputs, ``steps`` nodes, each the sum over all earlier states."""

    def __init__(self, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool,
                 edge_ops: Sequence[Sequence[str]], make_edge: EdgeFactory, steps: int, multiplier: int):
        super().__init__()
        self.impl = "reference"
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_pp, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        e = 0
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(make_edge(C, stride, edge_ops[e]))
                e += 1

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, w: CellWeights) -> torch.Tensor:
        if self.impl == "fast":
            return supernet_fast.cell_forward(self, s0, s1, w)
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            terms = []
            for j, h in enumerate(states):
                out = self.edges[offset + j](h, w.ops[offset + j])
                if out is None:
                    continue
                if w.edges is not None:
                    out = w.edges[offset + j] * out
                terms.append(out)
            offset += len(states)
            states.append(sum(terms))
        return torch.cat(states[-self.multiplier:], dim=1)


FixedCellFactory = Callable[[int, int, int, bool], nn.Module]
"""(C_pp, C_p, C, reduction_prev) → a cell with ``forward(s0, s1)`` and ``multiplier`` (GDAS-FRC)."""


class Supernet(nn.Module):
    """The search network. ``forward(x, weights)`` takes ``{cell_type: CellWeights}``; returns logits."""

    def __init__(self, spec: SupernetSpec, make_edge: EdgeFactory,
                 fixed_reduction: Optional[FixedCellFactory] = None):
        super().__init__()
        self.spec = spec
        C_curr = spec.stem_multiplier * spec.C
        self.stem = nn.Sequential(
            nn.Conv2d(spec.in_channels, C_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_curr),
        )
        C_pp, C_p, C_curr = C_curr, C_curr, spec.C
        self.cells = nn.ModuleList()
        self.cell_types: list[str] = []
        reduction_prev = False
        for i in range(spec.layers):
            reduction = i in (spec.layers // 3, 2 * spec.layers // 3)
            if reduction:
                C_curr *= 2
            if reduction and spec.reduce_ops is None:
                if fixed_reduction is None:
                    raise ValueError("a spec without reduce_ops needs a fixed reduction cell")
                cell: nn.Module = fixed_reduction(C_pp, C_p, C_curr, reduction_prev)
                self.cell_types.append("fixed")
            else:
                cell_type = "reduce" if reduction else "normal"
                cell = SearchCell(C_pp, C_p, C_curr, reduction, reduction_prev, spec.ops(cell_type), make_edge,
                                  spec.steps, spec.multiplier)
                self.cell_types.append(cell_type)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_p), nn.ReLU(inplace=False)) if spec.final_bn_relu else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, spec.num_classes)
        self.impl = "reference"
        self.memory_efficient = False

    def set_execution(self, impl: str = "fast", memory_efficient: bool = False) -> "Supernet":
        """How search cells run: ``fast`` or ``reference`` (same numbers), and whether each cell's activations
        are recomputed in the backward pass instead of stored (``memory_efficient``)."""
        if impl not in IMPLS:
            raise ValueError(f"supernet execution must be one of {IMPLS}, got {impl!r}")
        self.impl, self.memory_efficient = impl, memory_efficient
        for cell in self.cells:
            if isinstance(cell, SearchCell):
                cell.impl = impl
        return self

    def forward(self, x: torch.Tensor, weights: Mapping[str, CellWeights]) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell, cell_type in zip(self.cells, self.cell_types):
            args = (s0, s1) if cell_type == "fixed" else (s0, s1, weights[cell_type])
            if self.memory_efficient and torch.is_grad_enabled():
                s0, s1 = s1, recomputed(cell, *args)
            else:
                s0, s1 = s1, cell(*args)
        if self.lastact is not None:
            s1 = self.lastact(s1)
        out = self.global_pooling(s1)
        return self.classifier(out.flatten(1))


def recomputed(cell: nn.Module, *args: Any) -> torch.Tensor:
    """``cell(*args)``, keeping only its inputs for the backward pass, which runs the cell again.

    The recomputation uses the tensors the cell had at forward time (also under ``functional_call``, as in
    DARTS's virtual step, whose parameters are gone by the time the backward runs) and the same random
    numbers; it leaves BatchNorm running statistics as the forward left them.
    """
    params = dict(cell.named_parameters())
    buffers = dict(cell.named_buffers())  # not inputs: the forward's own BN update bumps their version
    n_args = len(args)

    def run(*flat: Any) -> torch.Tensor:
        return functional_call(cell, {**dict(zip(params, flat[n_args:])), **buffers}, flat[:n_args])

    return checkpoint(run, *args, *params.values(), use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), _buffers_kept(list(buffers.values()))))


@contextlib.contextmanager
def _buffers_kept(buffers: Sequence[torch.Tensor]) -> Iterator[None]:
    saved = [b.detach().clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in zip(buffers, saved):
                b.copy_(v)


def count_weights(net: nn.Module) -> int:
    """Number of supernet weights (architecture parameters live in the strategy, not here)."""
    return sum(p.numel() for p in net.parameters())
