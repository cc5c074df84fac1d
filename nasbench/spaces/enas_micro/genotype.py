"""ENAS micro genotypes: a normal and a reduction cell, each a list of nodes with two (op, input) pairs.

States 0 and 1 are the cell's inputs (the outputs of the cell before the previous one and of the previous
one), state ``i + 2`` is node ``i``: node ``i`` takes two inputs among states ``0 .. i+1``, applies one op to
each and sums them. The two inputs may be the same state (ENAS draws them independently). The cell's output
combines its loose ends, the states no node takes as input (:func:`loose_ends`).

JSON: ``{"space": "enas-micro", "normal": [[[op, input], [op, input]], ...], "reduce": [...]}`` plus free
metadata. The text notation lists a cell's nodes between bars, each node's two pairs as ``op<-input``::

    normal: sep_conv_3x3<-0 avg_pool_3x3<-1 | skip_connect<-0 sep_conv_5x5<-2 | ...
    reduce: max_pool_3x3<-1 sep_conv_3x3<-1 | ...

(one line per cell, or both on one line joined by ``;``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Sequence

from nasbench.errors import GenotypeError
from nasbench.spaces.enas_micro.ops import NODES, PRIMITIVES, TF_OP_IDS
from nasbench.spaces.genotypes import meta_of, with_meta_keys

SPACE = "enas-micro"
CELL_TYPES = ("normal", "reduce")
INPUTS = 2

Pair = tuple[str, int]
Node = tuple[Pair, Pair]

_CORE_KEYS = ("space", "normal", "reduce")
EXAMPLE = "normal: sep_conv_3x3<-0 avg_pool_3x3<-1 | skip_connect<-2 sep_conv_5x5<-0 ..."


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _tuples(x: Any) -> Any:
    """Lists as tuples, recursively (malformed parts kept for the validation to report)."""
    if isinstance(x, (list, tuple)):
        return tuple(_tuples(v) for v in x)
    return x


@dataclass(frozen=True)
class EnasMicroGenotype:
    """``normal[i]``/``reduce[i]``: node ``i``'s two ``(op, input)`` pairs; ``meta`` takes no part in equality.
    Construction turns lists into tuples and does not validate (:func:`validate` does)."""

    normal: tuple[Node, ...]
    reduce: tuple[Node, ...]
    space: str = SPACE
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "normal", _tuples(self.normal))
        object.__setattr__(self, "reduce", _tuples(self.reduce))
        object.__setattr__(self, "meta", dict(self.meta) if self.meta is not None else {})

    def cell(self, cell_type: str) -> tuple[Node, ...]:
        return self.normal if cell_type == "normal" else self.reduce

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"space": self.space, "text": format_text(self, one_line=True)}
        for t in CELL_TYPES:
            d[t] = [[[op, j] for op, j in node] for node in self.cell(t)]
        return with_meta_keys(d, self.meta, _CORE_KEYS + ("text",))

    @classmethod
    def from_dict(cls, d: Any) -> "EnasMicroGenotype":
        """Inverse of :meth:`to_dict`: ``normal`` and ``reduce``, or ``text``, or both (which must agree); other
        keys become ``meta``. Always validates."""
        if not isinstance(d, Mapping):
            raise GenotypeError(f"a genotype must be a JSON object, got {type(d).__name__}")
        if d.get("space", SPACE) != SPACE:
            raise GenotypeError(f"a genotype of the {d.get('space')!r} space is not an {SPACE} genotype")
        meta = meta_of(d, _CORE_KEYS + ("text",))
        if "normal" in d or "reduce" in d:
            for t in CELL_TYPES:
                if t not in d:
                    raise GenotypeError(f"an {SPACE} genotype needs both 'normal' and 'reduce'; '{t}' is missing")
            g = validate(cls(normal=d["normal"], reduce=d["reduce"], meta=meta))
            if "text" in d and parse_text(d["text"]) != g:
                raise GenotypeError(f"'text' and 'normal'/'reduce' describe different cells "
                                    f"(normal/reduce: {format_text(g, one_line=True)})")
            return g
        if "text" in d:
            return parse_text(d["text"]).with_meta(**meta)
        raise GenotypeError(f"an {SPACE} genotype needs 'normal' and 'reduce' (or 'text')")

    def with_meta(self, **meta: Any) -> "EnasMicroGenotype":
        return replace(self, meta={**self.meta, **meta})


# ---------------------------------------------------------------------------------------------- validation
def state_name(i: int) -> str:
    """States 0 and 1 are the inputs ``in0`` (c_{k-2}) and ``in1`` (c_{k-1}); node ``i`` is state ``i+2``."""
    return f"in{i}" if i < INPUTS else str(i - INPUTS)


def check_cell(cell: Any, cell_type: str) -> None:
    """At least one node; node ``i`` has exactly two pairs of a known op and an input among ``0 .. i+1``."""
    if not isinstance(cell, tuple) or not cell:
        raise GenotypeError(f"{cell_type} cell: expected a non-empty list of nodes, got {cell!r}")
    for i, node in enumerate(cell):
        where = f"{cell_type} cell, node {i}"
        if not isinstance(node, tuple) or len(node) != 2:
            raise GenotypeError(f"{where}: expected two (op, input) pairs, got {node!r}")
        for p in node:
            if not (isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) and _is_int(p[1])):
                raise GenotypeError(f"{where}: expected an (op name, input index) pair, got {p!r}")
            op, j = p
            if op not in PRIMITIVES:
                raise GenotypeError(f"{where}: unknown op {op!r}; ops: {', '.join(PRIMITIVES)}")
            if not 0 <= j < i + INPUTS:
                raise GenotypeError(f"{where}: input {j} is out of range; node {i} takes inputs 0..{i + 1} "
                                    f"(0, 1: the cell inputs, 2..: the earlier nodes)")


def validate(g: Any) -> EnasMicroGenotype:
    """Raise :class:`GenotypeError` naming the first problem; return ``g`` when it is valid."""
    if not isinstance(g, EnasMicroGenotype):
        raise GenotypeError(f"not an {SPACE} genotype: {type(g).__name__}")
    if g.space != SPACE:
        raise GenotypeError(f"a genotype of the {g.space!r} space is not an {SPACE} genotype")
    if not isinstance(g.meta, dict):
        raise GenotypeError(f"genotype meta must be a dict, got {type(g.meta).__name__}")
    for t in CELL_TYPES:
        check_cell(g.cell(t), t)
    return g


def loose_ends(cell: Sequence[Node]) -> list[int]:
    """The states no node takes as input, in state order (the cell's output combines them; the last node
    is always one)."""
    used = {j for node in cell for _, j in node}
    return [k for k in range(len(cell) + INPUTS) if k not in used]


# ---------------------------------------------------------------------------------------------- text
def format_cell(cell: Sequence[Node]) -> str:
    return " | ".join(" ".join(f"{op}<-{j}" for op, j in node) for node in cell)


def format_text(g: EnasMicroGenotype, one_line: bool = False) -> str:
    lines = [f"{t}: {format_cell(g.cell(t))}" for t in CELL_TYPES]
    return "; ".join(lines) if one_line else "\n".join(lines) + "\n"


def claims_text(text: Any) -> bool:
    return isinstance(text, str) and text.lstrip().startswith(("normal:", "reduce:"))


def parse_text(text: Any, name: Optional[str] = None) -> EnasMicroGenotype:
    """A genotype from the text notation (see the module docstring), validated."""
    if not isinstance(text, str):
        raise GenotypeError(f"an {SPACE} genotype text must be a str, got {type(text).__name__}")
    cells: dict[str, Any] = {}
    parts = [p.strip() for line in text.strip().splitlines() for p in line.split(";") if p.strip()]
    if not parts:
        raise GenotypeError(f"the {SPACE} genotype text is empty; expected e.g. {EXAMPLE}")
    for part in parts:
        t, sep, body = part.partition(":")
        t = t.strip()
        if not sep or t not in CELL_TYPES:
            raise GenotypeError(f"{part[:60]!r}: a line must start with 'normal:' or 'reduce:' (e.g. {EXAMPLE})")
        if t in cells:
            raise GenotypeError(f"the {t} cell is given twice")
        nodes = []
        for i, node_text in enumerate(body.split("|")):
            entries = node_text.split()
            if len(entries) != 2:
                raise GenotypeError(f"{t} cell, node {i}: expected two op<-input entries, got {node_text.strip()!r}")
            pairs = []
            for entry in entries:
                op, sep2, idx = entry.partition("<-")
                if not sep2 or not (idx.isascii() and idx.isdigit()):
                    raise GenotypeError(f"{t} cell, node {i}: {entry!r} is not op<-input (an input index)")
                pairs.append((op, int(idx)))
            nodes.append(tuple(pairs))
        cells[t] = tuple(nodes)
    for t in CELL_TYPES:
        if t not in cells:
            raise GenotypeError(f"the {t} cell is missing (a line '{t}: ...')")
    return validate(EnasMicroGenotype(normal=cells["normal"], reduce=cells["reduce"],
                                      meta={"name": name} if name else {}))


def from_tf_arc(normal: str, reduce: str, meta: Optional[Mapping[str, Any]] = None) -> EnasMicroGenotype:
    """A genotype from the ENAS TensorFlow code's architecture strings: per node ``x_id x_op y_id y_op``
    (op ids in :data:`~nasbench.spaces.enas_micro.ops.PRIMITIVES` order)."""
    names = {k: name for name, k in TF_OP_IDS.items()}

    def cell(arc: str) -> tuple:
        ids = [int(v) for v in arc.split()]
        if len(ids) % 4:
            raise GenotypeError(f"an ENAS architecture string has 4 numbers per node, got {len(ids)}")
        return tuple(((names.get(ids[k + 1], str(ids[k + 1])), ids[k]), (names.get(ids[k + 3], str(ids[k + 3])),
                                                                         ids[k + 2])) for k in range(0, len(ids), 4))

    return validate(EnasMicroGenotype(normal=cell(normal), reduce=cell(reduce), meta=dict(meta or {})))


# ---------------------------------------------------------------------------------------------- derive, random
def cells_from_pairs(cells: Mapping[str, Sequence[Any]], meta: Optional[Mapping[str, Any]] = None
                     ) -> EnasMicroGenotype:
    """The genotype of each cell type's ``(op, input)`` pairs, two per node in node order (what derive returns)."""
    nodes = {}
    for t in CELL_TYPES:
        pairs = [tuple(p) for p in cells[t]]
        if len(pairs) % 2:
            raise GenotypeError(f"{t} cell: derive gave {len(pairs)} (op, input) pairs, not two per node")
        nodes[t] = tuple((pairs[k], pairs[k + 1]) for k in range(0, len(pairs), 2))
    return validate(EnasMicroGenotype(normal=nodes["normal"], reduce=nodes["reduce"], meta=dict(meta or {})))


def random_genotype(seed: int, nodes: int = NODES) -> EnasMicroGenotype:
    """Both cells drawn uniformly: every node's two inputs (independently, as ENAS's controller may draw the
    same one twice) and ops."""
    rng = random.Random(seed)

    def cell() -> tuple:
        return tuple(tuple((rng.choice(PRIMITIVES), rng.randrange(i + INPUTS)) for _ in range(2))
                     for i in range(nodes))

    normal = cell()
    return validate(EnasMicroGenotype(normal=normal, reduce=cell(), meta={"source": f"random (seed {seed})"}))


def space_size(nodes: int = NODES) -> int:
    """Cells of one type: Π_i ((i+2)·5)² over the nodes (ordered pairs, as ENAS's controller samples them)."""
    n = 1
    for i in range(nodes):
        n *= ((i + INPUTS) * len(PRIMITIVES)) ** 2
    return n
