"""PC-DARTS's narrow channel slices with images folded into the channels (fast execution, CPU, channels_last).

An edge's mixed op sees C/K channels of its input (4 at the paper's C=16, K=4). PyTorch's channels_last CPU
kernels vectorise over channels, so a 4-channel depthwise convolution or BatchNorm uses a fraction of each
vector. Every op of the DARTS space works per image, so G images can share the channel axis: the slice
[N, c, H, W] becomes [N/G, G·c, H, W] (channel g·c + i holds channel i of image n·G + g) with G·c ≤ 16, and

* a depthwise convolution runs with its weight repeated G times (groups G·c), dilated ones by phases as usual;
* a dense convolution (the pointwise 1×1) runs with a block-diagonal weight: G copies of it;
* ReLUs, pools and the identity run unchanged;
* a BatchNorm pools its statistics over the G groups (:class:`_FoldedBatchNorm`: PyTorch's normalisation of
  the G·c channels gives each group's mean and variance, which combine exactly for equal counts), so it
  normalises, updates its running statistics and differentiates as the module does on the slice; an op's
  weight folds into its last one, as :func:`~nasbench.spaces.recompute.scaled_bn` does.

What none of these covers (FactorizedReduce, an affine BatchNorm) runs on the unfolded slice. A node sums
its edges' folded outputs and unfolds once, in the channel shuffle (:func:`~nasbench.spaces.edges.unfolded`).
``python benchmarks/ops.py --fold`` times a separable convolution both ways (README: 3.35 against 6.91 ms at
64×4×32×32, forward and backward). Not with ``recompute_ops``, whose fused steps take the plain slice.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nasbench.spaces.darts import depthwise
from nasbench.spaces.edges import format_of, update_running_stats

WIDE = 16
"""The folded width to fill: G = the largest divisor of the batch with G·c ≤ WIDE (G ≥ 2, else no folding)."""


def groups(x: torch.Tensor, channels: int) -> int:
    """How many images to fold into the channels of a ``channels``-wide slice of ``x``: 1 (none) unless ``x``
    is a channels_last CPU float tensor of narrow slices and some G ≥ 2 divides the batch."""
    if (x.device.type != "cpu" or x.dim() != 4 or format_of(x) != torch.channels_last
            or x.dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled("cpu")):
        return 1
    for g in range(WIDE // max(channels, 1), 1, -1):
        if x.shape[0] % g == 0:
            return g
    return 1


def fold(x: torch.Tensor, start: int, stop: int, G: int) -> torch.Tensor:
    """Channels ``start:stop`` of a channels_last ``x`` [N, C, H, W] as [N/G, G·c, H, W] channels_last, one copy;
    its gradient comes back to ``x`` in channels_last."""
    N, _, H, W = x.shape
    c = stop - start
    nhwc = x.permute(0, 2, 3, 1)[..., start:stop]  # [N, H, W, c], a view
    out = nhwc.reshape(N // G, G, H, W, c).permute(0, 2, 3, 1, 4).reshape(N // G, H, W, G * c)
    return out.permute(0, 3, 1, 2)


def conv(m: nn.Conv2d, x: torch.Tensor, G: int) -> torch.Tensor:
    """``m`` on each image of a folded ``x``."""
    bias = None if m.bias is None else m.bias.repeat(G)
    if m.groups == m.in_channels == m.out_channels:  # depthwise: each channel its own kernel
        weight = m.weight.repeat(G, 1, 1, 1)
        if m.dilation != (1, 1) and bias is None and depthwise.phase_applies(m):
            return depthwise.dilated(m, x, weight)
        if bias is None:
            return depthwise.conv2d(x, weight, m.stride, m.padding, m.dilation, G * m.groups)
        return F.conv2d(x, weight, bias, m.stride, m.padding, m.dilation, G * m.groups)
    if m.groups == 1 and m.kernel_size == (1, 1):  # pointwise: block-diagonal, one dense conv
        co, ci = m.out_channels, m.in_channels
        weight = torch.block_diag(*[m.weight.view(co, ci)] * G).view(G * co, G * ci, 1, 1)
        return F.conv2d(x, weight, bias, m.stride, m.padding)
    return F.conv2d(x, m.weight.repeat(G, 1, 1, 1), bias, m.stride, m.padding, m.dilation, G * m.groups)


def bn_applies(bn: nn.Module) -> bool:
    return type(bn) is nn.BatchNorm2d and not bn.affine


def batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, G: int, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``scale · bn(images)`` of a folded ``x`` for a non-affine ``bn`` (:func:`bn_applies`), its running
    statistics updated as the module's forward would."""
    C = bn.num_features
    if bn.training or not bn.track_running_stats:
        y, mean, var = _FoldedBatchNorm.apply(x, G, bn.eps, scale)
        if bn.training and bn.track_running_stats:
            update_running_stats(bn, mean, unbiased(var, x.numel() // C))
        return y
    y = F.batch_norm(x, bn.running_mean.repeat(G), bn.running_var.repeat(G), None, None, False, 0.0, bn.eps)
    return y if scale is None else y * scale


def unbiased(var: torch.Tensor, n: int) -> torch.Tensor:
    """The unbiased variance of ``n`` values from their biased ``var`` (a BatchNorm's running update)."""
    return var * (n / max(n - 1, 1))


def normalize(x: torch.Tensor, G: int, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(training-mode non-affine BatchNorm of the images of a folded ``x``, batch mean, biased batch variance)."""
    return _FoldedBatchNorm.apply(x, G, eps, None)


class _FoldedBatchNorm(torch.autograd.Function):
    """Training-mode BatchNorm of c channels on a folded [N/G, G·c, H, W] tensor, statistics pooled over the
    G groups, times an optional scalar ``scale``. Returns (output, batch mean, biased batch variance)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, G: int, eps: float, scale: Optional[torch.Tensor]):
        c = x.shape[1] // G
        _, mean_g, invstd_g = torch.native_batch_norm(x, None, None, None, None, True, 0.0, eps)
        mean_g = mean_g.double().view(G, c)
        var_g = (invstd_g.double().pow(-2) - eps).clamp(min=0).view(G, c)
        mean = mean_g.mean(0)  # equal counts per group: the pooled mean and (biased) variance
        var = (var_g + (mean_g - mean) ** 2).mean(0)
        mean, var = mean.to(x.dtype), var.to(x.dtype)
        rm, rv = mean.repeat(G), var.repeat(G)
        weight = None if scale is None else scale.to(x.dtype).expand(G * c).contiguous()
        y = F.batch_norm(x, rm, rv, weight, None, False, 0.0, eps)
        ctx.save_for_backward(x, rm, rv, scale)
        ctx.G, ctx.eps = G, eps
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor, _gm: Any, _gv: Any):
        x, rm, rv, scale = ctx.saved_tensors
        G = ctx.G
        Gc = x.shape[1]
        c = Gc // G
        n = x.numel() // c
        w = torch.ones_like(rm) if scale is None else scale.to(x.dtype).expand(Gc).contiguous()
        # the eval-mode backward: g·w·invstd, and per channel Σ g·x̂ and Σ g (x̂ = (x − mean)·invstd)
        gx, sum_gxhat, sum_g = torch.ops.aten.native_batch_norm_backward(
            g.contiguous(memory_format=format_of(x)), x, w, rm, rv, None, None, False, ctx.eps, [True, True, True])
        invstd = (rv + ctx.eps).rsqrt()
        mean_g = (sum_g.view(G, c).sum(0) / n).repeat(G)
        mean_gxhat = (sum_gxhat.view(G, c).sum(0) / n).repeat(G)
        # training mode: dx = w·invstd·(g − mean(g) − x̂·mean(g·x̂)), the means over every image
        a = -w * invstd * invstd * mean_gxhat
        b = -w * invstd * mean_g + rm * w * invstd * invstd * mean_gxhat
        gx = gx.addcmul_(x, a.view(1, -1, 1, 1)).add_(b.view(1, -1, 1, 1))
        gscale = None
        if scale is not None and ctx.needs_input_grad[3]:
            gscale = sum_gxhat.sum().to(scale.dtype).reshape(scale.shape)
        return gx, None, None, gscale


def run_chain(children: list[nn.Module], h: torch.Tensor, G: int,
              scale: Optional[torch.Tensor] = None) -> Optional[tuple[torch.Tensor, bool]]:
    """The modules ``children`` on a folded ``h`` (convs, non-affine BatchNorms, ReLUs), a last BatchNorm
    also multiplying by ``scale``; None where a module is of another kind. Returns the output and whether
    it is multiplied by ``scale`` already."""
    if not all(isinstance(m, nn.Conv2d) or type(m) is nn.ReLU or bn_applies(m) for m in children):
        return None
    scaled = False
    for i, m in enumerate(children):
        if isinstance(m, nn.Conv2d):
            h = conv(m, h, G)
        elif type(m) is nn.ReLU:
            h = F.relu(h)
        else:
            last = i == len(children) - 1 and scale is not None
            h = batch_norm(m, h, G, scale if last else None)
            scaled = scaled or last
    return h, scaled
