"""Which kind of run a directory holds, and the error that says so when a command is given the other kind.

A search run's config.yaml has an ``algo`` key; a train-final run's has ``kind: train-final``. Commands that
take one kind name the directory, what it is and which command fits it, instead of a missing config key.
Reads only config.yaml (no torch), so it runs before anything else looks at the directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from nasbench.errors import RunDirError

SEARCH = "search"
FINAL = "train-final"


def run_kind(run_dir: str | Path) -> Optional[str]:
    """``"search"``, ``"train-final"``, or None (no directory, no config.yaml, or one of neither kind)."""
    import yaml

    p = Path(run_dir) / "config.yaml"
    if not p.is_file():
        return None
    try:
        cfg = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(cfg, dict):
        return None
    if cfg.get("kind") == FINAL:
        return FINAL
    if "algo" in cfg:
        return SEARCH
    return None


def expect_run_kind(run_dir: str | Path, want: str, command: str) -> None:
    """Refuse ``run_dir`` for ``command`` when it is a run of the other kind, saying what fits it.

    A directory that is no run at all is left to :meth:`RunDir.open`'s own messages."""
    kind = run_kind(run_dir)
    if kind is None or kind == want:
        return
    d = str(run_dir)
    if kind == SEARCH:
        raise RunDirError(f"{d} is a search run; `{command}` takes a train-final run "
                          f"(train its cell with `nas train-final --genotype {d}`)")
    raise RunDirError(f"{d} is a train-final run; `{command}` takes a search run (its cell is "
                      f"{Path(d) / 'genotype.json'}; `nas show {d}` summarises it, "
                      f"`nas train-final --resume {d}` continues it)")


__all__ = ["SEARCH", "FINAL", "run_kind", "expect_run_kind"]
