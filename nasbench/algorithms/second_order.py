"""The second-order architecture gradient of DARTS (Liu et al., ICLR 2019, eq. 7–8), for every algorithm
whose official code has ``--unrolled``: DARTS, PC-DARTS (α and β, partial channels) and SGAS (decided and
pruned edges as the search runs them; the trainer keeps decided rows of α bitwise unchanged).

An algorithm opts in by an ``unrolled`` and an ``hvp_r`` key in its config section;
:meth:`~nasbench.algorithms.base.Strategy.arch_backward` then calls :func:`unrolled_backward`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch.func import functional_call


def _or_zeros(grads: Sequence[Optional[torch.Tensor]], like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients with zeros for weights the loss did not use (SGAS's decided and pruned edges run one op or
    none; the unused weights then take no part in either loss, whatever their virtual value)."""
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, like)]


def unrolled_backward(strategy: Any, ctx: Any, r: float) -> torch.Tensor:
    r"""Fill ``.grad`` of ``strategy``'s trainable architecture parameters with the second-order gradient;
    return the validation loss.

    With w' = w − ξ(μ·b + ∇_w L_train(w, α) + λw) (the SGD step the optimizer would take: b its momentum
    buffer, λ its weight decay, ξ the current lr):

        ∇_α L_val(w', α) − ξ · [∇_α L_train(w⁺, α) − ∇_α L_train(w⁻, α)] / (2ε),

    where w± = w ± ε ∇_w' L_val(w', α) and ε = r / ‖∇_w' L_val(w', α)‖.
    """
    net, alphas = ctx.net, strategy.trainable_arch_parameters()
    names, w = zip(*[(n, p) for n, p in net.named_parameters()])
    xi = ctx.lr
    group = ctx.w_optim.param_groups[0]
    momentum, wd = group["momentum"], group["weight_decay"]

    # virtual step w' = w − ξ(μ·b + ∇_w L_train + λw)
    x_t, y_t = ctx.train
    loss_train = ctx.criterion(strategy.forward(net, x_t), y_t)
    g_train = ctx.reduce(_or_zeros(torch.autograd.grad(loss_train, w, allow_unused=True), w))
    w_virtual = []
    for p, g in zip(w, g_train):
        buf = ctx.w_optim.state.get(p, {}).get("momentum_buffer")
        moment = buf * momentum if buf is not None else torch.zeros_like(p)
        w_virtual.append((p.detach() - xi * (moment + g + wd * p.detach())).requires_grad_())

    # L_val(w', α) and its gradients w.r.t. α and w'; the virtual net keeps its own BN statistics
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    x_v, y_v = ctx.valid
    logits = functional_call(net, {**dict(zip(names, w_virtual)), **buffers}, (x_v, strategy.weights()))
    loss_val = ctx.criterion(logits, y_v)
    ctx.logits = logits.detach()  # at the virtual weights w'
    grads = torch.autograd.grad(loss_val, [*alphas, *w_virtual], allow_unused=True)
    d_alpha = ctx.reduce(grads[: len(alphas)])
    v = ctx.reduce(_or_zeros(grads[len(alphas):], w_virtual))

    def train_loss(params: Sequence[torch.Tensor]) -> torch.Tensor:
        out = functional_call(net, dict(zip(names, params)), (x_t, strategy.weights()))
        return ctx.criterion(out, y_t)

    hvp = finite_difference_hvp(train_loss, [p.detach() for p in w], v, alphas, r=r, reduce=ctx.reduce)
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
