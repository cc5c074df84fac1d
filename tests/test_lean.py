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
@pytest.mark.parametrize("from_state", [False, True], ids=["relu-input", "state-kept"])
def test_lean_chain_equals_the_separate_modules(fmt, kind, stride, scaled, weights_grad, from_state):
    """``from_state``: the chain keeps the state its input is the ReLU of (``pre``), the ReLU the one that keeps
    its input, as a fast source gives them."""
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
        if from_state:
            assert lean.relu_applies(x)
            out = lean.lean_chain(children, lean.relu_keeping_input(x), w if scaled else None, pre=x)
        else:
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


def test_lean_separable_conv_keeps_one_tensor_of_its_size_besides_its_input():
    op = make_op("sep3", 1)
    x = torch.relu(batch(torch.channels_last, shape=(8, 16, 16, 16))).requires_grad_()
    w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    size = x.numel() * x.element_size()
    small = 16384  # statistics and weights
    plain = saved_bytes(lambda: fast.run_module(nn.Sequential(*list(op)[1:]), x) * w)
    kept = saved_bytes(lambda: lean.lean_chain(list(op)[1:], x, w))
    assert plain >= 6 * size  # input, depthwise out, BN in, ReLU out, depthwise out, BN in, BN out
    assert 2 * size <= kept <= 2 * size + small  # the input and the first BN's output
    dil = make_op("dil3", 1)
    assert size <= saved_bytes(lambda: lean.lean_chain(list(dil)[1:], x, w)) <= size + small  # the input alone
    # from a state: the state is kept instead of the ReLU's output, by the ReLU and the chain alike
    state = batch(torch.channels_last, shape=(8, 16, 16, 16)).requires_grad_()
    assert size <= saved_bytes(lambda: torch.relu(state)) <= size + small
    for o, own in ((op, size), (dil, 0)):
        keeps = saved_bytes(lambda: lean.lean_chain(list(o)[1:], lean.relu_keeping_input(state), w, pre=state))
        assert size + own <= keeps <= size + own + small
    big: set[int] = set()

    def pack(t):
        if t.numel() * t.element_size() >= size:
            big.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lean.lean_chain(list(dil)[1:], lean.relu_keeping_input(state), w, pre=state)
    assert big == {state.untyped_storage().data_ptr()}  # the state itself, which the cell keeps anyway


def test_relu_keeping_input_is_the_relu_and_its_gradient():
    x = batch(torch.channels_last)
    x[0, 0, 0, :3] = torch.tensor([0.0, -0.0, float("nan")], dtype=x.dtype)  # the ties and a NaN, as F.relu has them
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, ref = lean.relu_keeping_input(a), torch.relu(b)
    assert torch.equal(out.nan_to_num(7.0), ref.nan_to_num(7.0)) and out.is_contiguous(memory_format=torch.channels_last)
    g = batch(torch.channels_last, seed=3)
    ga, = torch.autograd.grad(out, a, g)
    gb, = torch.autograd.grad(ref, b, g)
    assert torch.equal(ga.nan_to_num(7.0), gb.nan_to_num(7.0))
    assert not lean.relu_applies(x)  # no gradient wanted
    assert lean.relu_applies(x.requires_grad_())
    narrow = batch(torch.channels_last, shape=(6, 4, 9, 11)).requires_grad_()
    assert not lean.relu_applies(narrow)  # PC-DARTS's slices: their chains keep the ReLU's output
    with torch.no_grad():
        assert not lean.relu_applies(x)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("weights_grad", [True, False], ids=["weight-step", "arch-step"])
@pytest.mark.parametrize("given_relu", [False, True], ids=["from-parts", "relu-given"])
def test_preprocessing_from_the_parts_of_a_cell_output_equals_the_modules(fmt, weights_grad, given_relu):
    """``conv_bn_parts``: a next cell's ReLU-conv-BN of a cell's output from the node states it concatenates
    (the forward reading their concatenation's ReLU when given one), against the modules on the
    concatenation: value, the parts' and the weight's gradients, the running statistics, and what it keeps
    (the parts and its output)."""
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(32, 16, 1, bias=False).double(), nn.BatchNorm2d(16, affine=False).double()
    conv2, bn2 = copy.deepcopy(conv), copy.deepcopy(bn)
    conv.requires_grad_(weights_grad)
    conv2.requires_grad_(weights_grad)
    parts = [batch(fmt, seed=10 + k, shape=(6, 8, 9, 11)).requires_grad_() for k in range(4)]
    parts2 = [p.detach().clone().requires_grad_() for p in parts]
    for _ in range(2):
        cat = torch.cat(parts, dim=1)
        assert lean.conv_bn_applies(conv, bn, cat)
        out = lean.conv_bn_parts(conv, bn, parts, torch.relu(cat).detach() if given_relu else None)
        ref = bn2(conv2(torch.relu(torch.cat(parts2, dim=1))))
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        assert out.is_contiguous(memory_format=fmt)
        g = batch(fmt, seed=4, shape=tuple(out.shape))
        wants, wants2 = ([*parts, conv.weight], [*parts2, conv2.weight]) if weights_grad else (parts, parts2)
        for a, b in zip(torch.autograd.grad(out, wants, g), torch.autograd.grad(ref, wants2, g)):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
            assert a.is_contiguous(memory_format=fmt) or a.dim() != 4
    for a, b in zip(bn.buffers(), bn2.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
    part_bytes = sum(p.numel() for p in parts) * 8
    relu = torch.relu(torch.cat(parts, dim=1)).detach() if given_relu else None
    kept = saved_bytes(lambda: lean.conv_bn_parts(conv, bn, parts, relu))
    assert part_bytes <= kept <= part_bytes + part_bytes // 2 + 8192  # the parts and the output (16 of 32 channels)


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
