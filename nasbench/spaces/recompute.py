"""Autograd steps of the search ops that keep less for the backward than the separate modules.

:func:`scaled_bn` (the fast supernet's default): an op's last BatchNorm times the op's weight, in one pass
(the weight folds into the BN's affine weight and bias). It keeps the BN's input and statistics, as the BN
alone does, but not its output, which a separate product keeps for the weight's gradient: that gradient
comes from the per-channel sums the BN backward forms anyway. Nothing is recomputed.

:func:`scaled_pool` (the fast supernet's default for a bare pool times its op weight, GDAS's pools) keeps the
pool's input alone and recomputes the pool in the backward.

:func:`conv_bn` serves ``recompute_ops``. In the search ops of the DARTS space every convolution block ends in ``1×1 conv → BN`` (a separable conv
has two such blocks, the second block's input a ReLU of the first's output), and an edge then multiplies
the block's output by its op weight. Run as separate autograd steps, a block keeps three tensors of the
block's size for the backward: the conv's input, the BN's input and (for the weight's gradient) the BN's
output. :func:`conv_bn` keeps the conv's input alone, plus the per-channel batch statistics, and recomputes
the pointwise conv and the normalisation in the backward, which is cheap next to the depthwise convs. In
the search supernet (batch 64, 16 channels at 32×32) that is two of every three saved activations of a
block.

The results are the separate steps' results: the forward runs the same kernels (``native_batch_norm``
updates the running statistics once, as the module would), the backward the same backward kernels
(``native_batch_norm_backward``, ``convolution_backward``) on the recomputed BN input, which is bitwise the
one of the forward on a deterministic device.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nasbench.spaces.edges import batch_norm, format_of, narrow_detour


def applies(conv: nn.Module, bn: nn.Module, x: torch.Tensor) -> bool:
    """Whether :func:`conv_bn` computes ``bn(conv(x))`` here: a bias-free stride-1 1×1 conv and a BatchNorm in
    training mode that normalises with the batch statistics, with autograd recording and no autocast (under
    mixed precision the separate steps run)."""
    return (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and not narrow_detour(x, conv.out_channels)
            and conv.kernel_size == (1, 1)
            and conv.stride == (1, 1) and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.bias is None and conv.padding_mode == "zeros" and bn.training
            and x.dim() == 4 and x.dtype in (torch.float32, torch.float64) and torch.is_grad_enabled()
            and not torch.is_autocast_enabled(x.device.type))


def conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor, relu: bool = False,
            scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``bn(conv(x))``, then a ReLU when ``relu`` or times the scalar ``scale`` when given (not both); ``bn``'s
    running statistics are updated as its forward would (when it tracks them). Only where :func:`applies`."""
    if relu and scale is not None:
        raise ValueError("conv_bn takes a ReLU or a scale, not both")
    return _ConvBN.apply(x, conv.weight, bn.weight, bn.bias, scale, *_running(bn), bn.eps, relu)


def _running(bn: nn.BatchNorm2d) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], float]:
    """(running mean, running var, momentum) for ``native_batch_norm`` as ``bn``'s training forward updates
    them, counting the batch in ``num_batches_tracked``; (None, None, 0) for a BN without running statistics."""
    if not (bn.track_running_stats and bn.running_mean is not None):
        return None, None, 0.0
    bn.num_batches_tracked.add_(1)
    momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    return bn.running_mean, bn.running_var, momentum


class _ConvBN(torch.autograd.Function):
    """Keeps the conv's input, the batch mean and 1/std, and with ``relu`` its own output (which the next op,
    a depthwise conv, keeps anyway); recomputes the BN's input in the backward. The scale's gradient
    Σ g·BN(z) needs no recomputed BN output: per channel it is γ·Σ g·x̂ + β·Σ g, the sums the BN's own
    backward forms (its weight and bias gradients for the unscaled g), and the BN backward is linear in g."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, gamma: Optional[torch.Tensor],
                beta: Optional[torch.Tensor], scale: Optional[torch.Tensor], running_mean: Optional[torch.Tensor],
                running_var: Optional[torch.Tensor], momentum: float, eps: float, relu: bool) -> torch.Tensor:
        z = F.conv2d(x, weight)
        y, mean, invstd = _bn_forward(z, gamma, beta, scale, running_mean, running_var, momentum, eps)
        del z
        if relu:
            y = F.relu(y)
            ctx.save_for_backward(x, weight, gamma, beta, None, mean, invstd, y)
        else:
            ctx.save_for_backward(x, weight, gamma, beta, scale, mean, invstd, None)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, weight, gamma, beta, scale, mean, invstd, out = ctx.saved_tensors
        need_x, need_w, need_gamma, need_beta, need_scale = ctx.needs_input_grad[:5]
        # in the input's layout: a gradient that arrives strided (a channel slice of a concatenation's
        # gradient) would send the BN backward to its generic kernel, several times slower on CPU
        grad = grad.contiguous(memory_format=format_of(x))
        if out is not None:  # the ReLU's backward, as autograd's: where its output is positive
            grad = torch.ops.aten.threshold_backward(grad, out, 0)
        z = F.conv2d(x, weight)
        grad_z, grad_gamma, grad_beta, grad_scale = _bn_backward(grad, z, gamma, beta, scale, mean, invstd, ctx.eps,
                                                                 need_x or need_w, need_gamma, need_beta, need_scale)
        del z
        grad_x = grad_w = None
        if need_x or need_w:
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad_z, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [need_x, need_w, False])
        return grad_x, grad_w, grad_gamma, grad_beta, grad_scale, None, None, None, None, None


# ---------------------------------------------------------------------------------------------- pools
def pool_applies(pool: nn.Module, x: torch.Tensor) -> bool:
    """Whether :func:`scaled_pool` computes ``pool(x)`` here: a 2-d max pool without dilation, indices or
    ceil mode, or a 2-d average pool, on a float32/float64 4-d input, autograd recording, no autocast."""
    if type(pool) is nn.MaxPool2d:
        ok = not pool.return_indices and not pool.ceil_mode and _pair(pool.dilation) == (1, 1)
    elif type(pool) is nn.AvgPool2d:
        ok = not pool.ceil_mode
    else:
        return False
    return (ok and x.dim() == 4 and x.dtype in (torch.float32, torch.float64) and torch.is_grad_enabled()
            and not torch.is_autocast_enabled(x.device.type))


def scaled_pool(pool: nn.Module, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``scale · pool(x)`` (``scale`` a scalar tensor) keeping only ``x`` for the backward, which recomputes
    the pool: a max pool's int64 indices (twice the output's bytes in float32) and the output the scale's
    gradient needs are not stored. Only where :func:`pool_applies`."""
    if type(pool) is nn.MaxPool2d:
        spec = ("max", _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size), _pair(pool.padding))
    else:
        spec = ("avg", _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size), _pair(pool.padding),
                pool.count_include_pad, pool.divisor_override)
    return _ScaledPool.apply(x, scale, spec)


def _pair(v: Any) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # type: ignore[return-value]


def _pool(x: torch.Tensor, spec: tuple) -> torch.Tensor:
    if spec[0] == "max":
        if spec[1:] == ((3, 3), (1, 1), (1, 1)) and x.device.type == "cpu" and min(x.shape[-2:]) >= 2:
            return max_pool_3x3(x)
        return F.max_pool2d(x, spec[1], spec[2], spec[3])
    return F.avg_pool2d(x, spec[1], spec[2], spec[3], False, spec[4], spec[5])


def max_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 3, 1, 1)`` (no autograd) as the maximum over a row's three pixels, then over a column's
    three of those, in ``x``'s layout: four element-wise maxima instead of nine comparisons per pixel, 2-3×
    faster than PyTorch's CPU kernel at the search shapes (a maximum is exact: the same values, NaN included;
    of two zeros of opposite sign either may come out). Needs a height and width of at least 2."""
    fmt = format_of(x)
    pair, row = torch.empty_like(x, memory_format=fmt), torch.empty_like(x, memory_format=fmt)
    torch.maximum(x[..., :-1], x[..., 1:], out=pair[..., :-1])  # pair[j] = max(x[j], x[j+1])
    pair[..., -1] = x[..., -1]
    torch.maximum(pair[..., 1:], x[..., :-1], out=row[..., 1:])  # row[j] = max(x[j-1], x[j], x[j+1])
    row[..., 0] = pair[..., 0]
    torch.maximum(row[..., :-1, :], row[..., 1:, :], out=pair[..., :-1, :])  # the same down the columns
    pair[..., -1, :] = row[..., -1, :]
    out = torch.empty_like(x, memory_format=fmt)
    torch.maximum(pair[..., 1:, :], row[..., :-1, :], out=out[..., 1:, :])
    out[..., 0, :] = pair[..., 0, :]
    return out


class _ScaledPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, spec: tuple) -> torch.Tensor:
        ctx.save_for_backward(x, scale)
        ctx.spec = spec
        return _pool(x, spec).mul_(scale)  # the pool's own new output, scaled in place

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, scale = ctx.saved_tensors
        spec = ctx.spec
        need_x, need_scale = ctx.needs_input_grad[:2]
        grad = grad.contiguous(memory_format=format_of(x))
        grad_x = grad_scale = None
        if spec[0] == "max":
            out, indices = F.max_pool2d(x, spec[1], spec[2], spec[3], return_indices=True)
        else:
            out, indices = (_pool(x, spec) if need_scale else None), None
        if need_scale:
            grad_scale = (grad * out).sum().reshape(scale.shape)
        del out
        if need_x:
            g = grad * scale
            if spec[0] == "max":
                grad_x = torch.ops.aten.max_pool2d_with_indices_backward(g, x, spec[1], spec[2], spec[3], [1, 1],
                                                                         False, indices)
            else:
                grad_x = torch.ops.aten.avg_pool2d_backward(g, x, spec[1], spec[2], spec[3], False, spec[4],
                                                            spec[5])
        return grad_x, grad_scale, None


# ---------------------------------------------------------------------------------------------- BN × weight
def bn_applies(bn: nn.Module, x: torch.Tensor) -> bool:
    """Whether :func:`scaled_bn` computes ``bn(x)`` here: a training-mode BatchNorm on a float32/float64 4-d
    input, autograd recording, no autocast."""
    return (type(bn) is nn.BatchNorm2d and bn.training and x.dim() == 4 and x.dtype in (torch.float32, torch.float64)
            and torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type))


def scaled_bn(bn: nn.BatchNorm2d, z: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``scale · bn(z)`` (``scale`` a scalar tensor) keeping ``z`` and the batch statistics, as the BN alone
    does, but not the BN's output, which the separate product keeps for the scale's gradient: that gradient
    is formed from the sums the BN's backward computes anyway. Nothing is recomputed. A narrow channels_last
    ``z`` on CPU (PC-DARTS's slices) is normalised in NCHW and handed back in channels_last, as
    :func:`~nasbench.spaces.edges.batch_norm` does. Only where :func:`bn_applies`."""
    return batch_norm(lambda t: _ScaledBN.apply(t, bn.weight, bn.bias, scale, *_running(bn), bn.eps), z)


def _scaled_weight(gamma: Optional[torch.Tensor], scale: torch.Tensor, channels: int,
                   dtype: torch.dtype) -> torch.Tensor:
    """A BN's affine weight with ``scale`` folded in: γ·s, or s per channel for a BN without γ."""
    s = scale.to(dtype)
    return gamma * s if gamma is not None else s.expand(channels).contiguous()


def _bn_forward(z: torch.Tensor, gamma: Optional[torch.Tensor], beta: Optional[torch.Tensor],
                scale: Optional[torch.Tensor], running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
                momentum: float, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(scale · BN(z), batch mean, batch 1/std)`` in one pass: the scale folds into the BN's affine weight and
    bias (γ·s, β·s; s alone for a BN without them); the statistics and the running update do not see it."""
    if scale is not None:
        beta = beta * scale.to(z.dtype) if beta is not None else None
        gamma = _scaled_weight(gamma, scale, z.shape[1], z.dtype)
    return torch.native_batch_norm(z, gamma, beta, running_mean, running_var, True, momentum, eps)


def _bn_backward(grad: torch.Tensor, z: torch.Tensor, gamma: Optional[torch.Tensor], beta: Optional[torch.Tensor],
                 scale: Optional[torch.Tensor], mean: torch.Tensor, invstd: torch.Tensor, eps: float,
                 need_z: bool, need_gamma: bool, need_beta: bool, need_scale: bool
                 ) -> tuple[Optional[torch.Tensor], ...]:
    """Gradients of ``scale · BN(z)`` (``scale`` None: of ``BN(z)``) with respect to z, γ, β and the scale, from
    one ``native_batch_norm_backward`` of the unscaled gradient (it is linear in the gradient). The scale
    folds into the affine weight it is given (γ·s, or s per channel), so z's gradient comes out scaled
    without a pass of its own; the per-channel sums it returns (Σ g·x̂ and Σ g) do not involve that weight."""
    sums = scale is not None and need_scale  # Σ g·x̂ and Σ g per channel, for the scale's gradient
    bn_weight = _scaled_weight(gamma, scale, mean.shape[0], grad.dtype) if scale is not None else gamma
    grad_z, sum_gx, sum_g = torch.ops.aten.native_batch_norm_backward(
        grad, z, bn_weight, None, None, mean, invstd, True, eps,
        [need_z, need_gamma or sums, need_beta or (sums and beta is not None)])
    grad_gamma = sum_gx if need_gamma else None
    grad_beta = sum_g if need_beta else None
    grad_scale = None
    if scale is not None:
        if sums:
            total = (sum_gx * gamma).sum() if gamma is not None else sum_gx.sum()
            if beta is not None:
                total = total + (sum_g * beta).sum()
            grad_scale = total.reshape(scale.shape)
        grad_gamma = grad_gamma * scale if grad_gamma is not None else None
        grad_beta = grad_beta * scale if grad_beta is not None else None
    return grad_z, grad_gamma, grad_beta, grad_scale


class _ScaledBN(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, gamma: Optional[torch.Tensor], beta: Optional[torch.Tensor],
                scale: torch.Tensor, running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
                momentum: float, eps: float) -> torch.Tensor:
        y, mean, invstd = _bn_forward(z, gamma, beta, scale, running_mean, running_var, momentum, eps)
        ctx.save_for_backward(z, gamma, beta, scale, mean, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        z, gamma, beta, scale, mean, invstd = ctx.saved_tensors
        need_z, need_gamma, need_beta, need_scale = ctx.needs_input_grad[:4]
        grad = grad.contiguous(memory_format=format_of(z))
        grad_z, grad_gamma, grad_beta, grad_scale = _bn_backward(grad, z, gamma, beta, scale, mean, invstd, ctx.eps,
                                                                 need_z, need_gamma, need_beta, need_scale)
        return grad_z, grad_gamma, grad_beta, grad_scale, None, None, None, None
