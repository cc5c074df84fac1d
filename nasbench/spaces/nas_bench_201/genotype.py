"""NAS-Bench-201 genotypes: one cell, and the benchmark's architecture string.

A cell has the input state 0 and nodes 1, 2, 3; node ``i`` sums one op on every earlier state
``0 .. i-1`` (6 edges), and the cell's output is node 3. A genotype lists, per node, its ``(op, input)``
pairs ordered by input; ``none`` is a valid op (the edge is absent), so the space holds 5^6 = 15,625 cells.

The text notation is the benchmark's (the official ``Structure.tostr``), nodes joined by ``+``, each
node's pairs ``op~input`` between bars::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|

Reading accepts a node's pairs in any order; writing orders them by input.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from nasbench.errors import GenotypeError
from nasbench.spaces.genotypes import meta_of, with_meta_keys
from nasbench.spaces.nas_bench_201.ops import NODES, PRIMITIVES

SPACE = "nas-bench-201"

Pair = tuple[str, int]
Node = tuple[Pair, ...]

_CORE_KEYS = ("space", "arch", "nodes")
EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_pair(p: Any) -> bool:
    return isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) and _is_int(p[1])


def _normalise_nodes(nodes: Any) -> Any:
    """Lists as tuples and each well-formed node's pairs ordered by input; anything malformed is kept as it
    is for :func:`check_nodes` to report."""
    if not isinstance(nodes, (list, tuple)):
        return nodes
    out = []
    for node in nodes:
        if isinstance(node, (list, tuple)):
            node = tuple(tuple(p) if isinstance(p, (list, tuple)) else p for p in node)
            if all(_is_pair(p) for p in node):
                node = tuple(sorted(node, key=lambda p: p[1]))
        out.append(node)
    return tuple(out)


@dataclass(frozen=True)
class Nb201Genotype:
    """A NAS-Bench-201 cell (``nodes[i-1]`` holds node ``i``'s ``(op, input)`` pairs) and free metadata.

    ``meta`` (algorithm, run, epoch, source, ...) takes no part in equality or hashing. Construction
    normalises lists to tuples and orders each node's pairs by input; it does not validate
    (:func:`validate` does).
    """

    nodes: tuple[Node, ...]
    space: str = SPACE
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", _normalise_nodes(self.nodes))
        object.__setattr__(self, "meta", dict(self.meta) if self.meta is not None else {})

    @property
    def edges(self) -> list[tuple[str, int, int]]:
        """``(op, input, node)`` of every edge, in the supernet's edge order (1←0, 2←0, 2←1, 3←0, ...)."""
        return [(op, j, i) for i, node in enumerate(self.nodes, start=1) for op, j in node]

    def arch_str(self) -> str:
        """The benchmark's architecture string."""
        return format_text(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``space``, ``arch`` (the string), ``nodes`` (per node ``[op, input]`` pairs), and the
        meta keys at top level (those clashing with a field go under ``"meta"``)."""
        d: dict[str, Any] = {"space": self.space, "arch": format_text(self),
                             "nodes": [[[op, j] for op, j in node] for node in self.nodes]}
        return with_meta_keys(d, self.meta, _CORE_KEYS)

    @classmethod
    def from_dict(cls, d: Any) -> "Nb201Genotype":
        """Inverse of :meth:`to_dict` (``nodes``, ``arch`` or both, which must then agree); unknown keys
        become ``meta``. Always validates."""
        if not isinstance(d, Mapping):
            raise GenotypeError(f"a genotype must be a JSON object, got {type(d).__name__}")
        if d.get("space", SPACE) != SPACE:
            raise GenotypeError(f"a genotype of the {d.get('space')!r} space is not a {SPACE} genotype")
        if "nodes" not in d and "arch" not in d:
            raise GenotypeError(f"a {SPACE} genotype needs 'arch' (the architecture string) or 'nodes'")
        meta = meta_of(d, _CORE_KEYS)
        if "nodes" in d:
            g = validate(cls(nodes=d["nodes"], meta=meta))
            if "arch" in d:
                from_arch = parse_text(d["arch"])
                if from_arch != g:
                    raise GenotypeError(f"'arch' {d['arch']!r} and 'nodes' describe different cells "
                                        f"(nodes: {format_text(g)})")
            return g
        return parse_text(d["arch"]).with_meta(**meta)

    def with_meta(self, **meta: Any) -> "Nb201Genotype":
        """A copy with ``meta`` updated by the given keys."""
        return replace(self, meta={**self.meta, **meta})


# ---------------------------------------------------------------------------------------------- validation
def state_name(i: int) -> str:
    """State 0 is the cell's input (``in``); nodes go by their number."""
    return "in" if i == 0 else str(i)


def _check_node(node: Any, i: int) -> None:
    where = f"node {i}"
    if not isinstance(node, tuple):
        raise GenotypeError(f"{where}: expected a list of (op, input) pairs, got {node!r}")
    seen: set[int] = set()
    for p in node:
        if not _is_pair(p):
            raise GenotypeError(f"{where}: expected an (op name, input index) pair, got {p!r}")
        op, j = p
        if op not in PRIMITIVES:
            raise GenotypeError(f"{where}: unknown op {op!r}; ops: {', '.join(PRIMITIVES)}")
        if not 0 <= j < i:
            raise GenotypeError(f"{where}: input {j} is out of range; node {i} takes inputs 0..{i - 1}")
        if j in seen:
            raise GenotypeError(f"{where}: input {j} appears twice (one op per input)")
        seen.add(j)
    missing = [j for j in range(i) if j not in seen]
    if missing:
        raise GenotypeError(f"{where}: no op for input {missing[0]} (node {i} takes one op from each of inputs "
                            f"0..{i - 1}; write 'none' for no connection)")


def check_nodes(nodes: Any) -> None:
    """Three nodes; node ``i`` has exactly one known op for each input ``0 .. i-1``."""
    if not isinstance(nodes, tuple):
        raise GenotypeError(f"expected a list of {NODES} nodes, got {nodes!r}")
    if len(nodes) != NODES:
        raise GenotypeError(f"has {len(nodes)} nodes; a {SPACE} cell has {NODES}")
    for i, node in enumerate(nodes, start=1):
        _check_node(node, i)


def validate(g: Nb201Genotype) -> Nb201Genotype:
    """Raise :class:`GenotypeError` naming the first problem in ``g``; return ``g`` when it is valid."""
    if not isinstance(g, Nb201Genotype):
        raise GenotypeError(f"not a {SPACE} genotype: {type(g).__name__}")
    if g.space != SPACE:
        raise GenotypeError(f"a genotype of the {g.space!r} space is not a {SPACE} genotype")
    if not isinstance(g.meta, dict):
        raise GenotypeError(f"genotype meta must be a dict, got {type(g.meta).__name__}")
    check_nodes(g.nodes)
    return g


# ---------------------------------------------------------------------------------------------- text
def format_text(g: Nb201Genotype) -> str:
    """The benchmark's architecture string (``Structure.tostr``)."""
    return "+".join("|" + "|".join(f"{op}~{j}" for op, j in node) + "|" for node in g.nodes)


def claims_text(text: Any) -> bool:
    return isinstance(text, str) and text.lstrip().startswith("|")


def parse_text(text: Any, name: str | None = None) -> Nb201Genotype:
    """A genotype from the benchmark's architecture string (surrounding whitespace ignored), validated."""
    if not isinstance(text, str):
        raise GenotypeError(f"a {SPACE} architecture string must be a str, got {type(text).__name__}")
    s = text.strip()
    label = f"architecture string {s!r}" if len(s) <= 120 else "architecture string"
    try:
        nodes = _parse_nodes(s)
        g = validate(Nb201Genotype(nodes=nodes, meta={"name": name} if name else {}))
    except GenotypeError as e:
        raise GenotypeError(f"{label}: {e}") from None
    return g


def _parse_nodes(s: str) -> tuple:
    if not s:
        raise GenotypeError(f"is empty; expected e.g. {EXAMPLE}")
    parts = s.split("+")
    if len(parts) != NODES:
        raise GenotypeError(f"has {len(parts)} nodes; a {SPACE} cell has {NODES}, joined by '+' "
                            f"(e.g. {EXAMPLE})")
    nodes = []
    for i, part in enumerate(parts, start=1):
        if len(part) < 2 or not (part.startswith("|") and part.endswith("|")):
            raise GenotypeError(f"node {i}: {part!r} must be op~input entries between bars, like "
                                f"'|none~0|skip_connect~1|'")
        pairs = []
        for entry in part[1:-1].split("|"):
            if not entry:
                raise GenotypeError(f"node {i}: an empty entry in {part!r}")
            op, sep, idx = entry.partition("~")
            if not sep or "~" in idx:
                raise GenotypeError(f"node {i}: {entry!r} is not op~input")
            if not (idx.isascii() and idx.isdigit()):
                raise GenotypeError(f"node {i}: the input of {entry!r} is not a state index (0..{i - 1})")
            pairs.append((op, int(idx)))
        nodes.append(tuple(pairs))
    return tuple(nodes)


# ---------------------------------------------------------------------------------------------- derive, random
def cell_from_edges(pairs: Sequence[Any], meta: Mapping[str, Any] | None = None) -> Nb201Genotype:
    """The genotype of the ``(op, input)`` pairs of the 6 edges in edge order (what derive returns)."""
    pairs = [tuple(p) if isinstance(p, (list, tuple)) else p for p in pairs]
    if len(pairs) != NODES * (NODES + 1) // 2:
        raise GenotypeError(f"a {SPACE} cell has {NODES * (NODES + 1) // 2} edges, got {len(pairs)} (op, input) "
                            "pairs")
    nodes, k = [], 0
    for i in range(1, NODES + 1):
        nodes.append(tuple(pairs[k:k + i]))
        k += i
    return validate(Nb201Genotype(nodes=tuple(nodes), meta=dict(meta or {})))


def random_genotype(seed: int) -> Nb201Genotype:
    """A cell drawn uniformly from the 5^6 cells (every edge's op independently, ``none`` included)."""
    rng = random.Random(seed)
    nodes = tuple(tuple((rng.choice(PRIMITIVES), j) for j in range(i)) for i in range(1, NODES + 1))
    return validate(Nb201Genotype(nodes=nodes, meta={"source": f"random (seed {seed})"}))


# ---------------------------------------------------------------------------------------------- analysis
def live_states(g: Nb201Genotype) -> set[int]:
    """States that carry a signal from the input: 0, and a node with a non-``none`` edge from a live state."""
    live = {0}
    for op, j, i in g.edges:
        if op != "none" and j in live:
            live.add(i)
    return live


def reaches_output(g: Nb201Genotype) -> set[int]:
    """States with a path of non-``none`` edges to the output (node 3), the output included."""
    reach = {NODES}
    for op, j, i in reversed(g.edges):
        if op != "none" and i in reach:
            reach.add(j)
    return reach
