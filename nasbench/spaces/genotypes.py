"""Genotype files of any space: read, write, and find the space a genotype belongs to.

A genotype object has ``space`` (its space's registered name), ``meta`` (free metadata), ``to_dict()``
and ``with_meta(**meta)``; everything else about it is its space's business. A JSON file names its space
in ``"space"`` (``darts`` when absent, as in files written before spaces were plugins); a text file is
read by the space whose notation it is in (:meth:`~nasbench.spaces.base.SearchSpace.claims_text`).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Optional

from nasbench import registry
from nasbench.errors import GenotypeError
from nasbench.spaces.base import SearchSpace, create_space

DEFAULT_SPACE = "darts"


def with_meta_keys(d: dict[str, Any], meta: Mapping[str, Any], core: tuple[str, ...]) -> dict[str, Any]:
    """``d`` (a genotype's JSON fields) with ``meta`` at top level; meta keys that clash with a field in
    ``core`` (or are ``meta`` itself) go under ``"meta"``."""
    clashing = {k: v for k, v in meta.items() if k in core or k == "meta"}
    d.update({k: v for k, v in meta.items() if k not in clashing})
    if clashing:
        d["meta"] = clashing
    return d


def meta_of(d: Mapping[str, Any], core: tuple[str, ...]) -> dict[str, Any]:
    """The inverse of :func:`with_meta_keys`: every key of ``d`` that is not a field in ``core``."""
    meta = {k: v for k, v in d.items() if k not in core and k != "meta"}
    if isinstance(d.get("meta"), dict):
        meta.update(d["meta"])
    elif "meta" in d:
        meta["meta"] = d["meta"]
    return meta


def space_named(name: Any) -> SearchSpace:
    """The space of a genotype's ``space`` field (GenotypeError for one that is not registered)."""
    names = registry.names("space")
    if not isinstance(name, str) or name not in names:
        raise GenotypeError(f"unsupported search space {name!r}; supported: {', '.join(names)}")
    return create_space(name)


def space_of(genotype: Any) -> SearchSpace:
    """The space ``genotype`` belongs to."""
    return space_named(getattr(genotype, "space", DEFAULT_SPACE))


def genotype_from_dict(d: Any) -> Any:
    """The (validated) genotype of a JSON object, by the space it names."""
    if not isinstance(d, Mapping):
        raise GenotypeError(f"a genotype must be a JSON object, got {type(d).__name__}")
    return space_named(d.get("space", DEFAULT_SPACE)).genotype_from_dict(d)


def save_genotype(g: Any, path: str | os.PathLike) -> Path:
    """Write ``g`` as JSON (indent 2, trailing newline) atomically: temp file, fsync, ``os.replace``."""
    from nasbench.engine.rundir import atomic_write_text

    path = Path(path)
    atomic_write_text(path, json.dumps(g.to_dict(), indent=2) + "\n")
    return path


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise GenotypeError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise GenotypeError(f"{path}: cannot read: {e.strerror}") from None


def _load_json_file(path: Path) -> Any:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise GenotypeError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    try:
        return genotype_from_dict(data)
    except GenotypeError as e:
        raise GenotypeError(f"{path}: {e}") from None


def parse_text(text: str, space: Optional[str] = None, name: Optional[str] = None) -> Any:
    """A genotype from text in a space's notation (``space``, or the first space that claims the text;
    the default space's parser reports what is wrong with text no space claims)."""
    if space is None:
        claiming = [n for n in registry.names("space") if create_space(n).claims_text(text)]
        space = claiming[0] if claiming else DEFAULT_SPACE
    return space_named(space).parse_text(text, name)


def _load_text_file(path: Path) -> Any:
    try:
        return parse_text(_read_text(path))
    except GenotypeError as e:
        if str(e).startswith(str(path)):
            raise
        raise GenotypeError(f"{path}: {e}") from None


def published() -> dict[str, Any]:
    """The built-in genotypes by name (fresh copies; each ``meta`` has ``name`` and ``source``)."""
    return {k: replace(g, meta=dict(g.meta)) for k, g in registry.items("genotype")}


def random_genotype(spec: str, space: Optional[str] = None, layers: Optional[int] = None) -> Any:
    """The genotype of ``random:SEED``: drawn uniformly from ``space`` (default darts) with that seed; ``layers``:
    the depth, for a space whose genotypes fix it (ignored by the others)."""
    seed_text = spec.partition(":")[2]
    try:
        seed = int(seed_text)
    except ValueError:
        raise GenotypeError(f"random:SEED needs an integer seed, got {seed_text!r}") from None
    s = space_named(space or DEFAULT_SPACE)
    g = s.random_genotype(seed, layers=layers) if s.depth_from_genotype and layers else s.random_genotype(seed)
    return g.with_meta(source=f"random (seed {seed})", random_seed=seed)


def load_genotype(spec: str | os.PathLike, space: Optional[str] = None, layers: Optional[int] = None) -> Any:
    """Load a genotype from a built-in name, ``random:SEED`` (of ``space``; ``layers`` deep where the space's
    genotypes fix the depth), a directory (a search run's ``best.json``, else a train-final run's
    ``genotype.json``), a ``.json`` file or a text file."""
    if isinstance(spec, str) and spec.startswith("random:"):
        return random_genotype(spec, space, layers)
    builtins = dict(registry.items("genotype"))
    if isinstance(spec, str) and spec in builtins:
        g = builtins[spec]
        return replace(g, meta=dict(g.meta))
    path = Path(spec).expanduser()
    if path.is_dir():  # a search run's result, or the cell a train-final run trained
        for name in ("best.json", "genotype.json"):
            if (path / name).is_file():
                return _load_json_file(path / name)
        raise GenotypeError(f"directory {path} has no best.json")
    if path.is_file():
        return _load_json_file(path) if path.suffix.lower() == ".json" else _load_text_file(path)
    raise GenotypeError(f"no such genotype file or built-in name: {spec}; built-in names: "
                        f"{', '.join(builtins)}, or random:SEED")
