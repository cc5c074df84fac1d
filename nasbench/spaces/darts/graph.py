"""DARTS cells as graphs, in the style of the DARTS papers' figures.

Inputs ``c_{k-2}`` and ``c_{k-1}`` are dark-green boxes, intermediate nodes ``0``, ``1``, ... light-blue
boxes, the output ``c_{k}`` a yellow box fed by the concatenated nodes; every kept edge carries its op name.
"""

from __future__ import annotations

from typing import Optional

from nasbench.spaces.darts.genotype import Genotype
from nasbench.spaces.dot import preamble, quote


def cell_dot(cell: Optional[list] | tuple, concat: tuple[int, ...] | list[int], name: str) -> str:
    """DOT text of one cell (``cell`` is a sequence of (op, input) pairs, two per intermediate node)."""
    lines = [*preamble(name),
             '  "c_{k-2}" [fillcolor=darkseagreen2];',
             '  "c_{k-1}" [fillcolor=darkseagreen2];']
    if cell is None:
        lines.append('  "fixed" [label="hand-designed reduction cell (fixed)", fillcolor=lightgray];')
        lines.append('  "c_{k-2}" -> "fixed"; "c_{k-1}" -> "fixed";')
        lines.append('  "c_{k}" [fillcolor=palegoldenrod];')
        lines.append('  "fixed" -> "c_{k}";')
        lines.append("}")
        return "\n".join(lines) + "\n"
    steps = len(cell) // 2
    for i in range(steps):
        lines.append(f'  "{i}" [fillcolor=lightblue];')
    for k, (op, j) in enumerate(cell):
        dst = str(k // 2)
        src = "c_{k-2}" if j == 0 else "c_{k-1}" if j == 1 else str(j - 2)
        lines.append(f"  {quote(src)} -> {quote(dst)} [label={quote(op)}, fillcolor=gray];")
    lines.append('  "c_{k}" [fillcolor=palegoldenrod];')
    for c in concat:
        if c >= 2:
            lines.append(f'  "{c - 2}" -> "c_{{k}}" [fillcolor=gray];')
        else:
            lines.append(f'  {quote("c_{k-2}" if c == 0 else "c_{k-1}")} -> "c_{{k}}" [fillcolor=gray];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def genotype_dots(g: Genotype) -> dict[str, str]:
    """``{"normal": DOT, "reduce": DOT}``."""
    return {"normal": cell_dot(g.normal, g.normal_concat, "normal cell"),
            "reduce": cell_dot(g.reduce, g.reduce_concat, "reduction cell")}
