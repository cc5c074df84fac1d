"""A stride-1 depthwise 5×5 convolution whose weight gradient the CPU forms about 4× faster.

PyTorch's CPU (oneDNN) kernel for the weight gradient of a channels_last depthwise convolution is fast for
kernels up to 3 columns wide and several times slower beyond: at 64×16×32×32, 0.21 ms for 3×3, 0.31 ms for
5×3, 3.8–4.3 ms for 5×5 (``benchmarks/ops.py --depthwise``). The search space's 5×5 separable and dilated
convs (the latter as a 5×5 conv over pixel phases) pay that in every weight step.

The weight gradient of a stride-1 5×5 conv with padding 2 is, column by column of the kernel, the weight
gradient of a narrower conv: columns 1–3 are a 5×3 conv with padding (2, 1) of the same input (the same
output size, so the same gradient tensor); column 0 is a 5×1 conv with padding (2, 0) of the input shifted
right by two pixels (zeros entering), column 4 of the input shifted left by two. Each tap is the same sum of
the same products as in the 5×5 kernel's gradient (the tests compare them in float64). The input gradient and
the forward are PyTorch's own.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from nasbench.spaces.edges import format_of
from nasbench.spaces.recompute import _pair


def applies(x: torch.Tensor, weight: torch.Tensor, stride: Any, padding: Any, dilation: Any, groups: int) -> bool:
    """Whether :func:`conv2d` computes the weight gradient by columns: a channels_last CPU float32/float64
    input of at least 3 columns, a bias-free depthwise 5×5 kernel, stride 1, padding 2, no dilation."""
    return (x.device.type == "cpu" and x.dim() == 4 and x.shape[3] > 2 and format_of(x) == torch.channels_last
            and x.dtype in (torch.float32, torch.float64) and weight.shape[1:] == (1, 5, 5)
            and groups == x.shape[1] == weight.shape[0] and _pair(stride) == (1, 1) and _pair(padding) == (2, 2)
            and _pair(dilation) == (1, 1) and not torch.is_autocast_enabled("cpu"))


def conv2d(x: torch.Tensor, weight: torch.Tensor, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
           groups: int = 1) -> torch.Tensor:
    """``F.conv2d(x, weight, None, stride, padding, dilation, groups)``; where :func:`applies` and a gradient is
    recorded, its backward forms the weight gradient by columns (:func:`weight_grad`)."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad) \
            and applies(x, weight, stride, padding, dilation, groups):
        return _Depthwise5.apply(x, weight)
    return F.conv2d(x, weight, None, stride, padding, dilation, groups)


def _backward(g: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: Any, padding: Any, dilation: Any,
              groups: int, mask: list) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    out = torch.ops.aten.convolution_backward(g, x, weight, None, list(_pair(stride)), list(_pair(padding)),
                                              list(_pair(dilation)), False, [0, 0], groups, [*mask, False])
    return out[0], out[1]


def weight_grad(g: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The gradient of a stride-1, padding-2 depthwise 5×5 conv's ``weight`` for the output gradient ``g``, by
    kernel columns (see the module docstring). Only where :func:`applies`."""
    C = x.shape[1]
    g = g.contiguous(memory_format=torch.channels_last)
    middle = _backward(g, x, weight.new_empty(C, 1, 5, 3), 1, (2, 1), 1, C, [False, True])[1]
    column = weight.new_empty(C, 1, 5, 1)
    left = F.pad(x[..., :-2], (2, 0)).contiguous(memory_format=torch.channels_last)  # left[j] = x[j − 2]
    first = _backward(g, left, column, 1, (2, 0), 1, C, [False, True])[1]
    del left
    right = F.pad(x[..., 2:], (0, 2)).contiguous(memory_format=torch.channels_last)  # right[j] = x[j + 2]
    last = _backward(g, right, column, 1, (2, 0), 1, C, [False, True])[1]
    return torch.cat([first, middle, last], dim=3)


class _Depthwise5(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, None, 1, 2, 1, x.shape[1])

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        g = g.contiguous(memory_format=torch.channels_last)
        grad_x = _backward(g, x, weight, 1, 2, 1, x.shape[1], [True, False])[0] if need_x else None
        grad_w = weight_grad(g, x, weight) if need_w else None
        return grad_x, grad_w
