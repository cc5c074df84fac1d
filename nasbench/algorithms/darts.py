"""DARTS: Differentiable Architecture Search (Liu, Simonyan and Yang, ICLR 2019).

Every edge computes the softmax-weighted sum of all candidate ops; α and the weights are optimised in
alternation on the two halves of the training set. First order uses ∇_α L_val(w, α) at the current
weights; second order (``darts.unrolled=true``) differentiates through one virtual SGD step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch.func import functional_call

from nasbench.algorithms.base import ArchStepContext, Strategy
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

    def arch_backward(self, ctx: ArchStepContext) -> torch.Tensor:
        if not self.section.unrolled:
            return super().arch_backward(ctx)
        return self._unrolled_backward(ctx)

    def _unrolled_backward(self, ctx: ArchStepContext) -> torch.Tensor:
        r"""Second-order α gradient of the DARTS paper (eq. 7-8).

        With w' = w − ξ(μ·b + ∇_w L_train(w, α) + λw) (the SGD step the optimizer would take, b its
        momentum buffer, λ its weight decay, ξ the current lr):

            ∇_α L_val(w', α) − ξ · [∇_α L_train(w⁺, α) − ∇_α L_train(w⁻, α)] / (2ε),

        where w± = w ± ε ∇_w' L_val(w', α) and ε = r / ‖∇_w' L_val(w', α)‖.
        """
        net, alphas = ctx.net, self.trainable_arch_parameters()
        names, w = zip(*[(n, p) for n, p in net.named_parameters()])
        xi = ctx.lr
        opt_group = ctx.w_optim.param_groups[0]
        momentum, wd = opt_group["momentum"], opt_group["weight_decay"]

        # virtual step w' = w − ξ(μ·b + ∇_w L_train + λw)
        x_t, y_t = ctx.train
        loss_train = ctx.criterion(self.forward(net, x_t), y_t)
        g_train = ctx.reduce(torch.autograd.grad(loss_train, w))
        w_virtual = []
        for p, g in zip(w, g_train):
            buf = ctx.w_optim.state.get(p, {}).get("momentum_buffer")
            moment = buf * momentum if buf is not None else torch.zeros_like(p)
            w_virtual.append((p.detach() - xi * (moment + g + wd * p.detach())).requires_grad_())

        # L_val(w', α) and its gradients w.r.t. α and w'; the virtual net keeps its own BN statistics
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        x_v, y_v = ctx.valid
        logits = functional_call(net, ({**dict(zip(names, w_virtual)), **buffers}), (x_v, self.weights()))
        loss_val = ctx.criterion(logits, y_v)
        ctx.logits = logits.detach()  # at the virtual weights w'
        grads = ctx.reduce(torch.autograd.grad(loss_val, [*alphas, *w_virtual], allow_unused=True))
        d_alpha, v = grads[: len(alphas)], grads[len(alphas):]

        def train_loss(params: Sequence[torch.Tensor]) -> torch.Tensor:
            out = functional_call(net, dict(zip(names, params)), (x_t, self.weights()))
            return ctx.criterion(out, y_t)

        hvp = finite_difference_hvp(train_loss, [p.detach() for p in w], v, alphas, r=self.section.hvp_r,
                                    reduce=ctx.reduce)
        for a, g, h in zip(alphas, d_alpha, hvp):
            a.grad = None if g is None else g - xi * h
        return loss_val.detach()


def finite_difference_hvp(loss_fn: Callable[[Sequence[torch.Tensor]], torch.Tensor], w: Sequence[torch.Tensor],
                          v: Sequence[torch.Tensor], alphas: Sequence[torch.Tensor],
                          r: float = 0.01, reduce: Callable = list) -> list[torch.Tensor]:
    r"""∇²_{α,w} L(w, α) · v ≈ [∇_α L(w + εv, α) − ∇_α L(w − εv, α)] / (2ε), ε = r / ‖v‖.

    ``loss_fn(params)`` evaluates the loss at the weights ``params`` (α enters through closure). The
    difference is divided by 2ε — not multiplied by ε and halved, the bracket slip of a widely copied
    implementation. ``reduce`` averages the two gradients over distributed ranks.
    """
    norm = torch.sqrt(sum((t * t).sum() for t in v))
    eps = r / norm
    w_plus = [p + eps * t for p, t in zip(w, v)]
    g_plus = reduce(torch.autograd.grad(loss_fn(w_plus), alphas, allow_unused=True))
    w_minus = [p - eps * t for p, t in zip(w, v)]
    g_minus = reduce(torch.autograd.grad(loss_fn(w_minus), alphas, allow_unused=True))
    return [None if gp is None else (gp - gm) / (2 * eps) for gp, gm in zip(g_plus, g_minus)]
