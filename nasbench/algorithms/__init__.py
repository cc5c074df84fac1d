"""The algorithms: each module here registers one strategy (see :mod:`nasbench.algorithms.base`).

Every module of this package is imported, so a new algorithm is one new file.
"""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")
