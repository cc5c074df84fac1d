"""The built-in names, as plain data: what ``nas list`` shows and what a name check needs.

Importing the modules that register the built-ins imports PyTorch (seconds); ``nas list``, ``--help`` and an
unknown ``--algo``/``--space``/``--dataset`` should answer at once. This module holds the same names and
descriptions with no imports; :mod:`nasbench.registry` reads it, and ``tests/test_startup.py`` checks that it
equals what the registered objects say, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

ALGORITHMS: dict[str, dict[str, str]] = {
    "darts": {
        "summary": "softmax over all ops on every edge; first or second order (unrolled) α gradient",
        "paper": "Liu, Simonyan, Yang. DARTS: Differentiable Architecture Search. ICLR 2019.",
    },
    "gdas": {
        "summary": "one Gumbel-sampled op per edge per forward (straight-through); τ 10 → 0.1; weight step first",
        "paper": "Dong, Yang. Searching for A Robust Neural Architecture in Four GPU Hours. CVPR 2019.",
    },
    "p-darts": {
        "summary": "3 stages with deeper supernets (5/11/17 cells); prunes ops 8→5→3→1; skip dropout and cap",
        "paper": "Chen, Xie, Wu, Tian. Progressive Differentiable Architecture Search: Bridging the Depth Gap "
                 "between Search and Evaluation. ICCV 2019.",
    },
    "pc-darts": {
        "summary": "1/K of the channels through each mixed op (shuffled back), β edge normalization, α warm-up",
        "paper": "Xu, Xie, Zhang, Chen, Qi, Tian, Xiong. PC-DARTS: Partial Channel Connections for "
                 "Memory-Efficient Architecture Search. ICLR 2020.",
    },
    "sgas": {
        "summary": "decides one edge per cell greedily every few epochs (importance × certainty [× stability])",
        "paper": "Li, Qian, Delgadillo, Müller, Thabet, Ghanem. SGAS: Sequential Greedy Architecture Search. "
                 "CVPR 2020.",
    },
}
"""Algorithm name → its ``summary`` and ``paper`` (class attributes of the strategy)."""

SPACES: dict[str, str] = {
    "darts": "DARTS CNN cell: 8 ops, 4 nodes, 14 edges (Liu et al., 2019)",
    "nas-bench-201": "NAS-Bench-201 cell: 5 ops, 3 nodes, 6 edges, 'none' kept (Dong & Yang, 2020)",
    "enas-micro": "ENAS micro cell: 5 ops, 5 nodes of 2 chosen inputs, loose ends out (Pham et al., 2018)",
    "enas-macro": "ENAS macro network: 12 layers of 6 branches, on/off skips between layers (Pham et al., 2018)",
}
"""Space name → its ``description``."""

DATASETS: dict[str, str] = {name: "" for name in (
    "cifar10", "cifar100", "fashion-mnist", "imagefolder", "imagenet", "imagenet16-120", "mnist", "synthetic")}
"""Dataset names (nothing to describe: ``nas list`` shows the names)."""

GENOTYPES: dict[str, str] = {
    "darts-v1": "DARTS (Liu et al., ICLR 2019), first order",
    "darts-v2": "DARTS (Liu et al., ICLR 2019), second order",
    "enas-macro": "ENAS (Pham et al., ICML 2018), macro network (scripts/cifar10_macro_final.sh)",
    "enas-micro": "ENAS (Pham et al., ICML 2018), micro cell (scripts/cifar10_micro_final.sh)",
    "gdas": "GDAS (Dong & Yang, CVPR 2019)",
    "gdas-frc": "GDAS (Dong & Yang, CVPR 2019), fixed hand-designed reduction cell (FRC)",
    "pc-darts": "PC-DARTS (Xu et al., ICLR 2020), searched on CIFAR-10",
    "pc-darts-imagenet": "PC-DARTS (Xu et al., ICLR 2020), searched on ImageNet",
    "pdarts": "P-DARTS (Chen et al., ICCV 2019)",
    "sgas-cri1": "SGAS (Li et al., CVPR 2020), criterion 1, best CIFAR-10 cell",
    "sgas-cri2": "SGAS (Li et al., CVPR 2020), criterion 2, best CIFAR-10 cell",
}
"""Published genotype name → its ``meta["source"]``."""

PRESETS = ("paper", "quick")
"""The values of ``--preset`` (``nasbench.config.PRESETS``, which sizes them)."""

BUILTINS: dict[str, dict[str, Any]] = {"algorithm": ALGORITHMS, "space": SPACES, "dataset": DATASETS,
                                      "genotype": GENOTYPES}
"""Kind (as in :mod:`nasbench.registry`) → name → what ``nas list`` shows of it."""
