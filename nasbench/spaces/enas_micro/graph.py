"""ENAS micro cells as DOT graphs, in the style of the DARTS space's drawings: the inputs dark green, the
nodes light blue, the output (combining the loose ends) yellow; each edge carries its op."""

from __future__ import annotations

from nasbench.spaces.dot import preamble, quote
from nasbench.spaces.enas_micro.genotype import CELL_TYPES, EnasMicroGenotype, loose_ends

_INPUT_LABELS = ("c_{k-2}", "c_{k-1}")


def _label(k: int) -> str:
    return _INPUT_LABELS[k] if k < 2 else str(k - 2)


def cell_dot(cell, name: str) -> str:
    lines = [*preamble(name)]
    for k in range(2):
        lines.append(f"  {quote(_label(k))} [fillcolor=darkseagreen2];")
    for i in range(len(cell)):
        lines.append(f"  {quote(_label(i + 2))} [fillcolor=lightblue];")
    for i, node in enumerate(cell):
        for op, j in node:
            lines.append(f"  {quote(_label(j))} -> {quote(_label(i + 2))} [label={quote(op)}, fillcolor=gray];")
    lines.append(f"  {quote('c_{k}')} [fillcolor=palegoldenrod];")
    for k in loose_ends(cell):
        lines.append(f"  {quote(_label(k))} -> {quote('c_{k}')} [fillcolor=gray];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def genotype_dots(g: EnasMicroGenotype) -> dict[str, str]:
    """``{"normal": DOT, "reduce": DOT}``."""
    return {t: cell_dot(g.cell(t), "normal cell" if t == "normal" else "reduction cell") for t in CELL_TYPES}
