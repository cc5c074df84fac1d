"""The algorithms: each module registers one strategy (see :mod:`nasbench.algorithms.base`)."""

from nasbench.algorithms import darts  # noqa: F401
