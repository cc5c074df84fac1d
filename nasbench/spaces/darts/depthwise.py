"""Depthwise convolutions in the forms the CPU computes fastest: a 5×5 one whose weight gradient is formed by
kernel columns, and a dilated one as an undilated conv over pixel phases.

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

PyTorch's CPU kernels for the backward of dilated depthwise convolutions are several times slower than for
undilated ones (the forward kernel is not: in channels_last it takes half the time of the phase form below,
same numbers). A same-padded depthwise conv with dilation d and stride 1 is exactly an undilated conv over
the d×d pixel phases of its input; with stride d, an undilated one of the stride-d subsampled input.
:func:`dilated` runs PyTorch's forward in channels_last and forms the gradients in the phase form
(:func:`dilated_backward`, which a caller that runs the conv outside autograd uses directly:
:mod:`nasbench.spaces.darts.lean`); an NCHW input runs the phase form both ways (PyTorch's NCHW 5×5 dilated
forward is the slower one there).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nasbench.spaces.edges import format_of, layout_slice
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


# ---------------------------------------------------------------------------------------------- dilated convs
def phase_applies(m: nn.Conv2d) -> bool:
    """Whether :func:`dilated` computes ``m``: a bias-free, same-padded depthwise conv with an odd square kernel,
    dilation d (the same both ways) and stride 1 or d."""
    d, s, k, p = m.dilation[0], m.stride[0], m.kernel_size[0], m.padding
    return (m.groups == m.in_channels == m.out_channels and m.bias is None and m.dilation == (d, d)
            and m.stride == (s, s) and m.kernel_size == (k, k) and k % 2 == 1
            and p == (d * (k - 1) // 2,) * 2 and s in (1, d) and m.padding_mode == "zeros")


def phased(m: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether ``m`` on ``x`` runs as pixel phases (:func:`dilated`): a dilated conv where :func:`phase_applies`,
    on the CPU."""
    return x.device.type == "cpu" and m.dilation != (1, 1) and phase_applies(m)


class _PhaseForm:
    """Where the d² pixel phases of an (N, C, H, W) tensor go for :func:`dilated`. ``to`` maps the conv's input
    (and, at stride 1, its output's gradient) into the undilated conv's space: an [P, C', h, w] tensor in
    channels_last; ``back`` maps the undilated conv's output (and its input's gradient) back. Both only permute
    pixels (after padding H and W up to multiples of d with zeros), so each one's adjoint is the other.

    A channels_last tensor folds its column phases into the channels (C' = d·C, each kernel repeated d times)
    and its row phases into the batch (P = d·N); an NCHW one stacks its d² phase images in the batch
    (P = d²·N, C' = C): see :func:`dilated`."""

    def __init__(self, shape: torch.Size, fmt: torch.memory_format, d: int):
        self.N, self.C, self.H, self.W = shape
        self.d = d
        self.Hp, self.Wp = -(-self.H // d) * d, -(-self.W // d) * d
        self.h, self.w = self.Hp // d, self.Wp // d
        self.folded = fmt == torch.channels_last

    @property
    def channels(self) -> int:
        return self.d * self.C if self.folded else self.C

    def to(self, t: torch.Tensor) -> torch.Tensor:
        N, C, h, w, d = self.N, self.C, self.h, self.w, self.d
        if (self.Hp, self.Wp) != (self.H, self.W):  # zeros at the end: the conv pads with zeros anyway
            t = F.pad(t, (0, self.Wp - self.W, 0, self.Hp - self.H))
        if self.folded:
            t = t.permute(0, 2, 3, 1).reshape(N, h, d, w, d * C).permute(2, 0, 1, 3, 4).reshape(d * N, h, w, d * C)
        else:
            if format_of(t) == torch.channels_last:
                t = t.permute(0, 2, 3, 1).reshape(N, h, d, w, d, C).permute(2, 4, 0, 1, 3, 5)
            else:
                t = t.reshape(N, C, h, d, w, d).permute(3, 5, 0, 2, 4, 1)
            t = t.reshape(d * d * N, h, w, C)
        return t.permute(0, 3, 1, 2)

    def empty(self, like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of :meth:`to`'s shape and layout (an input gradient needs no values)."""
        P = self.d * self.N if self.folded else self.d * self.d * self.N
        return like.new_empty(P, self.h, self.w, self.channels).permute(0, 3, 1, 2)

    def back(self, t: torch.Tensor) -> torch.Tensor:
        N, C, h, w, d = self.N, self.C, self.h, self.w, self.d
        t = t.permute(0, 2, 3, 1)
        if self.folded:
            t = t.reshape(d, N, h, w, d * C).permute(1, 2, 0, 3, 4)
        else:
            t = t.reshape(d, d, N, h, w, C).permute(2, 3, 0, 4, 1, 5)
        t = t.reshape(N, self.Hp, self.Wp, C).permute(0, 3, 1, 2)
        if (self.Hp, self.Wp) != (self.H, self.W):
            t = t[:, :, :self.H, :self.W]
        return t

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        return w.repeat(self.d, 1, 1, 1) if self.folded else w

    def weight_grad(self, g: torch.Tensor) -> torch.Tensor:
        return g.view(self.d, self.C, *g.shape[1:]).sum(0) if self.folded else g


def dilated(m: nn.Conv2d, x: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``m(x)`` for a conv where :func:`phase_applies` (dilation d, padding d·(k−1)/2), its gradients formed as
    those of an undilated conv (padding (k−1)/2); ``weight`` (one kernel per channel of ``x``) instead of
    ``m.weight`` for images folded into channels. A channels_last ``x`` runs PyTorch's dilated forward
    (faster than the phase form's two copies and conv, and the same numbers: the same products summed in
    the same order), its backward :func:`dilated_backward`; an NCHW ``x`` runs the phase form below.

    Output pixel (i, j) sums w[a, b]·x[i + d(a − r), j + d(b − r)] (r = (k−1)/2): only input pixels of the
    same phase (i mod d, j mod d) meet, so each of the d² phase images convolves undilated, and the results
    interleave back (:class:`_PhaseForm`). With stride d only phase (0, 0) is needed: the conv runs on
    x[::d, ::d].

    In the phase form a channels_last tensor (here the backward's) puts its column phases into channels, a
    view, and its row phases into the batch, one copy whose contiguous runs are whole rows (d² phase images, copied in runs of C numbers, took twice as
    long: 3.5 against 1.7 ms forward and backward at 64×4×32×32, k=3); an NCHW x stacks the d² phase images
    in the batch (:func:`phase_images` is that form for either layout). Every reshape goes through the
    [N, H, W, C] view, so the input's gradient comes back in channels_last."""
    weight = m.weight if weight is None else weight
    if format_of(x) == torch.channels_last:
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            return _Dilated.apply(x, weight, m)
        return dilated_forward(m, x, weight)
    d, pad = m.dilation[0], (m.kernel_size[0] - 1) // 2
    if m.stride[0] == d:
        sub = layout_slice(x, (slice(None), slice(None), slice(None, None, d), slice(None, None, d)))
        return conv2d(sub, weight, 1, pad, 1, weight.shape[0])
    form = _PhaseForm(x.shape, format_of(x), d)
    return form.back(conv2d(form.to(x), form.weight(weight), 1, pad, 1, form.channels))


def dilated_forward(m: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """PyTorch's dilated depthwise conv of ``m``'s geometry with ``weight`` (no autograd of its own)."""
    return F.conv2d(x, weight, None, m.stride, m.padding, m.dilation, weight.shape[0])


class _Dilated(torch.autograd.Function):
    """PyTorch's dilated forward, :func:`dilated_backward`'s gradients; keeps the input (for the weight's
    gradient) and the weight."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, m: nn.Conv2d) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.m, ctx.fmt = m, format_of(x)
        return dilated_forward(m, x, weight)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], None]:
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x, grad_w = dilated_backward(ctx.m, g, x if need_w else None, x.shape, ctx.fmt, weight, need_x, need_w)
        return grad_x, grad_w, None


def phase_images(x: torch.Tensor, weight: torch.Tensor, d: int, pad: int) -> torch.Tensor:
    """The stride-1 phase conv of ``x`` (N, C, H, W divisible by d) with its d² phase images stacked in the
    batch, whatever ``x``'s layout: :func:`dilated`'s form for NCHW (``benchmarks/ops.py`` times it in
    channels_last against the folded form)."""
    form = _PhaseForm(x.shape, torch.contiguous_format, d)
    return form.back(conv2d(form.to(x), weight, 1, pad, 1, x.shape[1]))


def dilated_backward(m: nn.Conv2d, g: torch.Tensor, x: Optional[torch.Tensor], shape: torch.Size,
                     fmt: torch.memory_format, weight: torch.Tensor, need_x: bool, need_w: bool
                     ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The gradients of :func:`dilated` (``m`` with ``weight``, on an input of ``shape`` in layout ``fmt``) for
    its output's gradient ``g``: (input's, weight's), each None when not asked for. ``x``, the input, is needed
    only for the weight's gradient (None otherwise)."""
    d, pad = m.dilation[0], (m.kernel_size[0] - 1) // 2
    if m.stride[0] == d:
        index = (slice(None), slice(None), slice(None, None, d), slice(None, None, d))
        sub = x[index].contiguous(memory_format=fmt) if need_w else torch.empty_like(g, memory_format=fmt)
        g_sub, grad_w = _conv_backward(g.contiguous(memory_format=fmt), sub, weight, pad, weight.shape[0],
                                       need_x, need_w)
        grad_x = None
        if need_x:
            grad_x = torch.empty(shape, dtype=g.dtype, device=g.device, memory_format=fmt).zero_()
            grad_x[index] = g_sub
        return grad_x, grad_w
    form = _PhaseForm(shape, fmt, d)
    xp = form.to(x) if need_w else form.empty(g)
    gp, gwp = _conv_backward(form.to(g), xp, form.weight(weight), pad, form.channels, need_x, need_w)
    grad_x = form.back(gp).contiguous(memory_format=fmt) if need_x else None
    return grad_x, (form.weight_grad(gwp) if need_w else None)


def _conv_backward(g: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, pad: int, groups: int, need_x: bool,
                   need_w: bool) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The gradients of an undilated stride-1 depthwise conv with padding ``pad``, the weight's by columns
    where :func:`applies`."""
    by_columns = need_w and applies(x, weight, 1, pad, 1, groups)
    grad_x, grad_w = _backward(g, x, weight, 1, pad, 1, groups, [need_x, need_w and not by_columns])
    if by_columns:
        grad_w = weight_grad(g, x, weight)
    return (grad_x if need_x else None), (grad_w if need_w else None)
