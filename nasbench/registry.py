"""Name → object registries for algorithms, search spaces, datasets and named genotypes.

Each kind has a ``register_*`` decorator and ``get_*``/``list_*`` functions. Lookups of an unknown name
raise :class:`~nasbench.errors.NasError` naming the valid choices, so the CLI reports them in one line.
Modules that register things are imported lazily by :func:`_load_builtins` the first time an object is
needed, so importing :mod:`nasbench.registry` stays cheap; :func:`check` and :func:`listing` answer from
:mod:`nasbench.catalogue` (the built-in names as plain data) and what was registered at runtime, without
importing PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, TypeVar

from nasbench import catalogue
from nasbench.errors import NasError

T = TypeVar("T")

_REGISTRIES: dict[str, dict[str, Any]] = {"algorithm": {}, "space": {}, "dataset": {}, "genotype": {}}

_BUILTIN_MODULES = (
    "nasbench.spaces",  # every space, and the published genotypes of each
    "nasbench.algorithms",
    "nasbench.data",
)
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def _register(kind: str, name: str) -> Callable[[T], T]:
    def deco(obj: T) -> T:
        table = _REGISTRIES[kind]
        if name in table and table[name] is not obj:
            raise RuntimeError(f"{kind} {name!r} is registered twice")
        table[name] = obj
        return obj

    return deco


def register(kind: str, name: str, obj: Any) -> Any:
    """Register ``obj`` under ``name`` (the non-decorator form, for data such as genotypes)."""
    return _register(kind, name)(obj)


def unregister(kind: str, name: str) -> None:
    """Remove ``name`` (a plugin registered for a while, e.g. by a test)."""
    _REGISTRIES[kind].pop(name, None)


def register_algorithm(name: str) -> Callable[[T], T]:
    return _register("algorithm", name)


def register_space(name: str) -> Callable[[T], T]:
    return _register("space", name)


def register_dataset(name: str) -> Callable[[T], T]:
    return _register("dataset", name)


def known(kind: str) -> list[str]:
    """Every name of ``kind``: the built-ins (from the catalogue, nothing imported) and those registered so far."""
    return sorted(set(catalogue.BUILTINS[kind]) | set(_REGISTRIES[kind]))


def check(kind: str, name: str) -> None:
    """A NasError naming the choices if ``name`` is not a ``kind``; imports nothing, so a misspelt name
    is answered at once (loading the built-ins registers only names the catalogue holds)."""
    if name not in _REGISTRIES[kind] and name not in catalogue.BUILTINS[kind]:
        raise NasError(f"unknown {kind} {name!r}; choose one of: {', '.join(known(kind))}")


def describe(kind: str, obj: Any) -> Any:
    """What ``nas list`` shows of a registered object (the form the catalogue stores)."""
    if kind == "algorithm":
        return {"summary": obj.summary, "paper": obj.paper}
    if kind == "space":
        return getattr(obj, "description", "")
    if kind == "genotype":
        return obj.meta.get("source", "")
    return ""


def listing(kind: str) -> dict[str, Any]:
    """Name → :func:`describe` for every name of ``kind``, the built-ins from the catalogue (no imports)."""
    shown = dict(catalogue.BUILTINS[kind])
    shown.update((name, describe(kind, obj)) for name, obj in _REGISTRIES[kind].items())
    return dict(sorted(shown.items()))


def get(kind: str, name: str) -> Any:
    check(kind, name)
    _load_builtins()
    table = _REGISTRIES[kind]
    if name not in table:
        raise NasError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(table))}")
    return table[name]


def names(kind: str) -> list[str]:
    _load_builtins()
    return sorted(_REGISTRIES[kind])


def items(kind: str) -> list[tuple[str, Any]]:
    _load_builtins()
    return sorted(_REGISTRIES[kind].items())
