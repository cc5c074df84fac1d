"""The lean conv op (nasbench.spaces.darts.lean) and the column-wise depthwise 5×5 weight gradient
(nasbench.spaces.darts.depthwise) against what they replace.

Compared in float64 with autograd through the plain modules (value, input gradient, every weight gradient, the
op weight's gradient, the BN running statistics), with and without weight gradients (a first-order
architecture step freezes the weights), and the bytes it keeps counted with saved-tensor hooks.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nasbench.algorithms.base import weights_frozen
from nasbench.spaces.darts import depthwise, fast, lean
from nasbench.spaces.darts.ops import DilConv, SepConv
from test_recompute import saved_bytes

pytestmark = pytest.mark.usefixtures("one_thread")


def make_op(kind: str, stride: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    C = 16
    op = {"sep3": lambda: SepConv(C, C, 3, stride, 1, affine=False),
          "sep5": lambda: SepConv(C, C, 5, stride, 2, affine=False),
          "dil3": lambda: DilConv(C, C, 3, stride, 2, 2, affine=False),
          "dil5": lambda: DilConv(C, C, 5, stride, 4, 2, affine=False)}[kind]().double()
    for m in op.modules():  # weights away from their initialisation, so every term shows
        if isinstance(m, nn.Conv2d):
            with torch.no_grad():
                m.weight.normal_(0, 0.5)
    return op


def batch(fmt, seed=1, shape=(6, 16, 9, 11)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("kind", ["sep3", "sep5", "dil3", "dil5"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("scaled", [True, False], ids=["scaled", "unscaled"])
@pytest.mark.parametrize("weights_grad", [True, False], ids=["weight-step", "arch-step"])
def test_lean_chain_equals_the_separate_modules(fmt, kind, stride, scaled, weights_grad):
    op = make_op(kind, stride)
    op2 = copy.deepcopy(op)
    x = batch(fmt).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    w = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    w2 = w.detach().clone().requires_grad_()
    for m in (op, op2):
        m.requires_grad_(weights_grad)
    for _ in range(2):  # two steps: the running statistics move twice
        children = list(op)[1:]
        assert lean.applies(children, torch.relu(x))
        out = lean.lean_chain(children, torch.relu(x), w if scaled else None)
        ref = op2(x2) * w2 if scaled else op2(x2)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        g = batch(fmt, seed=2, shape=tuple(out.shape))
        wants = [x, w] if scaled else [x]
        wants2 = [x2, w2] if scaled else [x2]
        if weights_grad:
            wants, wants2 = wants + list(op.parameters()), wants2 + list(op2.parameters())
        for a, b in zip(torch.autograd.grad(out, wants, g), torch.autograd.grad(ref, wants2, g)):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
    for a, b in zip(op.buffers(), op2.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)


def test_lean_separable_conv_keeps_two_tensors_of_its_size_besides_its_input():
    op = make_op("sep3", 1)
    x = torch.relu(batch(torch.channels_last, shape=(8, 16, 16, 16))).requires_grad_()
    w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    size = x.numel() * x.element_size()
    plain = saved_bytes(lambda: fast.run_module(nn.Sequential(*list(op)[1:]), x) * w)
    kept = saved_bytes(lambda: lean.lean_chain(list(op)[1:], x, w))
    assert plain >= 6 * size  # input, depthwise out, BN in, ReLU out, depthwise out, BN in, BN out
    assert kept <= 3 * size + 16384  # input, first BN's output, last BN's input (+ statistics and weights)
    dil = make_op("dil3", 1)
    assert saved_bytes(lambda: lean.lean_chain(list(dil)[1:], x, w)) <= 2 * size + 16384


def test_lean_chain_does_not_apply_where_it_would_change_the_result():
    op = make_op("sep3", 1)
    x = batch(torch.channels_last)
    children = list(op)[1:]
    assert lean.applies(children, x)
    narrow = list(SepConv(4, 4, 3, 1, 1, affine=False).double())[1:]  # PC-DARTS's slices on CPU: the NCHW detour
    assert not lean.applies(narrow, x[:, :4].contiguous(memory_format=torch.channels_last))
    assert lean.applies(narrow, x[:, :4].contiguous())
    with torch.no_grad():
        assert not lean.applies(children, x)
    affine = SepConv(16, 16, 3, 1, 1, affine=True).double()
    assert not lean.applies(list(affine)[1:], x)
    op.eval()
    assert not lean.applies(children, x)
    assert lean.blocks_of(children[:2]) is None
    assert [len(b) for b in lean.blocks_of(children)] == [3, 3]


def test_weights_frozen_restores_what_required_grad():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    net[1].bias.requires_grad_(False)
    with weights_frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == [True, True, True, False]
    with pytest.raises(RuntimeError):
        with weights_frozen(net):
            raise RuntimeError("boom")
    assert [p.requires_grad for p in net.parameters()] == [True, True, True, False]


@pytest.mark.parametrize("shape", [(6, 16, 9, 11), (3, 5, 4, 3), (2, 8, 12, 12)])
def test_depthwise_5x5_weight_gradient_by_columns_equals_pytorchs(shape):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(shape[1], 1, 5, 5, generator=g, dtype=torch.float64)
    assert depthwise.applies(x, w, 1, 2, 1, shape[1])
    x1, w1 = x.clone().requires_grad_(), w.clone().requires_grad_()
    x2, w2 = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = depthwise.conv2d(x1, w1, 1, 2, 1, shape[1])
    ref = torch.nn.functional.conv2d(x2, w2, None, 1, 2, 1, shape[1])
    assert out.grad_fn is not None and "Depthwise5" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    for a, b in zip(torch.autograd.grad(out, [x1, w1], grad), torch.autograd.grad(ref, [x2, w2], grad)):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


def test_depthwise_columns_apply_only_to_stride_1_padding_2_channels_last_5x5():
    x = batch(torch.channels_last)
    w5, w3 = torch.zeros(16, 1, 5, 5, dtype=torch.float64), torch.zeros(16, 1, 3, 3, dtype=torch.float64)
    assert depthwise.applies(x, w5, 1, 2, 1, 16)
    assert not depthwise.applies(x, w3, 1, 1, 1, 16)
    assert not depthwise.applies(x, w5, 2, 2, 1, 16)
    assert not depthwise.applies(x, w5, 1, 4, 2, 16)
    assert not depthwise.applies(x.contiguous(), w5, 1, 2, 1, 16)
    assert not depthwise.applies(x[..., :2], w5, 1, 2, 1, 16)
    with torch.no_grad():
        assert depthwise.conv2d(x, w5, 1, 2, 1, 16).grad_fn is None


def test_benchmarks_ops_depthwise_rows_compare_the_column_form_with_pytorch():
    import argparse
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ops.py"
    spec = importlib.util.spec_from_file_location("benchmark_ops", path)
    ops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ops)
    rows = ops.depthwise_rows(argparse.Namespace(batch_size=4, channels=8, size=8, repeats=1), torch.device("cpu"))
    assert [r["op"] for r in rows][-1] == "depthwise 5x5 weight gradient by columns"
    assert rows[-1]["rel_diff"] <= 1e-5 and all(r["ms"] > 0 for r in rows)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("weights_grad", [True, False], ids=["weight-step", "arch-step"])
def test_preprocessing_conv_bn_keeps_its_output_and_equals_the_modules(fmt, weights_grad):
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(24, 16, 1, bias=False).double(), nn.BatchNorm2d(16, affine=False).double()
    conv2, bn2 = copy.deepcopy(conv), copy.deepcopy(bn)
    conv.requires_grad_(weights_grad)
    conv2.requires_grad_(weights_grad)
    x = torch.relu(batch(fmt, shape=(6, 24, 9, 11))).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    for _ in range(2):
        assert lean.conv_bn_applies(conv, bn, x)
        out, ref = lean.conv_bn(conv, bn, x), bn2(conv2(x2))
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        g = batch(fmt, seed=4, shape=tuple(out.shape))
        wants, wants2 = ([x, conv.weight], [x2, conv2.weight]) if weights_grad else ([x], [x2])
        for a, b in zip(torch.autograd.grad(out, wants, g), torch.autograd.grad(ref, wants2, g)):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
    for a, b in zip(bn.buffers(), bn2.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
    size = 6 * 16 * 9 * 11 * 8
    kept = saved_bytes(lambda: lean.conv_bn(conv, bn, x))
    assert kept <= x.numel() * 8 + size + 4096  # the input and the output, not the BN's input
    assert not lean.conv_bn_applies(conv, nn.BatchNorm2d(16, affine=True).double(), x)
