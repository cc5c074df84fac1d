"""What the spaces' cell drawings share: quoting and the graph preamble of the DARTS papers' figure style."""

from __future__ import annotations


def quote(s: str) -> str:
    """A DOT string literal."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def preamble(name: str) -> list[str]:
    """The opening lines of a cell's digraph: left to right, title ``name``, rounded filled boxes."""
    return [f"digraph {quote(name)} {{",
            "  rankdir=LR;",
            '  graph [fontname="helvetica", fontsize=20, label=' + quote(name) + ', labelloc=t];',
            '  node [style="filled,rounded", shape=rect, align=center, fontsize=20, height=0.5, width=0.5, '
            'penwidth=2, fontname="helvetica"];',
            '  edge [fontsize=20, fontname="times"];']
