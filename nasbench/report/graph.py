"""Cells as graphs: each space draws its cells as DOT text (:meth:`~nasbench.spaces.base.SearchSpace.dot`);
this module writes the DOT files and renders them with Graphviz when present."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from nasbench.errors import NasError
from nasbench.spaces.genotypes import space_of

FORMATS = ("dot", "svg", "png", "pdf")


def dot_available() -> bool:
    return shutil.which("dot") is not None


def render(dot_text: str, target: Path, fmt: str) -> Path:
    """Write ``dot_text`` rendered as ``fmt`` to ``target`` with Graphviz's ``dot``."""
    exe = shutil.which("dot")
    if exe is None:
        raise NasError(f"Graphviz's `dot` is not installed, so no {fmt.upper()} can be drawn (the .dot file was "
                       "written); install Graphviz (apt-get install graphviz, brew install graphviz) or use "
                       "--format dot")
    try:
        r = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NasError(f"running Graphviz's dot failed: {exc}") from exc
    if r.returncode != 0:
        msg = r.stderr.decode(errors="replace").strip().splitlines()
        raise NasError(f"Graphviz's dot failed for {target}: {msg[0] if msg else 'exit ' + str(r.returncode)}")
    from nasbench.engine.rundir import atomic_write_bytes

    atomic_write_bytes(target, r.stdout)
    return target


def write_genotype_plots(g: Any, out_dir: Path, fmt: str = "png", stem: str = "") -> list[Path]:
    """One ``CELL.dot`` per cell of the genotype's space (``normal``/``reduce`` in the DARTS space) always,
    plus ``CELL.FMT`` unless ``fmt`` is ``dot``."""
    from nasbench.engine.rundir import atomic_write_text

    if fmt not in FORMATS:
        raise NasError(f"unknown plot format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    written = []
    for cell, text in space_of(g).dot(g).items():
        base = out_dir / f"{stem}{cell}"
        atomic_write_text(base.with_suffix(".dot"), text)
        written.append(base.with_suffix(".dot"))
    if fmt != "dot":
        for cell, text in space_of(g).dot(g).items():
            base = out_dir / f"{stem}{cell}"
            written.append(render(text, base.with_suffix(f".{fmt}"), fmt))
    return written
