"""``nas list``: what is registered."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from nasbench.cli.app import app, out, user_errors


# ---------------------------------------------------------------------------------------------- list
@app.command(name="list")
@user_errors
def list_(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Algorithms, search spaces, datasets and built-in genotypes."""
    from nasbench import registry

    # the catalogue and what was registered at runtime: no PyTorch import, so `nas list` answers at once
    algos = registry.listing("algorithm")
    spaces = registry.listing("space")
    datasets = list(registry.listing("dataset"))
    genotypes = registry.listing("genotype")
    if as_json:
        print(json.dumps({"algorithms": algos, "spaces": spaces, "datasets": datasets, "genotypes": genotypes}))
        return
    t = Table(title="algorithms")
    t.add_column("name", style="bold")
    t.add_column("what it does")
    t.add_column("paper")
    for n, a in algos.items():
        t.add_row(n, a["summary"], a["paper"])
    out.print(t)
    t = Table(title="search spaces")
    t.add_column("name", style="bold")
    t.add_column("description")
    for n, d in spaces.items():
        t.add_row(n, d)
    out.print(t)
    out.print("[bold]datasets:[/] " + ", ".join(datasets))
    t = Table(title="built-in genotypes")
    t.add_column("name", style="bold")
    t.add_column("source")
    for n, s in genotypes.items():
        t.add_row(n, s)
    out.print(t)
