"""The cells published by the five algorithms' authors (from their ``genotypes.py`` files; GDAS flattened
from AutoDL-Projects), registered under short names such as ``darts-v2``."""

from __future__ import annotations

from dataclasses import replace

from nasbench.registry import register
from nasbench.spaces.darts.genotype import Cell, Genotype, validate


_CONCAT = (2, 3, 4, 5)

_PUBLISHED_CELLS: dict[str, tuple[str, str, Cell, Cell | None]] = {
    # builtin name: (original name, source, normal, reduce)
    "darts-v1": ("DARTS_V1", "DARTS (Liu et al., ICLR 2019), first order", (
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0), ("skip_connect", 2),
    ), (
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
        ("skip_connect", 2), ("max_pool_3x3", 0),
        ("max_pool_3x3", 0), ("skip_connect", 2),
        ("skip_connect", 2), ("avg_pool_3x3", 0),
    )),
    "darts-v2": ("DARTS_V2", "DARTS (Liu et al., ICLR 2019), second order", (
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("skip_connect", 0),
        ("skip_connect", 0), ("dil_conv_3x3", 2),
    ), (
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
        ("skip_connect", 2), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("skip_connect", 2),
        ("skip_connect", 2), ("max_pool_3x3", 1),
    )),
    "pc-darts": ("PC_DARTS_cifar", "PC-DARTS (Xu et al., ICLR 2020), searched on CIFAR-10", (
        ("sep_conv_3x3", 1), ("skip_connect", 0),
        ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
        ("sep_conv_5x5", 0), ("sep_conv_3x3", 1),
        ("avg_pool_3x3", 0), ("dil_conv_3x3", 1),
    ), (
        ("sep_conv_5x5", 1), ("max_pool_3x3", 0),
        ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 2),
    )),
    "pc-darts-imagenet": ("PC_DARTS_image", "PC-DARTS (Xu et al., ICLR 2020), searched on ImageNet", (
        ("skip_connect", 1), ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 0), ("skip_connect", 1),
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 1), ("dil_conv_5x5", 4),
    ), (
        ("sep_conv_3x3", 0), ("skip_connect", 1),
        ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
        ("sep_conv_3x3", 2), ("sep_conv_3x3", 1),
        ("sep_conv_5x5", 0), ("sep_conv_3x3", 3),
    )),
    "pdarts": ("PDARTS", "P-DARTS (Chen et al., ICCV 2019)", (
        ("skip_connect", 0), ("dil_conv_3x3", 1),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 0), ("dil_conv_5x5", 4),
    ), (
        ("avg_pool_3x3", 0), ("sep_conv_5x5", 1),
        ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
        ("max_pool_3x3", 0), ("dil_conv_3x3", 1),
        ("dil_conv_3x3", 1), ("dil_conv_5x5", 3),
    )),
    "gdas": ("GDAS_V1", "GDAS (Dong & Yang, CVPR 2019)", (
        ("skip_connect", 0), ("skip_connect", 1),
        ("skip_connect", 0), ("sep_conv_5x5", 2),
        ("sep_conv_3x3", 3), ("skip_connect", 0),
        ("sep_conv_5x5", 4), ("sep_conv_3x3", 3),
    ), (
        ("sep_conv_5x5", 0), ("sep_conv_3x3", 1),
        ("sep_conv_5x5", 2), ("sep_conv_5x5", 1),
        ("dil_conv_5x5", 2), ("sep_conv_3x3", 1),
        ("sep_conv_5x5", 0), ("sep_conv_5x5", 1),
    )),
    "gdas-frc": ("GDAS_FRC", "GDAS (Dong & Yang, CVPR 2019), fixed hand-designed reduction cell (FRC)", (
        ("skip_connect", 0), ("skip_connect", 1),
        ("skip_connect", 0), ("sep_conv_3x3", 2),
        ("skip_connect", 0), ("sep_conv_3x3", 2),
        ("skip_connect", 0), ("sep_conv_3x3", 2),
    ), None),
    "sgas-cri1": ("SGAS_Cri1_CIFAR_Best", "SGAS (Li et al., CVPR 2020), criterion 1, best CIFAR-10 cell", (
        ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_5x5", 1), ("sep_conv_5x5", 3),
        ("skip_connect", 0), ("dil_conv_5x5", 2),
    ), (
        ("max_pool_3x3", 0), ("dil_conv_5x5", 1),
        ("sep_conv_3x3", 0), ("skip_connect", 2),
        ("sep_conv_3x3", 1), ("skip_connect", 2),
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
    )),
    "sgas-cri2": ("SGAS_Cri2_CIFAR_Best", "SGAS (Li et al., CVPR 2020), criterion 2, best CIFAR-10 cell", (
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 2),
        ("max_pool_3x3", 0), ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 2), ("sep_conv_3x3", 3),
    ), (
        ("sep_conv_3x3", 0), ("max_pool_3x3", 1),
        ("dil_conv_3x3", 0), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("sep_conv_3x3", 2),
        ("max_pool_3x3", 0), ("sep_conv_5x5", 2),
    )),
}


_PAPER_ALGO = {"darts-v1": "darts", "darts-v2": "darts", "pc-darts": "pc-darts", "pc-darts-imagenet": "pc-darts",
               "pdarts": "p-darts", "gdas": "gdas", "gdas-frc": "gdas", "sgas-cri1": "sgas", "sgas-cri2": "sgas"}
"""The algorithm that found each built-in cell (its paper's): it picks train-final's default recipe."""


def _build_published() -> dict[str, Genotype]:
    out = {}
    for key, (orig, source, normal, reduce) in _PUBLISHED_CELLS.items():
        meta = {"name": orig, "source": source, "builtin": key, "algo": _PAPER_ALGO[key]}
        out[key] = validate(Genotype(normal, _CONCAT, reduce, _CONCAT, meta=meta))
    return out


_PUBLISHED: dict[str, Genotype] = _build_published()

for _name, _g in _PUBLISHED.items():
    register("genotype", _name, _g)


def published_genotypes() -> dict[str, Genotype]:
    """The built-in published genotypes by name (a fresh dict; each ``meta`` has ``name`` and ``source``)."""
    return {k: replace(g, meta=dict(g.meta)) for k, g in _PUBLISHED.items()}
