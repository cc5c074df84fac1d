"""PC-DARTS's narrow slices with images folded into the channels (``nasbench.spaces.darts.folded``).

Each op of the DARTS space, run by a :class:`~nasbench.spaces.darts.fast.FoldedSource` and unfolded, must be
the module on the plain slice: output, the input's and every parameter's gradient, the running statistics of
every BatchNorm (whose statistics the folded groups pool), in training and in eval mode, and with an edge
weight folded into the op's last BatchNorm. The whole supernet's equality with the reference is
``test_supernet_fast.py``'s (its PC-DARTS cases fold: batch 6, slices of 2 channels).
"""

from __future__ import annotations

import copy

import pytest
import torch

from nasbench.spaces.darts import folded
from nasbench.spaces.darts.fast import DartsSource, FoldedSource
from nasbench.spaces.darts.ops import PRIMITIVES, FactorizedReduce, search_op
from nasbench.spaces.edges import NodeSum, unfolded
from conftest import rel

pytestmark = pytest.mark.usefixtures("one_thread")

CL = torch.channels_last


def _input(batch: int, channels: int, size: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    x = torch.randn(batch, channels, size, size, dtype=dtype) * 0.7 + 0.3
    return x.contiguous(memory_format=CL).requires_grad_()


def test_fold_puts_image_n_g_channel_i_at_channel_g_c_plus_i_and_unfolded_inverts_it():
    x = _input(6, 10, 5).detach()
    f = folded.fold(x, 3, 7, 3)  # channels 3..6, 3 images per folded one
    assert f.shape == (2, 12, 5, 5) and f.is_contiguous(memory_format=CL)
    for n in range(2):
        for g in range(3):
            for i in range(4):
                assert torch.equal(f[n, g * 4 + i], x[n * 3 + g, 3 + i])
    back = unfolded(f, x)
    assert back.shape == (6, 4, 5, 5) and back.is_contiguous(memory_format=CL)
    assert torch.equal(back, x[:, 3:7])
    assert unfolded(x, x) is x  # a part of the node's own batch is left as it is


@pytest.mark.parametrize("batch, channels, expected", [(64, 4, 4), (64, 8, 2), (64, 16, 1), (6, 4, 3), (6, 2, 6),
                                                       (5, 4, 1), (7, 2, 7), (1, 4, 1)])
def test_groups_is_the_largest_divisor_of_the_batch_that_fills_at_most_16_channels(batch, channels, expected):
    x = torch.zeros(batch, 16, 3, 3).contiguous(memory_format=CL)
    assert folded.groups(x, channels) == expected


def test_groups_folds_only_channels_last_float_tensors_on_cpu_outside_autocast():
    x = torch.zeros(8, 16, 3, 3)
    assert folded.groups(x, 4) == 1  # NCHW
    cl = x.contiguous(memory_format=CL)
    assert folded.groups(cl, 4) == 4
    assert folded.groups(cl.half(), 4) == 1 and folded.groups(cl.bfloat16(), 4) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert folded.groups(cl, 4) == 1
    assert DartsSource(cl, recompute=True).op_channels(0, 4).__class__ is DartsSource  # recompute_ops: plain
    assert isinstance(DartsSource(cl).op_channels(0, 4), FoldedSource)
    assert type(DartsSource(x).op_channels(0, 4)) is DartsSource


def _folded_against_module(name: str, stride: int, train: bool, dtype, weighted: bool, batch: int = 6):
    """(output, gradients of x, of the op's parameters, of the weight, op's buffers), folded and plain."""
    # odd size: the dilated convs' phases and the stride-2 ops' padding (FactorizedReduce takes even ones only)
    C, c, size = 16, 4, 8 if isinstance(search_op(name, 4, stride), FactorizedReduce) else 7
    torch.manual_seed(3)
    op = search_op(name, c, stride).to(dtype)
    with torch.no_grad():
        for b in op.buffers():  # a history to update (and to normalise with, in eval mode)
            if b.dtype.is_floating_point:
                b.uniform_(0.5, 1.5)
    twin = copy.deepcopy(op)
    op.train(train)
    twin.train(train)
    x = _input(batch, C, size, dtype)
    w = torch.tensor(0.7, dtype=dtype, requires_grad=True)
    results = []
    for module, fold in ((op, True), (twin, False)):
        src = DartsSource(x)
        part = src.op_channels(0, c) if fold else src.channels(0, c)
        assert isinstance(part, FoldedSource) == fold
        node = NodeSum()
        if weighted:
            part.add_to(node, module, w)
        else:
            out = part.run(module)
            if out is not None:
                node.add(out)
        out = node.parts.get("out")
        if out is None:  # 'none'
            results.append(None)
            continue
        out = unfolded(out, x)
        params = [p for p in module.parameters()]
        g = torch.randn_like(out.detach(), generator=torch.Generator().manual_seed(4))
        inputs = [x, *params, *([w] if weighted else [])]
        grads = torch.autograd.grad(out, inputs, g, allow_unused=True)
        results.append((out, grads, [b.clone() for b in module.buffers()]))
    return results


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", PRIMITIVES)
def test_a_folded_slice_runs_each_darts_op_as_the_module_on_the_plain_slice(name, stride, train, dtype):
    got, ref = _folded_against_module(name, stride, train, dtype, weighted=False)
    if ref is None:
        assert got is None
        return
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert got[0].shape == ref[0].shape and got[0].is_contiguous(memory_format=CL)
    assert rel(got[0], ref[0]) <= tol
    for a, b in zip(got[1], ref[1]):
        assert (a is None) == (b is None) and (a is None or rel(a, b) <= tol)
    for a, b in zip(got[2], ref[2]):
        assert torch.equal(a, b) if not a.dtype.is_floating_point else rel(a, b) <= tol


@pytest.mark.parametrize("name", ["sep_conv_3x3", "dil_conv_5x5", "max_pool_3x3", "skip_connect"])
@pytest.mark.parametrize("stride", [1, 2])
def test_an_edge_weight_folds_into_the_folded_op_s_last_batch_norm_with_its_gradient(name, stride):
    got, ref = _folded_against_module(name, stride, True, torch.float64, weighted=True)
    assert rel(got[0], ref[0]) <= 1e-12
    for a, b in zip(got[1], ref[1]):  # x, the op's parameters and the edge weight
        assert rel(a, b) <= 1e-12
    for a, b in zip(got[2], ref[2]):
        assert torch.equal(a, b) if not a.dtype.is_floating_point else rel(a, b) <= 1e-12


def test_a_folded_slice_shares_one_pool_normalisation_per_eps_between_its_edges():
    """Four edges' pool + BN on one folded slice, two of eps 1e-1: two normalisations, each edge's output and
    running statistics what its module computes on the plain slice, the input gradient the sum of theirs."""
    pool = torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    bns = [torch.nn.BatchNorm2d(4, affine=False, eps=eps).double() for eps in (1e-5, 1e-5, 1e-1, 1e-1)]
    for i, bn in enumerate(bns):
        bn.running_mean.fill_(0.1 * i)
    twins = copy.deepcopy(bns)
    x = _input(8, 12, 6)
    g = torch.randn(4, 8, 4, 6, 6, dtype=torch.float64)
    ref = [bn(pool(x[:, 4:8])) for bn in bns]
    (gx_ref,) = torch.autograd.grad(sum((r * gi).sum() for r, gi in zip(ref, g)), (x,))
    part = DartsSource(x).op_channels(4, 8)
    assert isinstance(part, FoldedSource) and part.G == 4
    out = [part.pool_bn(pool, bn) for bn in twins]
    assert out[0] is out[1] and out[2] is out[3]
    out = [unfolded(o, x) for o in out]
    (gx,) = torch.autograd.grad(sum((o * gi).sum() for o, gi in zip(out, g)), (x,))
    for o, r in zip(out, ref):
        assert rel(o, r) <= 1e-12
    assert rel(gx, gx_ref) <= 1e-12 and gx.is_contiguous(memory_format=CL)
    for a, b in zip(twins, bns):
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 1
        assert rel(a.running_mean, b.running_mean) <= 1e-12 and rel(a.running_var, b.running_var) <= 1e-12


def test_folded_batch_norm_pools_the_statistics_of_the_groups_as_one_batch():
    """The folded normalisation's output, batch mean and variance, and its gradient (autograd's check in
    float64) are those of a BatchNorm over the unfolded images."""
    x = _input(6, 3, 4).detach()
    f = folded.fold(x, 0, 3, 3).detach().requires_grad_()
    y, mean, var = folded.normalize(f, 3, 1e-5)
    ref = torch.nn.functional.batch_norm(x, None, None, None, None, True, 0.0, 1e-5)
    assert rel(unfolded(y, x), ref) <= 1e-12
    assert rel(mean, x.mean((0, 2, 3))) <= 1e-12
    assert rel(var, x.var((0, 2, 3), unbiased=False)) <= 1e-12
    scale = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, s: folded._FoldedBatchNorm.apply(t, 3, 1e-5, s)[0], (f, scale))


def test_pc_darts_fast_supernet_runs_its_mixed_ops_folded(monkeypatch):
    """The fast PC-DARTS supernet of a channels_last CPU search takes its mixed ops' slices folded."""
    from test_supernet_fast import build, pair

    _, s = build("pc-darts")
    ref, fast, fmt = pair(s)
    calls = []
    real = folded.conv
    monkeypatch.setattr(folded, "conv", lambda m, x, G: calls.append(G) or real(m, x, G))
    fast(torch.randn(6, 3, 12, 12).contiguous(memory_format=fmt), s.weights())
    # K=4: slices of 2, 4 and 8 channels (C=8, doubled at each reduction); 6, 3 and 2 images fill them
    assert set(calls) == {6, 3, 2}
