"""Genotypes: the discrete cells a DARTS-family search derives, and how they are read and written.

A genotype lists, for the normal and the reduction cell, two ``(op, input)`` pairs per intermediate node
in node order. Inputs 0 and 1 are the cell's two inputs (``c_{k-2}``, ``c_{k-1}``); input ``j >= 2`` is
intermediate node ``j - 2``, so node ``i`` (0-based) may read states ``0..i+1``. ``reduce=None`` marks a
genotype whose reduction cell is hand-designed (GDAS-FRC).

Two formats are supported: JSON (:meth:`Genotype.to_dict`, written by
:func:`nasbench.spaces.genotypes.save_genotype`) and the ``Genotype(normal=[...], ...)`` notation of the
original DARTS repositories (:func:`format_genotype_text`, :func:`parse_genotype_text`). The text is
parsed with :mod:`ast` and never evaluated. The cells published by the algorithms' authors are in
:mod:`nasbench.spaces.darts.published`.
"""

from __future__ import annotations

import ast
import random
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

from nasbench.errors import GenotypeError
from nasbench.spaces.genotypes import meta_of, with_meta_keys
from nasbench.spaces.darts.ops import PRIMITIVES, STEPS

Pair = tuple[str, int]
Cell = tuple[Pair, ...]

_CORE_KEYS = ("space", "normal", "normal_concat", "reduce", "reduce_concat")
_FIELD_ORDER = ("normal", "normal_concat", "reduce", "reduce_concat")


# ----------------------------------------------------------------------------------------------------
# The type


def _as_tuple(value: Any) -> Any:
    """A list/tuple as a tuple; anything else unchanged (left for :func:`validate` to reject)."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _as_pairs(value: Any) -> Any:
    """A list of pairs as a tuple of tuples; malformed parts are kept as they are for :func:`validate`."""
    if not isinstance(value, (list, tuple)):
        return value
    return tuple(_as_tuple(p) for p in value)


@dataclass(frozen=True)
class Genotype:
    """The normal and reduction cells of a derived architecture, plus free metadata (``meta``).

    ``meta`` (algorithm, run, epoch, source, ...) does not take part in equality or hashing.
    Construction normalises lists to tuples but does not validate; call :func:`validate` for that.
    """

    normal: Cell
    normal_concat: tuple[int, ...]
    reduce: Cell | None
    reduce_concat: tuple[int, ...]
    space: str = "darts"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "normal", _as_pairs(self.normal))
        object.__setattr__(self, "normal_concat", _as_tuple(self.normal_concat))
        object.__setattr__(self, "reduce", None if self.reduce is None else _as_pairs(self.reduce))
        object.__setattr__(self, "reduce_concat", _as_tuple(self.reduce_concat))
        object.__setattr__(self, "meta", dict(self.meta) if self.meta is not None else {})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; meta keys sit at top level (those clashing with a field go under ``"meta"``)."""
        d: dict[str, Any] = {
            "space": self.space,
            "normal": [[op, idx] for op, idx in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": None if self.reduce is None else [[op, idx] for op, idx in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }
        return with_meta_keys(d, self.meta, _CORE_KEYS)

    @classmethod
    def from_dict(cls, d: Any) -> "Genotype":
        """Inverse of :meth:`to_dict`; unknown top-level keys become ``meta``. Always validates."""
        if not isinstance(d, dict):
            raise GenotypeError(f"a genotype must be a JSON object, got {type(d).__name__}")
        missing = [k for k in _FIELD_ORDER if k not in d]
        if missing:
            raise GenotypeError(f"genotype is missing {', '.join(repr(k) for k in missing)}")
        meta = meta_of(d, _CORE_KEYS)
        g = cls(normal=d["normal"], normal_concat=d["normal_concat"], reduce=d["reduce"],
                reduce_concat=d["reduce_concat"], space=d.get("space", "darts"), meta=meta)
        validate(g)
        return g

    def with_meta(self, **meta: Any) -> "Genotype":
        """A copy with ``meta`` updated by the given keys."""
        return replace(self, meta={**self.meta, **meta})


# ----------------------------------------------------------------------------------------------------
# Validation


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def state_name(i: int) -> str:
    """Name of input state ``i`` as the DARTS plots draw it: ``c_{k-2}``, ``c_{k-1}``, then ``0``, ``1``, ..."""
    if i == 0:
        return "c_{k-2}"
    if i == 1:
        return "c_{k-1}"
    return str(i - 2)


def _check_pair(pair: Any, where: str, node: int, primitives: Sequence[str]) -> None:
    if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str) and _is_int(pair[1])):
        raise GenotypeError(f"{where}: expected an (op name, input index) pair, got {pair!r}")
    op, idx = pair
    if op == "none":
        raise GenotypeError(f"{where}: op 'none' is not allowed in a genotype (it is the zero op, which a "
                            f"derived cell never selects)")
    if op not in primitives:
        valid = ", ".join(p for p in primitives if p != "none")
        raise GenotypeError(f"{where}: unknown op {op!r}; valid ops: {valid}")
    if not 0 <= idx <= node + 1:
        choices = ", ".join(f"{j} ({state_name(j)})" for j in range(node + 2))
        raise GenotypeError(f"{where}: input {idx} is out of range; node {node + 2} may take inputs {choices}")


def check_cell(pairs: Any, cell: str, primitives: Sequence[str], steps: int) -> None:
    """One cell's (op, input) pairs: two per node for ``steps`` nodes, known ops other than 'none', inputs
    among the node's earlier states."""
    if not isinstance(pairs, tuple):
        raise GenotypeError(f"{cell} cell: expected a list of (op, input) pairs, got {pairs!r}")
    if len(pairs) != 2 * steps:
        raise GenotypeError(f"{cell} cell: has {len(pairs)} (op, input) pairs; expected {2 * steps} "
                            f"(two per intermediate node, {steps} nodes)")
    for k, pair in enumerate(pairs):  # nodes by their input index (2..), as the pairs name them
        node = k // 2
        _check_pair(pair, f"{cell} cell, node {node + 2} (pair {k})", node, primitives)


def check_concat(concat: Any, name: str, steps: int) -> None:
    """The states a cell's output concatenates: distinct, each an input or one of ``steps`` nodes."""
    if not isinstance(concat, tuple) or not all(_is_int(c) for c in concat):
        raise GenotypeError(f"{name}: expected a list of state indices, got {concat!r}")
    if not concat:
        raise GenotypeError(f"{name}: is empty; it must name at least one state to concatenate")
    for c in concat:
        if not 0 <= c <= steps + 1:
            raise GenotypeError(f"{name}: index {c} is out of range; valid states are 0..{steps + 1}")
    if len(set(concat)) != len(concat):
        raise GenotypeError(f"{name}: repeats a state: {list(concat)}")


def validate(g: Genotype, primitives: Sequence[str] = PRIMITIVES, steps: int = STEPS) -> Genotype:
    """Raise :class:`GenotypeError` naming the first problem in ``g``; return ``g`` when it is valid."""
    if g.space != "darts":
        raise GenotypeError(f"a genotype of the {g.space!r} space is not a darts genotype")
    if not isinstance(g.meta, dict):
        raise GenotypeError(f"genotype meta must be a dict, got {type(g.meta).__name__}")
    check_cell(g.normal, "normal", primitives, steps)
    check_concat(g.normal_concat, "normal_concat", steps)
    if g.reduce is not None:
        check_cell(g.reduce, "reduce", primitives, steps)
    check_concat(g.reduce_concat, "reduce_concat", steps)
    return g


# ----------------------------------------------------------------------------------------------------
# Cells for display


def cell_pairs(g: Genotype, cell: str) -> Cell | None:
    """The pairs of ``cell`` (``"normal"`` or ``"reduce"``; None for a hand-designed reduction cell)."""
    if cell not in ("normal", "reduce"):
        raise GenotypeError(f"unknown cell {cell!r}; choose normal or reduce")
    return g.normal if cell == "normal" else g.reduce


def describe_cell(pairs: Iterable[Pair]) -> list[tuple[int, str, int]]:
    """Rows ``(node_index, op, input)`` of a cell, two per node; render inputs with :func:`state_name`."""
    return [(k // 2, op, idx) for k, (op, idx) in enumerate(pairs)]


# ----------------------------------------------------------------------------------------------------
# Text notation (the original DARTS repositories' genotypes.py)


def _format_cell(pairs: Cell | None) -> str:
    if pairs is None:
        return "None"
    return "[" + ", ".join(f"({op!r}, {idx})" for op, idx in pairs) + "]"


def format_genotype_text(g: Genotype) -> str:
    """``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=..., ...)``."""
    return (f"Genotype(normal={_format_cell(g.normal)}, normal_concat={list(g.normal_concat)}, "
            f"reduce={_format_cell(g.reduce)}, reduce_concat={list(g.reduce_concat)})")


def _not_literal(node: ast.AST, what: str) -> GenotypeError:
    """The error for anything in genotype text that is not a plain literal."""
    if isinstance(node, ast.Call):
        kind = f"a call to {ast.unparse(node.func)}"
    elif isinstance(node, ast.Attribute):
        kind = "attribute access"
    elif isinstance(node, (ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare)):
        kind = "arithmetic or an operator"
    elif isinstance(node, ast.Name):
        kind = f"the name {node.id!r}"
    else:
        kind = type(node).__name__
    snippet = ast.unparse(node)
    snippet = snippet if len(snippet) <= 60 else snippet[:57] + "..."
    line = getattr(node, "lineno", "?")
    return GenotypeError(f"genotype text is not evaluated as code; only literals are allowed, but {what} at "
                         f"line {line} is {kind}: {snippet}")


def _int_literal(node: ast.AST, what: str) -> int:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and _is_int(node.operand.value):
        return -node.operand.value
    if not isinstance(node, ast.Constant):
        raise _not_literal(node, what)
    if not _is_int(node.value):
        raise GenotypeError(f"{what} at line {node.lineno}: expected an int, got {node.value!r}")
    return node.value


def _str_literal(node: ast.AST, what: str) -> str:
    if not isinstance(node, ast.Constant):
        raise _not_literal(node, what)
    if not isinstance(node.value, str):
        raise GenotypeError(f"{what} at line {node.lineno}: expected an op name string, got {node.value!r}")
    return node.value


def _cell_literal(node: ast.AST, what: str) -> list[Pair] | None:
    """A list/tuple of 2-tuples ``('op', int)``, or ``None``."""
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if not isinstance(node, (ast.List, ast.Tuple)):
        raise _not_literal(node, what)
    pairs = []
    for k, elt in enumerate(node.elts):
        where = f"{what}[{k}]"
        if not isinstance(elt, (ast.Tuple, ast.List)):
            raise _not_literal(elt, where)
        if len(elt.elts) != 2:
            raise GenotypeError(f"{where} at line {elt.lineno}: expected an (op, input) pair, "
                                f"got {len(elt.elts)} items")
        pairs.append((_str_literal(elt.elts[0], where), _int_literal(elt.elts[1], where)))
    return pairs


def _is_call_to(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


def _concat_literal(node: ast.AST, what: str) -> list[int]:
    """A list/tuple of ints, ``range(a, b)`` or ``list(range(a, b))``."""
    if _is_call_to(node, "list") and len(node.args) == 1 and not node.keywords \
            and _is_call_to(node.args[0], "range"):
        node = node.args[0]
    if _is_call_to(node, "range"):
        if not 1 <= len(node.args) <= 3 or node.keywords:
            raise GenotypeError(f"{what} at line {node.lineno}: range() takes 1 to 3 int arguments")
        return list(range(*(_int_literal(a, what) for a in node.args)))
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_int_literal(e, what) for e in node.elts]
    raise _not_literal(node, what)


def _call_fields(call: ast.Call) -> dict[str, ast.AST]:
    """Map the ``Genotype(...)`` arguments, positional or keyword, to field names."""
    if len(call.args) > len(_FIELD_ORDER):
        raise GenotypeError(f"Genotype(...) at line {call.lineno} has {len(call.args)} positional arguments; "
                            f"at most {len(_FIELD_ORDER)}")
    fields: dict[str, ast.AST] = {}
    for name, arg in zip(_FIELD_ORDER, call.args):
        if isinstance(arg, ast.Starred):
            raise _not_literal(arg, "an argument")
        fields[name] = arg
    for kw in call.keywords:
        if kw.arg is None:
            raise _not_literal(kw.value, "a **keyword argument")
        if kw.arg not in _FIELD_ORDER:
            raise GenotypeError(f"Genotype(...) at line {call.lineno}: unknown field {kw.arg!r}; "
                                f"fields: {', '.join(_FIELD_ORDER)}")
        if kw.arg in fields:
            raise GenotypeError(f"Genotype(...) at line {call.lineno}: {kw.arg!r} is given twice")
        fields[kw.arg] = kw.value
    missing = [f for f in _FIELD_ORDER if f not in fields]
    if missing:
        raise GenotypeError(f"Genotype(...) at line {call.lineno} is missing {', '.join(missing)}")
    return fields


def _genotype_from_call(call: ast.Call, name: str | None) -> Genotype:
    f = _call_fields(call)
    normal = _cell_literal(f["normal"], "normal")
    if normal is None:
        raise GenotypeError(f"normal at line {call.lineno}: the normal cell cannot be None")
    g = Genotype(normal=normal, normal_concat=_concat_literal(f["normal_concat"], "normal_concat"),
                 reduce=_cell_literal(f["reduce"], "reduce"),
                 reduce_concat=_concat_literal(f["reduce_concat"], "reduce_concat"),
                 meta={"name": name} if name else {})
    try:
        return validate(g)
    except GenotypeError as e:
        label = name or f"Genotype(...) at line {call.lineno}"
        raise GenotypeError(f"{label}: {e}") from None


def _is_plain_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)  # parses literals only; never executes anything
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _collect_genotypes(tree: ast.Module) -> list[tuple[str | None, ast.Call]]:
    """``(name, call)`` for each ``Genotype(...)`` statement; aliases (``A = B``) repeat B's call."""
    found: list[tuple[str | None, ast.Call]] = []
    by_name: dict[str, ast.Call] = {}
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            continue  # e.g. ``from collections import namedtuple``; nothing is imported
        if isinstance(stmt, ast.Expr):
            if _is_call_to(stmt.value, "Genotype"):
                found.append((None, stmt.value))
            elif not (isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)):
                raise _not_literal(stmt.value, "a statement")
            continue
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            target, value = stmt.targets[0].id, stmt.value
            if _is_call_to(value, "Genotype"):
                found.append((target, value))
                by_name[target] = value
            elif isinstance(value, ast.Name) and value.id in by_name:
                found.append((target, by_name[value.id]))
                by_name[target] = by_name[value.id]
            elif not (_is_call_to(value, "namedtuple") or _is_plain_literal(value)):
                raise _not_literal(value, f"the value of {target}")
            continue
        raise _not_literal(stmt, "a statement")
    return found


def _names_list(found: list[tuple[str | None, ast.Call]]) -> str:
    return ", ".join(n if n else f"<unnamed, line {c.lineno}>" for n, c in found)


def parse_genotype_text(text: str, name: str | None = None) -> Genotype:
    """Read ``Genotype(...)`` notation (bare, or ``NAME = Genotype(...)`` lines) without evaluating it.

    With several genotypes in ``text``, ``name`` picks one. The result is validated.
    """
    try:
        tree = ast.parse(text, mode="exec")
    except SyntaxError as e:
        raise GenotypeError(f"genotype text has a syntax error at line {e.lineno}: {e.msg}") from None
    found = _collect_genotypes(tree)
    if not found:
        raise GenotypeError("no Genotype(...) found in the text")
    if name is not None:
        chosen = [(n, c) for n, c in found if n == name]
        if not chosen:
            raise GenotypeError(f"no genotype named {name!r} in the text; genotypes found: {_names_list(found)}")
    elif len({id(c) for _, c in found}) == 1:
        chosen = found[:1]
    else:
        raise GenotypeError(f"the text holds {len(found)} genotypes; pick one by name: {_names_list(found)}")
    return _genotype_from_call(chosen[0][1], chosen[0][0])


# ----------------------------------------------------------------------------------------------------
# Random cells


def random_genotype(seed: int, steps: int = STEPS) -> Genotype:
    """A cell drawn uniformly from the DARTS space: per node two distinct inputs and two non-'none' ops."""
    rng = random.Random(seed)
    ops = [p for p in PRIMITIVES if p != "none"]

    def cell() -> tuple:
        pairs = []
        for node in range(steps):
            for j in sorted(rng.sample(range(node + 2), 2)):
                pairs.append((rng.choice(ops), j))
        return tuple(pairs)

    concat = tuple(range(2, steps + 2))
    return validate(Genotype(cell(), concat, cell(), concat, meta={"source": f"random (seed {seed})"}))
