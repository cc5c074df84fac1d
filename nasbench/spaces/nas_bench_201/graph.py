"""A NAS-Bench-201 cell as a DOT graph, in the style of the DARTS space's drawings.

The input ``in`` is a dark-green box, nodes 1 and 2 light-blue boxes, node 3 (the cell's output) a yellow
box; every edge carries its op name, ``none`` edges are dashed and grey (no connection).
"""

from __future__ import annotations

from nasbench.spaces.nas_bench_201.genotype import Nb201Genotype, state_name
from nasbench.spaces.dot import preamble, quote


def cell_dot(g: Nb201Genotype, name: str = "cell") -> str:
    last = len(g.nodes)
    lines = [*preamble(name),
             f"  {quote(state_name(0))} [fillcolor=darkseagreen2];"]
    for i in range(1, last):
        lines.append(f"  {quote(state_name(i))} [fillcolor=lightblue];")
    lines.append(f"  {quote(state_name(last))} [label={quote(f'{last} (out)')}, fillcolor=palegoldenrod];")
    for op, j, i in g.edges:
        style = ", style=dashed, color=gray60, fontcolor=gray50" if op == "none" else ", fillcolor=gray"
        lines.append(f"  {quote(state_name(j))} -> {quote(state_name(i))} [label={quote(op)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def genotype_dots(g: Nb201Genotype) -> dict[str, str]:
    """``{"cell": DOT}``."""
    return {"cell": cell_dot(g)}
