"""nasbench: differentiable neural architecture search on one supernet and one trainer."""

__version__ = "0.1.0"
