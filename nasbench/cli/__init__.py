"""The ``nas`` command line: ``app`` holds the Typer app and the shared options; every other module of
this package is one thin command group, imported by :func:`~nasbench.cli.app.load_command_modules`."""

from nasbench.cli.app import app, main
from nasbench.cli.app import load_command_modules as _load

_load()

__all__ = ["app", "main"]
