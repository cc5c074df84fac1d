"""The search-space seam: what an edge, a cell, a network and a genotype are.

A :class:`SearchSpace` owns everything that names operations or topology, so that the strategies
(:mod:`nasbench.algorithms`), the search loop and the commands work on any registered space:

==========================  ==========================================================================
part                        what the space decides
==========================  ==========================================================================
``primitives``              the candidate operations of an edge (α columns follow their order)
``search_op``               how one candidate op is built in the supernet
``topology``                the cell's edges, each node's incoming edges, how many inputs a node keeps
                            and which states the cell's output combines (:class:`Topology`);
                            ``topology_of``/``ops_of`` per cell type where they differ (ENAS macro)
``input_choice``            whether nodes choose their inputs (every strategy then keeps a β per edge)
``binary_cell_types``       cell types of on/off edges, derived by the space's rule by every strategy
``supernet_spec``           the sizes of the search network, and ``build_supernet`` the network itself
``build_eval_network``      the network that trains a derived genotype from scratch
``derive_cell``             the default derive rule (a strategy may override it per cell)
genotype methods            the genotype type: make, parse, validate, read/write, random, draw
==========================  ==========================================================================

A space is registered by name (:func:`nasbench.registry.register_space`) and instantiated with the run's
config (``None`` where only genotypes are handled). A space never imports an algorithm, and nothing
outside a space names its operations.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Mapping, NamedTuple, Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from nasbench import registry
from nasbench.errors import ConfigError, GenotypeError

EdgeOps = tuple[tuple[str, ...], ...]
"""The candidate op names of each edge of one cell type, in edge order."""

EdgeFactory = Callable[[int, int, Sequence[str]], nn.Module]
"""(C, stride, candidate op names) → the edge module (a strategy's ``make_edge``)."""


# ---------------------------------------------------------------------------------------------- topology
@dataclass(frozen=True)
class Topology:
    """The edges of a cell.

    States ``0 .. n_inputs-1`` are the cell's inputs; state ``n_inputs + i`` is intermediate node ``i``.
    ``edges[e] = (node, src)``: edge ``e`` carries state ``src`` into node ``node``; a node's incoming edges
    are consecutive, in increasing ``src``. At derive a node keeps ``keep`` incoming edges (``None``: all of
    them). The cell's output combines the states ``output`` (concatenated or summed, as the space builds it).
    """

    n_inputs: int
    nodes: int
    edges: tuple[tuple[int, int], ...]
    keep: Optional[int]
    output: tuple[int, ...]

    @classmethod
    def dense(cls, n_inputs: int, nodes: int, keep: Optional[int], output: Sequence[int]) -> "Topology":
        """Every node fed by all earlier states (the DARTS and NAS-Bench-201 cells)."""
        edges = tuple((i, j) for i in range(nodes) for j in range(n_inputs + i))
        return cls(n_inputs, nodes, edges, keep, tuple(output))

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def node_edges(self, node: int) -> range:
        """Indices of the edges into ``node``."""
        start = next(e for e, (i, _) in enumerate(self.edges) if i == node)
        n = sum(1 for i, _ in self.edges if i == node)
        return range(start, start + n)

    def node_slices(self) -> list[range]:
        return [self.node_edges(i) for i in range(self.nodes)]

    def edge_index(self, node: int, src: int) -> int:
        """The edge from state ``src`` into ``node``."""
        return self.edges.index((node, src))

    def sources(self, node: int) -> list[int]:
        """The states that may feed ``node``."""
        return [self.edges[e][1] for e in self.node_edges(node)]

    @property
    def decisions(self) -> int:
        """Edges a derived cell keeps in all (nodes × keep)."""
        if self.keep is None:
            return self.num_edges
        return sum(min(self.keep, len(self.node_edges(i))) for i in range(self.nodes))


# ---------------------------------------------------------------------------------------------- supernet
@dataclass(frozen=True)
class SupernetSpec:
    """Everything needed to build a search network.

    ``edge_ops[cell_type]`` holds the candidate op names of each edge of that searched cell type (all
    primitives, or the survivors of P-DARTS's pruning). A cell type of the space that is missing here is
    not searched: the space puts its fixed cell there (GDAS-FRC's reduction cell). ``options`` carries what
    only the space reads (the DARTS space: ``steps``, ``multiplier``, ``stem_multiplier``,
    ``final_bn_relu``).
    """

    C: int
    layers: int
    num_classes: int
    edge_ops: Mapping[str, EdgeOps]
    in_channels: int = 3
    options: Mapping[str, Any] = field(default_factory=dict)

    def ops(self, cell_type: str) -> Optional[EdgeOps]:
        return self.edge_ops.get(cell_type)

    @property
    def cell_types(self) -> tuple[str, ...]:
        """Cell types that carry architecture parameters."""
        return tuple(self.edge_ops)


class CellWeights(NamedTuple):
    """What one cell type's edges receive on a forward pass.

    ``ops[e]`` is handed to edge ``e``'s module as is: a weight vector over its candidate ops, a sampled
    choice, an op index, or ``None`` for an edge that computes nothing. ``edges`` is an optional tensor
    [num_edges] multiplying each edge's output (PC-DARTS's edge normalization).
    """

    ops: Sequence[Any]
    edges: Optional[torch.Tensor] = None


# ---------------------------------------------------------------------------------------------- search networks
IMPLS = ("fast", "reference")


class SearchNetwork(nn.Module):
    """Base of a space's search network: which execution its search cells run (``impl``: ``fast`` or
    ``reference``, the same numbers) and whether each cell is recomputed in the backward pass
    (``memory_efficient``, see :func:`recomputed`). Cells that have an ``impl`` attribute follow it."""

    def __init__(self) -> None:
        super().__init__()
        self.impl = "reference"
        self.memory_efficient = False

    def set_execution(self, impl: str = "fast", memory_efficient: bool = False) -> "SearchNetwork":
        if impl not in IMPLS:
            raise ValueError(f"supernet execution must be one of {IMPLS}, got {impl!r}")
        self.impl, self.memory_efficient = impl, memory_efficient
        for cell in self.modules():
            if cell is not self and hasattr(cell, "impl"):
                cell.impl = impl
        return self

    def set_recompute_ops(self, on: bool = True) -> "SearchNetwork":
        """Cells with a ``recompute_ops`` attribute (the darts space's) recompute, in their fast execution, each
        op's pointwise conv + BN and its pools in the backward pass instead of keeping their activations
        (:mod:`nasbench.spaces.recompute`)."""
        for cell in self.modules():
            if cell is not self and hasattr(cell, "recompute_ops"):
                cell.recompute_ops = on
        return self


def reference_nodes(edges: nn.ModuleList, topology: Topology, states: list[torch.Tensor], w: CellWeights,
                    empty: Optional[Callable[[], torch.Tensor]] = None) -> list[torch.Tensor]:
    """The reference execution of a cell's nodes, appended to ``states`` (the cell's inputs): node ``i`` is
    Σ over its incoming edges e of ``w.edges[e] · edges[e](states[src], w.ops[e])`` (the scale only when given),
    edges that return None left out, in edge order. A node none of whose edges computes anything is
    ``empty()``."""
    for i in range(topology.nodes):
        terms = []
        for e in topology.node_edges(i):
            out = edges[e](states[topology.edges[e][1]], w.ops[e])
            if out is None:
                continue
            if w.edges is not None:
                out = w.edges[e] * out
            terms.append(out)
        if not terms and empty is None:
            raise ValueError(f"no incoming edge of node {i} computes anything")
        states.append(sum(terms[1:], terms[0]) if terms else empty())
    return states


# ---------------------------------------------------------------------------------------------- memory
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


# ---------------------------------------------------------------------------------------------- derive rules
def strongest_op(row: Sequence[float], ops: Sequence[str], exclude: Optional[str]) -> Optional[int]:
    """Index of the largest weight in ``row`` among ``ops`` other than ``exclude``; the first on ties."""
    best = None
    for k, name in enumerate(ops):
        if name == exclude:
            continue
        if best is None or row[k] > row[best]:
            best = k
    return best


def derive_top_edges(weights: torch.Tensor, edge_ops: Sequence[Sequence[str]], topology: Topology,
                     exclude: Optional[str] = "none",
                     edge_scale: Optional[torch.Tensor] = None) -> list[tuple[str, int]]:
    """The DARTS derive rule on op weights [edges, ops]: ``(op, src)`` pairs, node by node.

    Each edge's strength is its strongest op other than ``exclude`` (the zero op); each node keeps its
    ``topology.keep`` strongest incoming edges (all with ``keep=None``), listed strongest first, each with
    its strongest op. Ties keep the lower index, as the DARTS code's stable sort and strict comparison do.
    ``edge_scale`` [edges] multiplies each edge's weights first (PC-DARTS).
    """
    W = weights.detach().double().cpu()
    if edge_scale is not None:
        W = W * edge_scale.detach().double().cpu()[:, None]
    gene: list[tuple[str, int]] = []
    for node in range(topology.nodes):
        best: list[tuple[float, int, str]] = []  # (weight, src, op) of each incoming edge
        for e in topology.node_edges(node):
            ops = edge_ops[e]
            k = strongest_op(W[e].tolist(), ops, exclude)
            if k is None:
                raise ValueError(f"edge {e} has no candidate op other than {exclude!r}")
            best.append((float(W[e, k]), topology.edges[e][1], ops[k]))
        n_keep = len(best) if topology.keep is None else topology.keep
        kept = sorted(range(len(best)), key=lambda j: -best[j][0])[:n_keep]
        gene.extend((best[j][2], best[j][1]) for j in kept)
    return gene


# ---------------------------------------------------------------------------------------------- the seam
class SearchSpace:
    """Base class of the search spaces (see the module docstring). Subclasses set the class attributes and
    implement the methods that raise ``NotImplementedError``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    primitives: ClassVar[tuple[str, ...]] = ()
    """Candidate ops of an edge, in α column order."""
    zero_op: ClassVar[Optional[str]] = "none"
    """The op that means "no connection" (never kept by a derived cell), or None if the space has none."""
    parameter_free: ClassVar[frozenset[str]] = frozenset()
    """Ops without weights (the DARTS collapse mode is a cell full of these)."""
    cell_types: ClassVar[tuple[str, ...]] = ("normal",)
    """The cell types a genotype of this space describes; each searched type has its own α."""
    fixed_cell_types: ClassVar[frozenset[str]] = frozenset()
    """Cell types the space can fix (hand-designed) instead of searching (GDAS-FRC: ``reduce``)."""
    stems: ClassVar[tuple[str, ...]] = ("cifar",)
    """The supernet stems the space builds (``model.stem``); ``auto`` picks ``imagenet`` for ImageNet-like data
    where the space has it, else ``cifar``."""
    executions: ClassVar[tuple[str, ...]] = ("reference",)
    """Supernet executions (the first is the default); ``fast`` computes the reference's numbers faster."""
    recompute_ops: ClassVar[bool] = False
    """Whether the fast search network takes ``recompute_ops`` (:meth:`SearchNetwork.set_recompute_ops`)."""
    halvings: ClassVar[int] = 2
    """How many times the search network with the ``cifar`` stem halves the images with ops that need an even
    size (a factorized reduce, a stride-2 conv beside a 2×2 pool): a search's image size must be a multiple of
    2 to this power, else the supernet fails at the first odd size (the official codes too)."""
    @classmethod
    def check_image_size(cls, size: int) -> None:
        """A ConfigError for an image side the CIFAR-style network cannot halve :attr:`halvings` times."""
        step = 2 ** cls.halvings
        if size % step:
            raise ConfigError(f"the {cls.name} space's network halves the images {cls.halvings} times with ops that "
                              f"need an even size, so data.image_size must be a multiple of {step} "
                              f"(e.g. {max(step, size // step * step)} or {size // step * step + step}), got {size}")

    input_choice: ClassVar[bool] = False
    """Whether each node chooses its inputs (ENAS micro): every strategy then keeps an input weight β per edge."""
    binary_cell_types: ClassVar[frozenset[str]] = frozenset()
    """Cell types whose every edge is an on/off choice (candidates: the zero op and one other; ENAS macro's skip
    connections). Every strategy weights them as DARTS does (its own weighting: softmax, Gumbel sample) and
    derives them by the space's rule; greedy decisions (SGAS) and op pruning (P-DARTS) leave them alone."""

    @dataclass
    class Config:
        """The space's own config section (named ``config_section``); empty unless a space has options."""

    config_section: ClassVar[Optional[str]] = None

    @classmethod
    def search_defaults(cls, algo: str, preset: str) -> Mapping[str, Any]:
        """Config keys (dotted) a search of ``algo`` on this space sets differently, for ``preset`` (``paper``:
        the official settings of that algorithm on this space; ``quick``: on top of the quick preset)."""
        return {}

    def step_order(self, algo: str, cfg: Any) -> Optional[str]:
        """The step order (``arch_first``/``weights_first``) of ``algo``'s official code on this space, where it
        differs from the algorithm's own; None: the algorithm's own."""
        return None

    final_recipe: ClassVar[Optional[str]] = None
    """The name of the space's own evaluation recipe (set by :meth:`final_defaults`); None: train-final's
    ``--recipe`` (the DARTS-space papers' evaluation scripts) applies to its cells."""

    @classmethod
    def final_defaults(cls, preset: str) -> Mapping[str, Any]:
        """train-final config keys this space's evaluation recipe sets (``paper``), and its quick sizes."""
        return {}

    def __init__(self, cfg: Any = None):
        self.cfg = cfg

    # ------------------------------------------------------------------ configuration
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Raise ConfigError for model settings this space cannot build."""

    @classmethod
    def check_depth(cls, layers: int, what: str) -> None:
        """Raise ConfigError when a network of ``layers`` cells (``what`` names the setting) leaves a searched
        cell type without a cell, so that its architecture parameters could never move."""

    @property
    def topology(self) -> Topology:
        raise NotImplementedError

    def topology_of(self, cell_type: str) -> Topology:
        """The topology of ``cell_type`` (the same for every cell type unless a space says otherwise)."""
        return self.topology

    def ops_of(self, cell_type: str) -> tuple[str, ...]:
        """The candidate ops of ``cell_type``'s edges (``primitives`` unless a space says otherwise)."""
        return tuple(self.primitives)

    # ------------------------------------------------------------------ networks
    def search_op(self, name: str, C: int, stride: int) -> nn.Module:
        """Candidate op ``name`` as the search network uses it."""
        raise NotImplementedError

    def supernet_spec(self, num_classes: int, in_channels: int, edge_ops: Mapping[str, EdgeOps], *,
                      C: Optional[int] = None, layers: Optional[int] = None) -> SupernetSpec:
        """The search network of the run's config with these candidate ops (``C``/``layers`` override)."""
        m = self.cfg.model
        return SupernetSpec(C=int(C if C is not None else m.channels), layers=int(layers if layers is not None
                                                                                 else m.layers),
                            num_classes=num_classes, edge_ops=dict(edge_ops), in_channels=in_channels)

    def all_ops(self) -> dict[str, EdgeOps]:
        """Every candidate op on every edge, for each cell type."""
        return {t: tuple(self.ops_of(t) for _ in range(self.topology_of(t).num_edges)) for t in self.cell_types}

    def build_supernet(self, spec: SupernetSpec, make_edge: EdgeFactory, *, execution: str = "reference",
                       memory_efficient: bool = False) -> nn.Module:
        """The search network: ``forward(x, {cell_type: CellWeights})`` → logits."""
        raise NotImplementedError

    def build_eval_network(self, genotype: Any, *, C: int, layers: int, num_classes: int, auxiliary: bool,
                           in_channels: int = 3, imagenet: bool = False, dropout: float = 0.0,
                           drop_path_by_layer: bool = False) -> nn.Module:
        """The network that trains ``genotype``: ``forward(x)`` → ``(logits, logits_aux or None)``; ``dropout``
        before the classifier; ``drop_path_by_layer``: cell i of n drops paths with ``drop_path_prob·(i+1)/n``
        (a space without drop-path, :attr:`eval_drop_path` false, is never asked for it)."""
        raise NotImplementedError

    eval_drop_path: ClassVar[bool] = True
    """Whether the evaluation network drops paths (train-final refuses ``model.drop_path_prob`` > 0 otherwise)."""

    reference_size: ClassVar[Mapping[str, int]] = {}
    """The paper's evaluation network size (``C``, ``layers``, ``num_classes``) for comparable counts."""

    def reference_params(self, genotype: Any) -> Optional[int]:
        """Parameters of ``genotype``'s evaluation network at the paper's size (None if not defined)."""
        if not self.reference_size:
            return None
        from nasbench.engine.measure import count_params

        net = self.build_eval_network(genotype, auxiliary=False, **self.reference_size)
        return count_params(net, exclude_auxiliary=True)

    # ------------------------------------------------------------------ derive
    def derive_cell(self, weights: torch.Tensor, edge_ops: EdgeOps,
                    edge_scale: Optional[torch.Tensor] = None, cell_type: Optional[str] = None) -> Any:
        """The space's default derive rule for one cell (of ``cell_type``) from op weights [edges, ops]."""
        return derive_top_edges(weights, edge_ops, self.topology, self.zero_op, edge_scale)

    # ------------------------------------------------------------------ genotypes
    def make_genotype(self, cells: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None) -> Any:
        """The genotype of derived ``cells`` ({cell_type: cell, None for a fixed cell})."""
        raise NotImplementedError

    def genotype_from_dict(self, d: Mapping[str, Any]) -> Any:
        """The genotype of a JSON object (validated); raise GenotypeError naming the problem."""
        raise NotImplementedError

    def claims_text(self, text: str) -> bool:
        """Whether ``text`` is in this space's genotype text notation."""
        return False

    def parse_text(self, text: str, name: Optional[str] = None) -> Any:
        raise GenotypeError(f"the {self.name} space has no genotype text notation")

    def format_text(self, genotype: Any) -> str:
        raise NotImplementedError

    def validate(self, genotype: Any) -> Any:
        """Raise GenotypeError naming the first problem; return the genotype when valid."""
        return genotype

    def random_genotype(self, seed: int) -> Any:
        """A genotype drawn uniformly from the space."""
        raise NotImplementedError

    depth_from_genotype: ClassVar[bool] = False
    """Whether a genotype fixes its evaluation network's depth (``model.layers``): train-final then takes the
    genotype's depth, refuses another, and draws ``random:SEED`` genotypes of ``model.layers``
    (``random_genotype(seed, layers=...)``)."""

    def genotype_depth(self, genotype: Any) -> Optional[int]:
        """The depth ``genotype`` fixes (None where the network's depth is free)."""
        return None

    def state_name(self, i: int) -> str:
        """How state ``i`` of a cell is labelled (inputs, then intermediate nodes from 0)."""
        n = self.topology.n_inputs
        return f"in{i}" if i < n else str(i - n)

    def short(self, genotype: Any) -> str:
        """The genotype on one line (the search's per-epoch log)."""
        return self.format_text(genotype)

    def describe(self, genotype: Any) -> tuple[list[str], list[list[str]]]:
        """A table of the genotype (header, rows) for the terminal."""
        raise NotImplementedError

    def notation(self) -> Optional[str]:
        """What the edge notation of :meth:`describe` means (a caption under its table), if anything."""
        return None

    def dot(self, genotype: Any) -> dict[str, str]:
        """Graphviz DOT text of each cell, by a file stem."""
        return {}

    def collapse(self, genotype: Any) -> tuple[dict[str, Any], Optional[str]]:
        """Per-epoch figures of parameter-free dominance, and a warning when a cell has collapsed."""
        return {}, None

    def chosen_ops(self, genotype: Any) -> Optional[list[str]]:
        """Every op the genotype chose, over all its cell types (None where the space does not say)."""
        return None

    def parameter_free_share(self, genotype: Any) -> Optional[float]:
        """The share of the genotype's chosen ops that have no weights (:attr:`parameter_free`): high in the
        known DARTS collapse."""
        ops = self.chosen_ops(genotype)
        return None if not ops else sum(op in self.parameter_free for op in ops) / len(ops)

    def unused_parameters(self, genotype: Any) -> bool:
        """Whether the evaluation network of ``genotype`` has parameters a forward never uses (DDP must know)."""
        return False


# ---------------------------------------------------------------------------------------------- lookups
def create_space(name: str, cfg: Any = None) -> SearchSpace:
    """An instance of the space registered as ``name`` (NasError naming the valid ones otherwise)."""
    return registry.get("space", name)(cfg)


def check_supported(algo_cls: Any, space: str) -> None:
    """One line when an algorithm does not run on a space."""
    supported = getattr(algo_cls, "spaces", None)
    if supported is not None and space not in supported:
        raise ConfigError(f"{algo_cls.name} does not support the {space} space (it runs on: "
                          f"{', '.join(supported)})")
