"""DARTS: Differentiable Architecture Search (Liu, Simonyan and Yang, ICLR 2019).

Every edge computes the softmax-weighted sum of all candidate ops; α and the weights are optimised in
alternation on the two halves of the training set. First order uses ∇_α L_val(w, α) at the current
weights; second order (``darts.unrolled=true``) differentiates through one virtual SGD step
(:mod:`nasbench.algorithms.second_order`, shared with PC-DARTS and SGAS).
"""

from __future__ import annotations

from dataclasses import dataclass

from nasbench.algorithms.base import Strategy
from nasbench.algorithms.second_order import finite_difference_hvp  # noqa: F401  (its home before)
from nasbench.registry import register_algorithm


@register_algorithm("darts")
class Darts(Strategy):
    name = "darts"
    paper = "Liu, Simonyan, Yang. DARTS: Differentiable Architecture Search. ICLR 2019."
    summary = "softmax over all ops on every edge; first or second order (unrolled) α gradient"

    @dataclass
    class Config:
        unrolled: bool = False  # second order: differentiate through one virtual weight step
        hvp_r: float = 0.01  # ε = hvp_r / ‖∇_w' L_val‖ of the finite-difference Hessian-vector product
