"""The recomputing autograd steps (nasbench.spaces.recompute) against the separate modules they replace.

Each is compared in float64 with autograd through the plain modules (values, every gradient, the BN's
running statistics), and each keeps less for the backward than the plain steps: the saved bytes are
counted with saved-tensor hooks.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasbench.spaces import recompute

pytestmark = pytest.mark.usefixtures("one_thread")


def saved_bytes(fn) -> int:
    """Bytes of distinct storages autograd keeps for the backward of ``fn()``."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def inputs(fmt, C=16, seed=0):
    """A float64 batch and a 1×1 conv C → C + 2 (at least NARROW_BN channels: the channels_last case applies)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, C, 7, 9, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    conv = nn.Conv2d(C, C + 2, 1, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=torch.float64))
    return x, conv


def assert_same_bn_results(pairs, bn, bn2):
    """The gradient ``pairs`` and, of two BatchNorms that took two steps, the affine gradients and buffers."""
    if bn.affine:
        pairs = [*pairs, (bn.weight.grad, bn2.weight.grad), (bn.bias.grad, bn2.bias.grad)]
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(bn.buffers(), bn2.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
    assert int(bn.num_batches_tracked) == 2


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("relu,scaled", [(False, False), (True, False), (False, True)],
                         ids=["bn", "bn-relu", "bn-scaled"])
@pytest.mark.parametrize("affine,momentum", [(False, 0.1), (True, None)], ids=["search-bn", "affine-cumulative"])
def test_conv_bn_equals_the_separate_steps(fmt, relu, scaled, affine, momentum):
    x, conv = inputs(fmt)
    bn = nn.BatchNorm2d(18, affine=affine, momentum=momentum).double()
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    conv2, bn2 = copy.deepcopy(conv), copy.deepcopy(bn)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    s1 = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    s2 = s1.detach().clone().requires_grad_()
    g = torch.randn(5, 18, 7, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    for _ in range(2):  # twice: the running statistics follow the module's update rule step after step
        assert recompute.applies(conv, bn, x1)
        out1 = recompute.conv_bn(conv, bn, x1, relu, s1 if scaled else None)
        ref = bn2(conv2(x2))
        if relu:
            ref = F.relu(ref)
        if scaled:
            ref = ref * s2
        torch.testing.assert_close(out1, ref, rtol=1e-13, atol=1e-13)
        (out1 * g).sum().backward()
        (ref * g).sum().backward()

    pairs = [(x1.grad, x2.grad), (conv.weight.grad, conv2.weight.grad)] + ([(s1.grad, s2.grad)] if scaled else [])
    assert_same_bn_results(pairs, bn, bn2)


def test_conv_bn_keeps_only_its_input_for_the_backward():
    """Scaled (an op's last block times its weight): the input alone, where the separate steps keep the
    input, the BN's input and its output. With a ReLU: the input and the output, which the next op (a
    depthwise conv) keeps anyway, where the separate steps also keep the BN's input."""
    x, conv = inputs(torch.channels_last)
    x = x.float().requires_grad_()
    conv = conv.float()
    bn = nn.BatchNorm2d(18, affine=False)
    s = torch.tensor(1.0, requires_grad=True)
    block = x.numel() * 18 / 16 * 4  # one [5, 18, 7, 9] float32 tensor
    inp = x.numel() * 4
    assert saved_bytes(lambda: bn(conv(x)) * s) >= inp + 2 * block
    assert saved_bytes(lambda: recompute.conv_bn(conv, bn, x, scale=s)) < inp + 0.1 * block
    assert saved_bytes(lambda: F.relu(bn(conv(x)))) >= inp + 2 * block
    assert saved_bytes(lambda: recompute.conv_bn(conv, bn, x, relu=True)) < inp + 1.1 * block
    with pytest.raises(ValueError):
        recompute.conv_bn(conv, bn, x, relu=True, scale=s)


def test_conv_bn_does_not_apply_where_it_would_change_the_result():
    x, conv = inputs(torch.contiguous_format)
    bn = nn.BatchNorm2d(18).double()
    assert recompute.applies(conv, bn, x)
    assert not recompute.applies(conv, bn.eval(), x)  # eval: running statistics, nothing to save anyway
    bn.train()
    with torch.no_grad():
        assert not recompute.applies(conv, bn, x)
    for bad in (nn.Conv2d(16, 18, 3, padding=1, bias=False), nn.Conv2d(16, 18, 1, stride=2, bias=False),
                nn.Conv2d(16, 18, 1, bias=True)):
        assert not recompute.applies(bad.double(), bn, x)
    narrow = torch.randn(2, 4, 5, 5).contiguous(memory_format=torch.channels_last)  # the NCHW BN detour's case
    assert not recompute.applies(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4), narrow)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("pool", [
    nn.MaxPool2d(3, stride=1, padding=1), nn.MaxPool2d(3, stride=2, padding=1),
    nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), nn.AvgPool2d(3, stride=2, padding=1),
], ids=["max1", "max2", "avg1-no-pad-count", "avg2"])
def test_scaled_pool_equals_the_pool_times_the_scale(fmt, pool):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 8, 7, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    s1 = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    s2 = s1.detach().clone().requires_grad_()
    assert recompute.pool_applies(pool, x1)
    out1, ref = recompute.scaled_pool(pool, x1, s1), pool(x2) * s2
    torch.testing.assert_close(out1, ref, rtol=0, atol=0)
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (out1 * grad).sum().backward()
    (ref * grad).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", [(3, 5, 8, 7), (2, 4, 2, 2), (2, 3, 2, 9), (1, 16, 33, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_separable_max_pool_is_pytorch_s_3x3_max_pool(fmt, shape, dtype):
    """``max_pool_3x3`` (maxima along rows, then along columns) gives PyTorch's max pool (3×3, stride 1,
    padding 1) bit for bit, in the input's layout, with infinities and a NaN that spreads to its 3×3 window."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g, dtype=dtype)
    x[0, 0, 0, 0], x[-1, -1, -1, -1], x[0, -1, 1, 1] = float("inf"), float("-inf"), float("nan")
    x = x.contiguous(memory_format=fmt)
    out, ref = recompute.max_pool_3x3(x), F.max_pool2d(x, 3, 1, 1)
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
    assert int(out.isnan().sum()) == int(ref.isnan().sum()) == min(3, shape[2]) * min(3, shape[3])
    assert out.is_contiguous(memory_format=fmt)


def test_scaled_max_pool_keeps_neither_indices_nor_output():
    x = torch.randn(4, 8, 16, 16).requires_grad_()
    s = torch.tensor(1.0, requires_grad=True)
    pool = nn.MaxPool2d(3, stride=1, padding=1)
    plain = saved_bytes(lambda: pool(x) * s)
    fused = saved_bytes(lambda: recompute.scaled_pool(pool, x, s))
    assert plain >= x.numel() * (4 + 8 + 4)  # input, int64 indices, output (for the scale's gradient)
    assert fused <= x.numel() * 4 + 64


# ---------------------------------------------------------------------------------------------- the setting
def test_a_search_with_recompute_ops_runs_the_fused_steps_and_the_setting_is_checked(tmp_path, nas_cmd):
    """``--recompute-ops`` reaches the cells (a real search: the fused steps run, one per conv block) and is
    refused, in one line with exit code 2, where it does not exist."""
    import subprocess

    from omegaconf import OmegaConf

    from conftest import invoke

    out = tmp_path / "run"
    cmd = [*nas_cmd, "search", "--algo", "gdas", "--dataset", "synthetic", "--epochs", "1", "--channels", "16",
           "--layers", "3", "--batch-size", "8", "--out", str(out), "--recompute-ops", "--no-progress",
           "data.num_train=16", "data.image_size=8", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert OmegaConf.load(out / "config.yaml").recompute_ops is True

    r = invoke("search", "--algo", "darts", "--dataset", "synthetic", "--space", "nas-bench-201", "--recompute-ops",
               "--out", tmp_path / "nb201")
    assert r.exit_code == 2 and "recompute_ops" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "nb201").exists()
    r = invoke("search", "--algo", "darts", "--dataset", "synthetic", "--supernet", "reference", "--recompute-ops",
               "--out", tmp_path / "ref")
    assert r.exit_code == 2 and "supernet=fast" in r.output
    assert not (tmp_path / "ref").exists()


def test_recompute_ops_cells_run_the_fused_steps(monkeypatch):
    """The setting changes what the cells run: with it every 16-channel ReLU-conv-BN preprocessing of a forward
    goes through ``conv_bn``, without it none does; the separable and dilated convs take the lean step (which
    keeps less) either way, on CPU the dilated ones by pixel phases."""
    from nasbench.algorithms.base import create_strategy
    from nasbench.config import resolve_search_config

    from nasbench.spaces.darts import lean

    calls, lean_calls = [], []
    real, real_lean = recompute.conv_bn, lean.lean_chain
    monkeypatch.setattr(recompute, "conv_bn", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(lean, "lean_chain", lambda *a, **k: lean_calls.append(1) or real_lean(*a, **k))
    cfg = resolve_search_config("darts", overrides=["data.dataset=synthetic", "model.channels=16", "model.layers=3"])
    s = create_strategy("darts", cfg)
    spec = s.supernet_spec(10, 3)
    net = s.build_supernet(spec).set_execution("fast")
    s.init_arch_params(spec, torch.device("cpu"))
    x = torch.randn(2, 3, 8, 8)
    # 3 cells (normal, reduction, reduction): 5 ReLU-conv-BN preprocessings (the last cell's first input is
    # a factorized reduce); the 2 sep and 2 dil convs of every edge take the lean step either way
    for on, expected in ((False, 0), (True, 5)):
        net.set_recompute_ops(on)
        calls.clear()
        lean_calls.clear()
        s.forward(net, x).sum().backward()
        assert len(calls) == expected and len(lean_calls) == 3 * 14 * 4


@pytest.mark.parametrize("channels", [18, 4], ids=["wide", "narrow"])  # narrow channels_last: the NCHW detour
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("affine,momentum", [(False, 0.1), (True, None)], ids=["search-bn", "affine-cumulative"])
def test_scaled_bn_equals_the_bn_times_the_scale(fmt, affine, momentum, channels):
    g = torch.Generator().manual_seed(4)
    z = torch.randn(5, channels, 7, 9, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    bn = nn.BatchNorm2d(channels, affine=affine, momentum=momentum).double()
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    bn2 = copy.deepcopy(bn)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    s1 = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    s2 = s1.detach().clone().requires_grad_()
    grad = torch.randn(z.shape, generator=g, dtype=torch.float64)
    for _ in range(2):
        assert recompute.bn_applies(bn, z1)
        out1, ref = recompute.scaled_bn(bn, z1, s1), bn2(z2) * s2
        torch.testing.assert_close(out1, ref, rtol=1e-14, atol=1e-14)
        assert out1.is_contiguous(memory_format=fmt)
        (out1 * grad).sum().backward()
        (ref * grad).sum().backward()
    assert_same_bn_results([(z1.grad, z2.grad), (s1.grad, s2.grad)], bn, bn2)


@pytest.mark.parametrize("channels", [18, 4], ids=["wide", "narrow"])
def test_scaled_bn_keeps_its_input_but_not_its_output(channels):
    """(Narrow: the NCHW copy of the input, which the BN module keeps on that detour too.)"""
    z = torch.randn(5, channels, 7, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    bn = nn.BatchNorm2d(channels, affine=False)
    s = torch.tensor(1.0, requires_grad=True)
    block = z.numel() * 4
    assert saved_bytes(lambda: bn(z) * s) >= 2 * block
    assert saved_bytes(lambda: recompute.scaled_bn(bn, z, s)) < 1.1 * block
