"""The search spaces: :mod:`.base` is the seam (:class:`~nasbench.spaces.base.SearchSpace`), :mod:`.edges`
the edge modules strategies put into any space's cells, :mod:`.genotypes` genotype files of any space,
:mod:`.dot` what the cell drawings share.

Every other module or sub-package here is one space and is imported (so registered) with this package:
a new space is one new module.
"""

import importlib
import pkgutil

_SEAM = {"base", "dot", "edges", "genotypes"}

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in _SEAM:
        importlib.import_module(f"{__name__}.{_mod.name}")
