"""A separable or dilated conv op of the search supernet as one autograd step that keeps one tensor of its own
at most; a cell's preprocessing (1×1 conv → BN) as one that keeps the BN's output instead of its input.

The DARTS space's conv ops (after the ReLU the source shares) are blocks of ``depthwise conv → pointwise conv →
BN``, with a ReLU between the two blocks of a separable conv. Run module by module, autograd keeps for the
backward every block's depthwise output (the pointwise conv's input), its pointwise output (the BN's input)
and, between two blocks, the ReLU's output: five tensors of the op's size for a separable conv, two for a
dilated one, besides the op's input. :func:`lean_chain` keeps

* the op's input, or, given it (``pre``), the state the input is the ReLU of (:func:`relu_keeping_input`:
  the state's identity, pools and next cells keep the state anyway, and the ReLU's output need not be kept);
* for a BatchNorm that a ReLU follows, its output instead of its input: a BatchNorm without affine
  parameters outputs x̂ = (z − μ)/σ itself, and its backward needs z only to form x̂ (``native_batch_norm_backward``
  on x̂, with mean 0, 1/std 1 and 1/σ as the affine weight, computes the same gradient); the ReLU's backward
  needs only the sign of x̂, and the next depthwise conv's input is relu(x̂), recomputed;
* for the last BatchNorm (into which the op's weight folds, as in :func:`~nasbench.spaces.recompute.scaled_bn`)
  nothing but its batch statistics: its input is recomputed in the backward by the last block's depthwise and
  pointwise convs, from the kept tensor before them;

and recomputes the depthwise convs in the backward (the cheapest convs of the op: one multiply-add per
kernel tap and channel), which a weight step's backward needs for the convs' weight gradients anyway. A
separable conv keeps one tensor of its own instead of five, a dilated conv none instead of two; the last
pointwise conv runs twice (a GDAS search step takes about 5% longer for it, a DARTS step about 1%; what a GDAS
forward keeps falls by 30%), no BatchNorm does. The running statistics are updated once, in the forward. The backward runs
the kernels of the separate steps (``convolution_backward``, ``native_batch_norm_backward``,
``threshold_backward``). On CPU a dilated depthwise conv forms its gradients as an undilated one over pixel
phases (:func:`~nasbench.spaces.darts.depthwise.dilated_backward`; its forward is
:func:`~nasbench.spaces.darts.depthwise.dilated`), as in the fast supernet's module path.
"""

from __future__ import annotations

import itertools
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nasbench.spaces.darts import depthwise
from nasbench.spaces.edges import format_of, narrow_detour
from nasbench.spaces.recompute import _bn_backward, _bn_forward, _running


def blocks_of(children: Sequence[nn.Module]) -> Optional[list[tuple[nn.Conv2d, nn.Conv2d, nn.BatchNorm2d]]]:
    """``[(depthwise, pointwise, bn), ...]`` when ``children`` is ``dw, pw, bn[, ReLU, dw, pw, bn]*`` with
    bias-free convs, a 1×1 stride-1 pointwise conv and BatchNorms without affine parameters (the search
    supernet's); otherwise None."""
    blocks, i, n = [], 0, len(children)
    while i + 2 < n:
        dw, pw, bn = children[i:i + 3]
        if not (type(dw) is nn.Conv2d and dw.groups == dw.in_channels == dw.out_channels and dw.bias is None
                and dw.padding_mode == "zeros" and isinstance(dw.padding, tuple)
                and type(pw) is nn.Conv2d and pw.kernel_size == (1, 1) and pw.stride == (1, 1)
                and pw.padding == (0, 0) and pw.groups == 1 and pw.bias is None
                and type(bn) is nn.BatchNorm2d and not bn.affine):
            return None
        blocks.append((dw, pw, bn))
        i += 3
        if i == n:
            return blocks
        if type(children[i]) is not nn.ReLU:
            return None
        i += 1
    return None


def applies(children: Sequence[nn.Module], x: torch.Tensor) -> bool:
    """Whether :func:`lean_chain` runs ``children`` on ``x``: the block pattern of :func:`blocks_of`, every BN in
    training mode, float32/float64, autograd recording, no autocast, and no narrow BatchNorm detour (PC-DARTS's
    slices on CPU)."""
    blocks = blocks_of(children)
    return (blocks is not None and all(bn.training for _, _, bn in blocks) and x.dim() == 4
            and x.dtype in (torch.float32, torch.float64) and torch.is_grad_enabled()
            and not torch.is_autocast_enabled(x.device.type)
            and not any(narrow_detour(x, bn.num_features) for _, _, bn in blocks))


def lean_chain(children: Sequence[nn.Module], x: torch.Tensor, scale: Optional[torch.Tensor] = None,
               pre: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The modules ``children`` on ``x`` (times ``scale``, a scalar tensor, when given), keeping only what the
    module docstring lists. ``pre``: the tensor ``x`` is the ReLU of (from :func:`relu_keeping_input`), kept
    instead of ``x`` and put through the ReLU again in the backward where the convs' weights need their
    input. Only where :func:`applies`."""
    blocks = blocks_of(children)
    assert blocks is not None
    weights: list[torch.Tensor] = []
    running: list[tuple] = []
    for dw, pw, bn in blocks:
        weights += [dw.weight, pw.weight]
        running.append(_running(bn) + (bn.eps,))
    return _LeanChain.apply(x, scale, pre, [dw for dw, _, _ in blocks], running, *weights)


def relu_applies(x: torch.Tensor) -> bool:
    """Whether the conv ops on ``relu(x)`` would all run as :func:`lean_chain` steps, so that
    :func:`relu_keeping_input` is the ReLU to give them: float32/float64, autograd recording, no autocast, no
    narrow BatchNorm detour (the DARTS space's conv ops keep the input's channels)."""
    return (x.dim() == 4 and x.dtype in (torch.float32, torch.float64) and torch.is_grad_enabled()
            and x.requires_grad and not torch.is_autocast_enabled(x.device.type)
            and not narrow_detour(x, x.shape[1]))


def relu_keeping_input(x: torch.Tensor) -> torch.Tensor:
    """``F.relu(x)`` whose backward reads ``x`` (``x ≤ 0`` where ``relu(x) ≤ 0``: the same gradient) instead of its
    output. A state's ReLU feeds the conv ops of its edges; when they keep the state (``lean_chain(..., pre=x)``),
    which the identity, the pools and the next cells keep anyway, the ReLU's output is kept by nothing and lives
    only while the cell runs."""
    return _ReluKeepingInput.apply(x)


class _ReluKeepingInput(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return F.relu(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, x, 0)


def _bn_backward_from_output(grad: torch.Tensor, y: torch.Tensor, invstd: torch.Tensor, eps: float) -> torch.Tensor:
    """The input gradient of a training-mode BatchNorm without affine parameters from its output ``y`` = x̂:
    ``native_batch_norm_backward`` on x̂ with mean 0, 1/std 1 and the batch's 1/σ as the affine weight."""
    return torch.ops.aten.native_batch_norm_backward(grad, y, invstd, None, None, torch.zeros_like(invstd),
                                                     torch.ones_like(invstd), True, eps, [True, False, False])[0]


class _LeanChain(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: Optional[torch.Tensor], pre: Optional[torch.Tensor], dws: list,
                running: list, *weights: torch.Tensor) -> torch.Tensor:
        h, kept, stats = x, [], []
        last = len(dws) - 1
        for i, dw in enumerate(dws):
            a = _depthwise(dw, h, weights[2 * i])
            z = F.conv2d(a, weights[2 * i + 1])
            del a
            rm, rv, momentum, eps = running[i]
            if i == last:
                y, mean, invstd = _bn_forward(z, None, None, scale, rm, rv, momentum, eps)
                kept.append(None)  # recomputed in the backward
            else:
                y, mean, invstd = torch.native_batch_norm(z, None, None, rm, rv, True, momentum, eps)
                kept.append(y)
                h = F.relu(y)
            del z
            stats += [mean, invstd]
        ctx.save_for_backward(x if pre is None else pre, scale, *kept, *stats, *weights)
        ctx.dws, ctx.eps, ctx.from_pre = dws, [r[3] for r in running], pre is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        n = len(ctx.dws)
        saved = ctx.saved_tensors
        x, scale = saved[0], saved[1]
        kept, stats, weights = saved[2:2 + n], saved[2 + n:2 + 3 * n], saved[2 + 3 * n:]
        need_x, need_scale = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_w = ctx.needs_input_grad[5:]
        grad_w: list[Optional[torch.Tensor]] = [None] * len(weights)
        grad_scale = None
        fmt = format_of(x)
        g = grad.contiguous(memory_format=fmt)

        def block_input(i: int) -> torch.Tensor:  # the depthwise conv's input, recomputed
            return (F.relu(x) if ctx.from_pre else x) if i == 0 else F.relu(kept[i - 1])

        for i in reversed(range(n)):
            mean, invstd = stats[2 * i], stats[2 * i + 1]
            dw, w_dw, w_pw = ctx.dws[i], weights[2 * i], weights[2 * i + 1]
            h = a = None
            if i == n - 1:  # the last BN's input again: the block's two convs on its input
                h = block_input(i)
                a = _depthwise(dw, h, w_dw)
                z = F.conv2d(a, w_pw)
                g, _, _, grad_scale = _bn_backward(g, z, None, None, scale, mean, invstd, ctx.eps[i],
                                                   True, False, False, need_scale)
                del z
            else:  # the ReLU's backward, then the BN's from its output x̂ (see the module docstring)
                y = kept[i]
                g = torch.ops.aten.threshold_backward(g, y, 0)
                g = _bn_backward_from_output(g, y, invstd, ctx.eps[i])
            need_h, need_dw, need_pw = i > 0 or need_x, need_w[2 * i], need_w[2 * i + 1]
            # the convs' inputs are recomputed only for their weights' gradients (none in a first-order
            # architecture step); an input gradient alone needs the input's shape and layout, not its values
            if h is None and (need_dw or need_pw):
                h = block_input(i)
            h_shape = x.shape if i == 0 else kept[i - 1].shape
            if a is None and need_pw:
                a = _depthwise(dw, h, w_dw)
            elif a is None:
                a = torch.empty(g.shape[:1] + w_pw.shape[1:2] + g.shape[2:], dtype=g.dtype, device=g.device,
                                memory_format=fmt)
            g, grad_w[2 * i + 1], _ = torch.ops.aten.convolution_backward(
                g, a, w_pw, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, need_pw, False])
            del a
            if not (need_h or need_dw):
                g = None
                break
            if depthwise.phased(dw, g):
                g, grad_w[2 * i] = depthwise.dilated_backward(dw, g, h, h_shape, fmt, w_dw, need_h, need_dw)
                del h
                continue
            if h is None:
                h = torch.empty(h_shape, dtype=g.dtype, device=g.device, memory_format=fmt)
            fast_w = need_dw and depthwise.applies(h, w_dw, dw.stride, dw.padding, dw.dilation, dw.groups)
            g_h, grad_w[2 * i], _ = torch.ops.aten.convolution_backward(
                g, h, w_dw, None, list(dw.stride), list(dw.padding), list(dw.dilation), False, [0, 0],
                dw.groups, [need_h, need_dw and not fast_w, False])
            if fast_w:
                grad_w[2 * i] = depthwise.weight_grad(g, h, w_dw)
            g = g_h
            del h
        return (g, grad_scale, None, None, None, *grad_w)


def _depthwise(dw: nn.Conv2d, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if depthwise.phased(dw, h):
        return depthwise.dilated(dw, h, weight)
    return F.conv2d(h, weight, None, dw.stride, dw.padding, dw.dilation, dw.groups)


# ---------------------------------------------------------------------------------------------- preprocessing
def conv_bn_applies(conv: nn.Module, bn: nn.Module, x: torch.Tensor) -> bool:
    """Whether :func:`conv_bn` computes ``bn(conv(x))`` here: a bias-free stride-1 1×1 conv and a training-mode
    BatchNorm without affine parameters (a search cell's preprocessing), float32/float64, autograd recording,
    no autocast, no narrow BatchNorm detour."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is None
            and type(bn) is nn.BatchNorm2d and not bn.affine and bn.training and x.dim() == 4
            and x.dtype in (torch.float32, torch.float64) and torch.is_grad_enabled()
            and not torch.is_autocast_enabled(x.device.type) and not narrow_detour(x, bn.num_features))


def conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(conv(x))`` keeping the conv's input and the BN's output (the state the cell's edges read, which
    the pools and the identity's weight keep anyway) instead of the BN's input: the BN's backward runs from its
    output, as in :func:`lean_chain`. Nothing is recomputed. Only where :func:`conv_bn_applies`."""
    return _ConvBNOut.apply(x, conv.weight, *_running(bn), bn.eps)


class _ConvBNOut(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, running_mean: Optional[torch.Tensor],
                running_var: Optional[torch.Tensor], momentum: float, eps: float) -> torch.Tensor:
        z = F.conv2d(x, weight)
        y, _, invstd = torch.native_batch_norm(z, None, None, running_mean, running_var, True, momentum, eps)
        del z
        ctx.save_for_backward(x, weight, y, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, weight, y, invstd = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        g = grad.contiguous(memory_format=format_of(x))
        g = _bn_backward_from_output(g, y, invstd, ctx.eps)
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            g, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [need_x, need_w, False])
        return grad_x, grad_w, None, None, None, None


def conv_bn_parts(conv: nn.Conv2d, bn: nn.BatchNorm2d, parts: Sequence[torch.Tensor],
                  relu: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``bn(conv(relu(cat(parts, 1))))``: a cell's output (the concatenation of its node states, the parts)
    preprocessed by a next cell, keeping the parts and the BN's output instead of the ReLU's output and the BN's
    input. The parts are kept anyway (by their own edges' ops and ReLUs: :func:`relu_keeping_input`), so the
    preprocessing adds only its output to what the step keeps: nothing keeps the ReLU of the concatenation.
    ``relu``, when given, is that ReLU already taken (without autograd: a cell output's two preprocessings
    share it, :class:`~nasbench.spaces.darts.fast.ReluMemo`); the forward then reads it instead of taking the
    ReLU of the parts into a concatenation of its own. The backward takes the ReLU's gradient from the parts, and
    writes their ReLU into one concatenation again for the conv's weight gradient. Only where
    :func:`conv_bn_applies` (for the concatenation)."""
    return _ConvBNParts.apply(conv.weight, *_running(bn), bn.eps, None if relu is None else relu.detach(), *parts)


class _ConvBNParts(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, running_mean: Optional[torch.Tensor],
                running_var: Optional[torch.Tensor], momentum: float, eps: float, relu: Optional[torch.Tensor],
                *parts: torch.Tensor) -> torch.Tensor:
        fmt = format_of(parts[0])
        z = F.conv2d(_relu_cat(parts, fmt) if relu is None else relu.contiguous(memory_format=fmt), weight)
        y, _, invstd = torch.native_batch_norm(z, None, None, running_mean, running_var, True, momentum, eps)
        del z
        ctx.save_for_backward(weight, y, invstd, *parts)
        ctx.eps, ctx.fmt = eps, fmt
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        weight, y, invstd, *parts = ctx.saved_tensors
        need_w, need_parts = ctx.needs_input_grad[0], ctx.needs_input_grad[6:]
        fmt = ctx.fmt
        g = _bn_backward_from_output(grad.contiguous(memory_format=fmt), y, invstd, ctx.eps)
        # the conv's input again for its weight gradient; its input gradient alone needs only the shape
        h = _relu_cat(parts, fmt) if need_w else _empty_cat(parts, fmt)
        grad_h, grad_w, _ = torch.ops.aten.convolution_backward(
            g, h, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [any(need_parts), need_w, False])
        del h, g
        grads = [torch.ops.aten.threshold_backward(grad_h[:, span], p, 0).contiguous(memory_format=format_of(p))
                 if need else None for p, span, need in zip(parts, _channel_spans(parts), need_parts)]
        return (grad_w, None, None, None, None, None, *grads)


def _channel_spans(parts: Sequence[torch.Tensor]) -> list[slice]:
    """Each part's channels in the concatenation of ``parts`` along dim 1."""
    stops = list(itertools.accumulate(p.shape[1] for p in parts))
    return [slice(stop - p.shape[1], stop) for p, stop in zip(parts, stops)]


def _empty_cat(parts: Sequence[torch.Tensor], fmt: torch.memory_format) -> torch.Tensor:
    """An uninitialised tensor of the concatenation's shape, in ``fmt``."""
    first = parts[0]
    return torch.empty((first.shape[0], sum(p.shape[1] for p in parts), *first.shape[2:]), dtype=first.dtype,
                       device=first.device, memory_format=fmt)


def _relu_cat(parts: Sequence[torch.Tensor], fmt: torch.memory_format) -> torch.Tensor:
    """``relu(cat(parts, 1))`` in ``fmt``, the same values as the ReLU of the cell's output, in one pass: each
    part's ReLU written into its channels of the concatenation."""
    out = _empty_cat(parts, fmt)
    for p, span in zip(parts, _channel_spans(parts)):
        torch.clamp_min(p, 0, out=out[:, span])
    return out
