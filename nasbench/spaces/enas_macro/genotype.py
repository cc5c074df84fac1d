"""ENAS macro genotypes: per layer its branch and the earlier states it adds through skip connections.

State 0 is the stem's output and state ``i + 1`` layer ``i``'s; layer ``i`` applies its branch to state ``i``
(the previous layer's output) and adds any subset of the states ``0 .. i-1`` (so layer 0 has no skips).
JSON: ``{"space": "enas-macro", "layers": [{"branch": "conv_3x3", "skips": []}, ...]}`` plus free metadata.
The text notation lists the layers between bars, each as its branch and ``<-`` with its skip sources::

    layers: conv_5x5 | sep_conv_3x3 | conv_3x3 <-1 | ...
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Sequence

from nasbench.errors import GenotypeError
from nasbench.spaces.enas_macro.ops import BRANCHES, LAYERS
from nasbench.spaces.genotypes import meta_of, with_meta_keys

SPACE = "enas-macro"
_CORE_KEYS = ("space", "layers", "text")
EXAMPLE = "layers: conv_5x5 | sep_conv_3x3 | conv_3x3 <-1 | max_pool_3x3 <-0,2"

Layer = tuple[str, tuple[int, ...]]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _normalise(layers: Any) -> Any:
    if not isinstance(layers, (list, tuple)):
        return layers
    out = []
    for layer in layers:
        if isinstance(layer, Mapping) and set(layer) == {"branch", "skips"}:
            layer = (layer["branch"], layer["skips"])
        if isinstance(layer, (list, tuple)) and len(layer) == 2 and isinstance(layer[1], (list, tuple)):
            skips = tuple(layer[1])
            if all(_is_int(j) for j in skips):
                skips = tuple(sorted(skips))
            layer = (layer[0], skips)
        out.append(layer)
    return tuple(out)


@dataclass(frozen=True)
class EnasMacroGenotype:
    """``layers[i] = (branch, skip sources)``; ``meta`` takes no part in equality. Construction normalises
    (tuples, sorted skips) and does not validate (:func:`validate` does)."""

    layers: tuple[Layer, ...]
    space: str = SPACE
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", _normalise(self.layers))
        object.__setattr__(self, "meta", dict(self.meta) if self.meta is not None else {})

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"space": self.space, "text": format_text(self).strip(),
                             "layers": [{"branch": b, "skips": list(s)} for b, s in self.layers]}
        return with_meta_keys(d, self.meta, _CORE_KEYS)

    @classmethod
    def from_dict(cls, d: Any) -> "EnasMacroGenotype":
        if not isinstance(d, Mapping):
            raise GenotypeError(f"a genotype must be a JSON object, got {type(d).__name__}")
        if d.get("space", SPACE) != SPACE:
            raise GenotypeError(f"a genotype of the {d.get('space')!r} space is not an {SPACE} genotype")
        meta = meta_of(d, _CORE_KEYS)
        if "layers" in d:
            g = validate(cls(layers=d["layers"], meta=meta))
            if "text" in d and parse_text(d["text"]) != g:
                raise GenotypeError(f"'text' and 'layers' describe different networks "
                                    f"(layers: {format_text(g).strip()})")
            return g
        if "text" in d:
            return parse_text(d["text"]).with_meta(**meta)
        raise GenotypeError(f"an {SPACE} genotype needs 'layers' (or 'text')")

    def with_meta(self, **meta: Any) -> "EnasMacroGenotype":
        return replace(self, meta={**self.meta, **meta})


def validate(g: Any) -> EnasMacroGenotype:
    """Raise :class:`GenotypeError` naming the first problem; return ``g`` when it is valid."""
    if not isinstance(g, EnasMacroGenotype):
        raise GenotypeError(f"not an {SPACE} genotype: {type(g).__name__}")
    if g.space != SPACE:
        raise GenotypeError(f"a genotype of the {g.space!r} space is not an {SPACE} genotype")
    if not isinstance(g.layers, tuple) or len(g.layers) < 2:
        raise GenotypeError(f"expected a list of at least 2 layers, got {g.layers!r}")
    for i, layer in enumerate(g.layers):
        where = f"layer {i}"
        if not (isinstance(layer, tuple) and len(layer) == 2 and isinstance(layer[0], str)
                and isinstance(layer[1], tuple)):
            raise GenotypeError(f"{where}: expected a branch and a list of skip sources, got {layer!r}")
        branch, skips = layer
        if branch not in BRANCHES:
            raise GenotypeError(f"{where}: unknown branch {branch!r}; branches: {', '.join(BRANCHES)}")
        for j in skips:
            if not _is_int(j):
                raise GenotypeError(f"{where}: a skip source must be a state index, got {j!r}")
            if i == 0:
                raise GenotypeError(f"{where}: layer 0 has no skip connections (it reads the stem), got {j}")
            if not 0 <= j < i:
                raise GenotypeError(f"{where}: skip source {j} is out of range; layer {i} adds states 0..{i - 1} "
                                    "(0: the stem, k: layer k-1)")
        if len(set(skips)) != len(skips):
            raise GenotypeError(f"{where}: a skip source appears twice")
    return g


def format_text(g: EnasMacroGenotype) -> str:
    parts = [b + (" <-" + ",".join(map(str, s)) if s else "") for b, s in g.layers]
    return "layers: " + " | ".join(parts) + "\n"


def claims_text(text: Any) -> bool:
    return isinstance(text, str) and text.lstrip().startswith("layers:")


def parse_text(text: Any, name: Optional[str] = None) -> EnasMacroGenotype:
    if not isinstance(text, str):
        raise GenotypeError(f"an {SPACE} genotype text must be a str, got {type(text).__name__}")
    head, sep, body = text.strip().partition(":")
    if not sep or head.strip() != "layers":
        raise GenotypeError(f"an {SPACE} genotype text starts with 'layers:' (e.g. {EXAMPLE})")
    layers = []
    for i, part in enumerate(body.split("|")):
        words = part.split()
        if not words or len(words) > 2:
            raise GenotypeError(f"layer {i}: expected a branch and optionally <-sources, got {part.strip()!r}")
        skips: tuple = ()
        if len(words) == 2:
            if not words[1].startswith("<-"):
                raise GenotypeError(f"layer {i}: {words[1]!r} is not <-source,source,...")
            items = words[1][2:].split(",")
            if not all(x.isascii() and x.isdigit() for x in items):
                raise GenotypeError(f"layer {i}: {words[1]!r}: skip sources must be state indices")
            skips = tuple(int(x) for x in items)
        layers.append((words[0], skips))
    return validate(EnasMacroGenotype(layers=tuple(layers), meta={"name": name} if name else {}))


def from_tf_arc(arc: str, meta: Optional[Mapping[str, Any]] = None) -> EnasMacroGenotype:
    """A genotype from the ENAS TF code's macro architecture string: per layer ``i`` its branch id and ``i``
    skip bits (bit j: add state j)."""
    ids = [int(v) for v in arc.split()]
    layers, k, i = [], 0, 0
    while k < len(ids):
        if k + 1 + i > len(ids):
            raise GenotypeError(f"an ENAS macro architecture string is cut short in layer {i}")
        op = ids[k]
        bits = ids[k + 1:k + 1 + i]
        layers.append((BRANCHES[op] if 0 <= op < len(BRANCHES) else str(op), tuple(j for j, b in enumerate(bits) if b)))
        k += 1 + i
        i += 1
    return validate(EnasMacroGenotype(layers=tuple(layers), meta=dict(meta or {})))


def from_rows(branches: Sequence[Any], skips: Sequence[Any], meta: Optional[Mapping[str, Any]] = None
              ) -> EnasMacroGenotype:
    """The genotype of derived rows: ``branches`` per layer ``(branch, i)``, ``skips`` the ``(op, source)`` of
    every skip edge in the skip topology's order (layers 1.., sources 0..i-1), ``none`` for off."""
    L = len(branches)
    layers, e = [], 0
    for i in range(L):
        on = []
        for j in range(i):
            op, src = skips[e]
            if op != "none":
                on.append(src)
            e += 1
        layers.append((branches[i][0], tuple(on)))
    return validate(EnasMacroGenotype(layers=tuple(layers), meta=dict(meta or {})))


def random_genotype(seed: int, layers: int = LAYERS) -> EnasMacroGenotype:
    """Every layer's branch uniform and every skip connection on with probability 1/2."""
    rng = random.Random(seed)
    out = []
    for i in range(layers):
        branch = rng.choice(BRANCHES)
        out.append((branch, tuple(j for j in range(i) if rng.random() < 0.5)))
    return validate(EnasMacroGenotype(layers=tuple(out), meta={"source": f"random (seed {seed})"}))


def space_size(layers: int = LAYERS) -> int:
    """6^L branch choices × 2^(L(L−1)/2) skip subsets."""
    return len(BRANCHES) ** layers * 2 ** (layers * (layers - 1) // 2)
