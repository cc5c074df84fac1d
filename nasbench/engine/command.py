"""The command a ``nas`` process starts other ``nas`` processes with: a study's runs (``nas study``) and the
workers of ``--nproc N`` (torchrun's local processes).

By default that is ``python -m nasbench`` of the running interpreter. Where the environment variable
``NASBENCH_NAS_COMMAND`` is set, it is that command instead, split as a shell splits a line, with the
process's arguments after it: a wrapper (``nice -n 10 python -m nasbench``, ``numactl --cpunodebind=0 python -m
nasbench``), another environment's interpreter, or the test suite's fork server.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys

from nasbench.errors import ConfigError

COMMAND_VAR = "NASBENCH_NAS_COMMAND"


def custom() -> bool:
    """Whether ``$NASBENCH_NAS_COMMAND`` is set (to more than blanks)."""
    return bool(os.environ.get(COMMAND_VAR, "").strip())


def nas_command() -> list[str]:
    """``$NASBENCH_NAS_COMMAND`` split as a shell splits a line, else ``python -m nasbench`` of this
    interpreter."""
    return shlex.split(os.environ[COMMAND_VAR]) if custom() else [sys.executable, "-m", "nasbench"]


def check_command() -> None:
    """``$NASBENCH_NAS_COMMAND`` that cannot start (unbalanced quotes, a program not found): one line, before
    anything runs or is written."""
    if not custom():
        return
    try:
        program = nas_command()[0]
    except ValueError as exc:
        raise ConfigError(f"{COMMAND_VAR}: {exc}") from None
    if shutil.which(program) is None:
        raise ConfigError(f"{COMMAND_VAR}: {program!r} is not an executable program")


__all__ = ["COMMAND_VAR", "custom", "nas_command", "check_command"]
