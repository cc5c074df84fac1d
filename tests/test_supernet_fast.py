"""The fast supernet computes what the reference computes: logits, every gradient, BN running statistics.

The reference is the per-edge supernet in NCHW fp32 (``set_execution("reference")``, the DARTS code's way);
the fast one runs in the memory format a search picks on this device. Each case feeds both the same
weights, architecture parameters, edge weights (one Gumbel sample for GDAS) and batch, and compares per
tensor: ‖Δ‖ ≤ 1e-5·‖ref‖. A gradient that is zero up to rounding in the reference (a conv bias right
before a BatchNorm, as GDAS-FRC's fixed cell has) is held to the same bound relative to the largest
gradient instead, since its own norm is rounding noise.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from nasbench.algorithms.base import ArchStepContext, create_strategy
from nasbench.algorithms.sgas import UNDECIDED
from nasbench.config import resolve_search_config
from nasbench.spaces.darts.depthwise import dilated, dilated_backward, phase_images
from nasbench.spaces.edges import NARROW_BN, SourceCache, batch_norm, channel_slice, dense_grad, global_pool, nchw
from nasbench.engine.device import memory_format
from conftest import rel

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5


def assert_same_tensors(fast: dict, ref: dict, what: str) -> None:
    scale = max(float(t.double().norm()) for t in ref.values() if t is not None)
    for name, b in ref.items():
        a = fast[name]
        if b is None or a is None:  # a parameter the graph did not reach in one of them: the other must be 0
            other = a if b is None else b
            assert other is None or float(other.abs().max()) == 0.0, f"{what} {name}: None vs nonzero"
            continue
        assert a.shape == b.shape, f"{what} {name}"
        norm = float(b.double().norm())
        diff = float((a.double() - b.double()).norm())
        bound = TOL * (norm if norm > 1e-6 * scale else scale)
        assert diff <= bound, f"{what} {name}: ‖Δ‖={diff:.3e}, ‖ref‖={norm:.3e} (bound {bound:.3e})"


def assert_same_buffers(fast_net, ref_net) -> None:
    for (name, a), (_, b) in zip(fast_net.named_buffers(), ref_net.named_buffers()):
        if name.endswith("num_batches_tracked"):
            assert int(a) == int(b), name
        else:  # running means of BN outputs are ~0: compare with an absolute floor too
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


def build(algo: str, *overrides: str):
    cfg = resolve_search_config(algo, overrides=["data.dataset=synthetic", "model.channels=8", "model.layers=3",
                                                 *overrides])
    s = create_strategy(algo, cfg)
    return cfg, s


def pair(s, memory_efficient: bool = False, recompute_ops: bool = False):
    """(reference net NCHW, fast net in the format a CPU search picks) with equal weights, α initialised."""
    torch.manual_seed(0)
    spec = s.supernet_spec(10, 3)
    ref = s.build_supernet(spec).set_execution("reference")
    fast = copy.deepcopy(ref).set_execution("fast", memory_efficient)
    if recompute_ops:
        fast.set_recompute_ops(True)
    fmt = memory_format("auto", torch.device("cpu"), fast, impl="fast")
    fast = fast.to(memory_format=fmt)
    s.init_arch_params(spec, torch.device("cpu"))
    with torch.no_grad():  # α away from uniform, so that every op's weight matters
        for p in s.arch_parameters():
            p.normal_(0.0, 0.5)
    return ref, fast, fmt


def run_both(s, ref, fast, fmt, train: bool = True, epoch_start: bool = True):
    if epoch_start:
        s.on_epoch_start(0, ref)
        s.on_epoch_start(0, fast)
    torch.manual_seed(1)
    # the ImageNet stems halve 3 times, the reductions twice: at 32 pixels the last cells' BatchNorms see 6
    # values per channel and amplify fp32 rounding to the tolerance (1.3× it on one tensor, depending on the
    # thread setup); at 64, 24 values, and the worst tensor is at 0.3×
    size = 64 if s.cfg.model.stem == "imagenet" else 12
    x = torch.randn(6, 3, size, size)
    y = torch.randint(0, 10, (6,))
    w = s.weights()  # one set of edge weights (one Gumbel sample) for both
    out = {}
    for name, net, xin in (("ref", ref, x), ("fast", fast, x.contiguous(memory_format=fmt))):
        net.train(train)
        torch.manual_seed(2)  # the same dropout masks
        logits = net(xin, w)
        loss = F.cross_entropy(logits, y)
        params = dict(net.named_parameters())
        names = [*params, *s.arch]
        grads = torch.autograd.grad(loss, [*params.values(), *s.arch.values()], allow_unused=True,
                                    retain_graph=True)
        out[name] = (logits, dict(zip(names, grads)))
    return out


def compare(s, ref, fast, fmt, train=True):
    out = run_both(s, ref, fast, fmt, train)
    assert rel(out["fast"][0], out["ref"][0]) <= TOL
    assert_same_tensors(out["fast"][1], out["ref"][1], "gradient of")
    assert_same_buffers(fast, ref)


def _pdarts_pruned(s):
    """P-DARTS in a later stage: 5 surviving ops per edge, 'none' and skip among them, dropout on."""
    s.stage = 1
    s.ops = {t: [("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_5x5")] * 14
             for t in ("normal", "reduce")}


def _sgas_decided(s):
    """SGAS with decided edges: one op per decided edge, the node's other edges pruned (None)."""
    prims = list(s.space.primitives)
    for t in ("normal", "reduce"):
        s.selected[t] = [UNDECIDED] * 14
        s.selected[t][0] = prims.index("skip_connect")
        s.selected[t][1] = prims.index("dil_conv_3x3")
        s.selected[t][2] = prims.index("max_pool_3x3")
        s.selected[t][3] = prims.index("sep_conv_5x5")
        s.selected[t][4] = s.none_idx


NB201 = "model.space=nas-bench-201"

CASES = {
    "darts": ("darts", [], None),
    "gdas": ("gdas", [], None),
    "gdas-frc": ("gdas", ["gdas.fixed_reduction=true"], None),
    "pc-darts": ("pc-darts", [], None),
    "pc-darts-k2": ("pc-darts", ["pc_darts.k=2"], None),
    # PC-DARTS's ImageNet search network: stride-2 stems, the first cell reducing s0, K=2
    "pc-darts-imagenet": ("pc-darts", ["model.stem=imagenet", "pc_darts.k=2"], None),
    "darts-imagenet": ("darts", ["model.stem=imagenet"], None),
    # 16 channels: no narrow BatchNorm detour in any cell, so every conv op runs as a lean step from its state
    "darts-c16": ("darts", ["model.channels=16"], None),
    "gdas-c16": ("gdas", ["model.channels=16"], None),
    "p-darts": ("p-darts", ["p_darts.layers=3", "p_darts.add_layers=[0,1,2]"], None),
    "p-darts-stage2": ("p-darts", ["p_darts.layers=3", "p_darts.add_layers=[0,1,2]"], _pdarts_pruned),
    "sgas": ("sgas", [], None),
    "sgas-decided": ("sgas", [], _sgas_decided),
    # the NAS-Bench-201 space (N=1 cell per stage): P-DARTS's skip dropout on its identity edges included
    "nb201-darts": ("darts", [NB201, "model.layers=1"], None),
    "nb201-gdas": ("gdas", [NB201, "model.layers=1"], None),
    "nb201-pc-darts": ("pc-darts", [NB201, "model.layers=1"], None),
    "nb201-p-darts": ("p-darts", [NB201, "model.layers=1", "p_darts.layers=1", "p_darts.add_layers=[0,0,0]"], None),
}


EXECUTIONS = {"fast": (False, False), "fast+memory-efficient": (True, False), "fast+recompute-ops": (False, True)}


@pytest.mark.parametrize("execution", list(EXECUTIONS))
@pytest.mark.parametrize("case", list(CASES))
def test_fast_supernet_equals_reference(case, execution):
    algo, overrides, prepare = CASES[case]
    memory_efficient, recompute_ops = EXECUTIONS[execution]
    if recompute_ops and NB201 in overrides:
        pytest.skip("recompute_ops is a darts-space execution")
    _, s = build(algo, *overrides)
    if prepare:
        prepare(s)
    ref, fast, fmt = pair(s, memory_efficient, recompute_ops)
    compare(s, ref, fast, fmt)
    compare(s, ref, fast, fmt)  # a second step: running statistics updated twice, still equal


@pytest.mark.parametrize("case", ["darts", "gdas", "pc-darts", "p-darts-stage2", "pc-darts-imagenet"])
def test_fast_supernet_equals_reference_in_eval_mode(case):
    algo, overrides, prepare = CASES[case]
    _, s = build(algo, *overrides)
    if prepare:
        prepare(s)
    ref, fast, fmt = pair(s)
    run_both(s, ref, fast, fmt)  # move the running statistics away from their initial values first
    out = run_both(s, ref, fast, fmt, train=False, epoch_start=False)
    assert rel(out["fast"][0], out["ref"][0]) <= TOL
    assert_same_tensors(out["fast"][1], out["ref"][1], "gradient of")


def test_every_registered_algorithm_is_covered():
    from nasbench import registry

    assert set(registry.names("algorithm")) <= {algo for algo, _, _ in CASES.values()}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("execution", list(EXECUTIONS))
def test_second_order_darts_step_equals_reference(execution, dtype):
    """The unrolled step runs the net under functional_call with virtual weights; recomputation must too.

    Its finite-difference Hessian term divides a difference of two gradients by 2ε (ε = 0.01/‖v‖), which
    magnifies fp32 rounding: the reference itself, run in channels_last instead of NCHW, moves by ~1e-5.
    So the exact agreement is checked in float64 (1e-10), and fp32 within 1e-4.
    """
    cfg, s = build("darts", "darts.unrolled=true")
    ref, fast, fmt = pair(s, *EXECUTIONS[execution])
    if dtype == torch.float64:
        ref.double()
        fast.double()
        s.arch = {k: v.detach().double().requires_grad_() for k, v in s.arch.items()}
    torch.manual_seed(3)
    train = (torch.randn(6, 3, 12, 12, dtype=dtype), torch.randint(0, 10, (6,)))
    valid = (torch.randn(6, 3, 12, 12, dtype=dtype), torch.randint(0, 10, (6,)))
    grads = {}
    for name, net in (("ref", ref), ("fast", fast)):
        f = fmt if name == "fast" else torch.contiguous_format
        opt = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        ctx = ArchStepContext(net, (train[0].contiguous(memory_format=f), train[1]),
                              (valid[0].contiguous(memory_format=f), valid[1]), opt, 0.025, F.cross_entropy)
        s.arch_backward(ctx)
        grads[name] = {k: v.grad.clone() for k, v in s.arch.items()}
        for v in s.arch.values():
            v.grad = None
    for k in grads["ref"]:
        assert rel(grads["fast"][k], grads["ref"][k]) <= (1e-10 if dtype == torch.float64 else 1e-4), k
    assert_same_buffers(fast, ref)


@pytest.mark.parametrize("stride,k,d", [(1, 3, 2), (1, 5, 2), (1, 3, 3), (2, 3, 2), (2, 5, 2)])
@pytest.mark.parametrize("size", [8, 7])
def test_dilated_depthwise_by_phases_equals_the_dilated_conv(stride, k, d, size):
    """The phase form against PyTorch's dilated conv, values and both gradients (through autograd and through
    ``dilated_backward``), odd and even sizes, in both layouts (channels_last: PyTorch's forward, the
    gradients by phases)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 4, k, stride=stride, padding=d * (k - 1) // 2, dilation=d, groups=4, bias=False)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, 4, size, size).contiguous(memory_format=fmt).requires_grad_()
        ref = F.conv2d(x, conv.weight, None, stride, conv.padding, d, 4)
        g = torch.randn_like(ref)
        gx_ref, gw_ref = torch.autograd.grad(ref, (x, conv.weight), g)
        out = dilated(conv, x)
        gx, gw = torch.autograd.grad(out, (x, conv.weight), g)
        assert out.shape == ref.shape
        with torch.no_grad():  # no autograd: the forward alone (channels_last: PyTorch's; NCHW: by phases)
            assert rel(dilated(conv, x), ref) <= 1e-6
        assert rel(out, ref) <= 1e-6 and rel(gx, gx_ref) <= 1e-6 and rel(gw, gw_ref) <= 1e-6
        # the input's gradient in the input's layout (a mixed-layout gradient slows every later gradient op
        # of the source several times on CPU)
        assert gx.is_contiguous(memory_format=fmt)
        # the same gradients formed outside autograd (the lean conv op's backward), the input's gradient alone
        # without the input's values (an architecture step)
        grads = dilated_backward(conv, g, x.detach(), x.shape, fmt, conv.weight.detach(), True, True)
        assert rel(grads[0], gx_ref) <= 1e-6 and rel(grads[1], gw_ref) <= 1e-6
        assert grads[0].is_contiguous(memory_format=fmt)
        alone = dilated_backward(conv, g, None, x.shape, fmt, conv.weight.detach(), True, False)
        assert alone[1] is None and rel(alone[0], gx_ref) <= 1e-6
        assert dilated_backward(conv, g, x.detach(), x.shape, fmt, conv.weight.detach(), False, True)[0] is None


@pytest.mark.parametrize("k", [3, 5])
def test_phase_images_form_equals_the_dilated_conv_in_both_layouts(k):
    """``phase_images`` (the NCHW form, which ``benchmarks/ops.py`` also times against the channels_last one)
    computes the dilated conv in either layout, or the comparison the benchmark reports means nothing."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 4, k, padding=k - 1, dilation=2, groups=4, bias=False)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, 4, 8, 8).contiguous(memory_format=fmt)
        assert rel(phase_images(x, conv.weight, 2, (k - 1) // 2), conv(x)) <= 1e-6


@pytest.mark.parametrize("channels", [1, 4, NARROW_BN - 1, NARROW_BN])
def test_narrow_channels_last_batch_norm_equals_the_module(channels):
    """The NCHW detour of a narrow channels_last BatchNorm: the module's output, input gradient and running
    statistics, handed back in channels_last; wide inputs take the module's own path."""
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(channels, affine=False)
    twin = copy.deepcopy(bn)
    x = torch.randn(5, channels, 9, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    ref = bn(x)
    out = batch_norm(twin, x)
    g = torch.randn_like(ref)
    (gx_ref,), (gx,) = torch.autograd.grad(ref, (x,), g), torch.autograd.grad(out, (x,), g)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert rel(out, ref) <= 1e-6 and rel(gx, gx_ref) <= 1e-6
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(twin, name).double(), getattr(bn, name).double(), rtol=1e-6, atol=1e-7), name


class _CountCalls(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels, fmt", [(4, torch.channels_last), (NARROW_BN, torch.channels_last),
                                           (4, torch.contiguous_format)])
def test_shared_pool_batch_norm_is_each_edge_s_module_in_one_normalisation(channels, fmt, dtype):
    """Three edges' pool + non-affine BN from one source: one pool and one normalisation (no separate
    variance pass), yet each edge's output, the input gradient and every BN's running statistics are what
    the three modules compute, in the input's layout, narrow channels_last inputs included."""
    torch.manual_seed(0)
    pool = torch.nn.MaxPool2d(3, 1, 1)
    bns = [torch.nn.BatchNorm2d(channels, affine=False).to(dtype) for _ in range(3)]
    for i, bn in enumerate(bns):  # different histories: the update must start from each one's own buffers
        bn.running_mean.fill_(0.1 * i)
        bn.running_var.fill_(1.0 + i)
    twins = copy.deepcopy(bns)
    x = (torch.randn(6, channels, 7, 7, dtype=dtype) * 0.3 + 2.0).contiguous(memory_format=fmt).requires_grad_()
    g = torch.randn(3, 6, channels, 7, 7, dtype=dtype)
    ref = [bn(pool(x)) for bn in bns]
    (gx_ref,) = torch.autograd.grad(sum((r * gi).sum() for r, gi in zip(ref, g)), (x,))
    src = SourceCache(x)
    with _CountCalls() as seen:
        out = [src.pool_bn(pool, bn) for bn in twins]
    assert seen.calls.count("max_pool2d_with_indices") + seen.calls.count("max_pool2d") == 1
    assert seen.calls.count("native_batch_norm") + seen.calls.count("_native_batch_norm_legit") == 1
    assert "var_mean" not in seen.calls
    (gx,) = torch.autograd.grad(sum((o * gi).sum() for o, gi in zip(out, g)), (x,))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for o, r in zip(out, ref):
        assert o.is_contiguous(memory_format=fmt) and rel(o, r) <= tol
    assert rel(gx, gx_ref) <= tol
    for a, b in zip(twins, bns):
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 1
        for name in ("running_mean", "running_var"):
            assert rel(getattr(a, name), getattr(b, name)) <= tol, name


@pytest.mark.parametrize("channels, fmt", [(4, torch.channels_last), (NARROW_BN, torch.channels_last),
                                           (4, torch.contiguous_format)])
def test_shared_pool_batch_norm_with_a_second_eps_normalises_again_like_its_modules(channels, fmt):
    """BNs of two ``eps`` on one pool: the second normalises again (its statistics are the first's), and both
    normalisations hand the pool its gradient in the pool's own layout, the narrow detour included."""
    torch.manual_seed(1)
    pool = torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    bns = [torch.nn.BatchNorm2d(channels, affine=False, eps=eps) for eps in (1e-5, 1e-5, 1e-1, 1e-1)]
    twins = copy.deepcopy(bns)
    x = (torch.randn(5, channels, 6, 6) * 0.5 + 1.0).contiguous(memory_format=fmt).requires_grad_()
    g = torch.randn(4, 5, channels, 6, 6)
    ref = [bn(pool(x)) for bn in bns]
    (gx_ref,) = torch.autograd.grad(sum((r * gi).sum() for r, gi in zip(ref, g)), (x,))
    src = SourceCache(x)
    layouts = []
    src.pool(pool).register_hook(lambda grad: layouts.append(grad.is_contiguous(memory_format=fmt)))
    with _CountCalls() as seen:
        out = [src.pool_bn(pool, bn) for bn in twins]
    assert seen.calls.count("native_batch_norm") + seen.calls.count("_native_batch_norm_legit") == 2
    assert "var_mean" not in seen.calls
    (gx,) = torch.autograd.grad(sum((o * gi).sum() for o, gi in zip(out, g)), (x,))
    assert layouts == [True]
    assert out[0] is out[1] and out[2] is out[3] and rel(out[0], out[2]) > 1e-3
    for o, r in zip(out, ref):
        assert o.is_contiguous(memory_format=fmt) and rel(o, r) <= 1e-5
    assert rel(gx, gx_ref) <= 1e-5
    for a, b in zip(twins, bns):
        for name in ("running_mean", "running_var"):
            assert rel(getattr(a, name), getattr(b, name)) <= 1e-5, name


def test_memory_efficient_recomputation_leaves_running_statistics_alone():
    _, s = build("darts")
    ref, fast, fmt = pair(s, memory_efficient=True)
    before = [b.clone() for b in fast.buffers()]
    x = torch.randn(6, 3, 12, 12).contiguous(memory_format=fmt)
    fast(x, s.weights()).sum().backward()
    after_forward_and_backward = [b.clone() for b in fast.buffers()]
    ref(torch.randn(6, 3, 12, 12), s.weights())  # unrelated: the reference is another module
    tracked = [int(b) for b, b0 in zip(after_forward_and_backward, before) if b.dtype == torch.int64]
    assert tracked and all(t == 1 for t in tracked)  # one update per BN, not two


def _tiny_search(tmp_path, nas_cmd, name, *extra):
    import subprocess

    out = tmp_path / name
    cmd = [*nas_cmd, "search", "--algo", "darts", "--device", "cpu", "--epochs", "1", "--batch-size", "8",
           "--channels", "4", "--layers", "3", "--out", str(out), "--no-progress", "data.dataset=synthetic",
           "data.num_train=32", "data.image_size=8", "plots=false", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


def test_search_with_reference_and_fast_supernets_gives_the_same_architecture(tmp_path, nas_cmd):
    """Through the CLI: a search epoch on each execution (and on the memory-efficient one) ends at equal α."""
    from nasbench.engine.rundir import torch_load

    arch = {}
    for name, extra in (("ref", ["--supernet", "reference"]), ("fast", []), ("lean", ["--memory-efficient"])):
        run = _tiny_search(tmp_path, nas_cmd, name, *extra)
        arch[name] = torch_load(run / "arch" / "epoch_000.pt")["arch"]
    for name in ("fast", "lean"):
        for k, v in arch["ref"].items():
            assert rel(arch[name][k], v) <= 1e-4, (name, k)
            assert not torch.equal(v, torch.zeros_like(v))


def test_amp_keeps_architecture_parameters_and_their_softmax_in_fp32(tmp_path):
    """amp=bf16 (on CPU here; meant for CUDA): the supernet computes in bf16, α, its softmax and grads stay fp32."""
    from nasbench.engine.rundir import RunDir
    from nasbench.engine.meters import Meter
    from nasbench.search.data import SearchData
    from nasbench.search.trainer import SearchTrainer

    cfg = resolve_search_config("darts", overrides=["data.dataset=synthetic", "model.channels=4", "model.layers=3",
                                                    "batch_size=4", "device=cpu", "amp=bf16"])
    trainer = SearchTrainer(cfg, RunDir.create(tmp_path / "run"), show_progress=False)
    trainer.build(SearchData(None, [], [], 10, 3))
    seen = {}
    edge_weights = trainer.strategy.edge_weights

    def recording(t):
        w = edge_weights(t)
        seen[t] = w.ops.dtype
        return w

    trainer.strategy.edge_weights = recording
    batch = (torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = trainer.strategy.forward(trainer.net, batch[0])
    assert logits.dtype == torch.bfloat16 and set(seen.values()) == {torch.float32}
    trainer.train_step(batch, batch, 0.025, Meter(), Meter())
    for p in trainer.strategy.arch_parameters():
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
        assert torch.isfinite(p.grad).all()


def test_amp_and_supernet_are_validated(nas_cmd):
    import subprocess

    for flags, word in ((["amp=fp16"], "amp must be off or bf16"), (["supernet=quick"], "supernet must be")):
        proc = subprocess.run([*nas_cmd, "search", "--dry-run", *flags], capture_output=True, text=True)
        assert proc.returncode == 2 and word in proc.stderr and "Traceback" not in proc.stderr


class _CountRelu(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts ReLUs by their input's channel count."""

    def __init__(self):
        super().__init__()
        self.by_channels: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.relu.default, torch.ops.aten.clamp_min.default):
            c = args[0].shape[1]
            self.by_channels[c] = self.by_channels.get(c, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_fast_supernet_takes_each_state_s_relu_once_for_the_cells_that_preprocess_it(memory_efficient):
    """The stem's output is preprocessed by three cells' ReLU-conv-BN and each cell's output by the next
    two: the fast forward computes those ReLUs once per state (not across recomputed cells), the reference
    once per preprocessing."""
    # C=8, 4 cells (normal, reduce, reduce, normal): the stem has 24 channels, ops 8, 16 and 32, cell
    # outputs 32, 64, 128 and 128
    _, s = build("darts", "model.layers=4")
    ref, fast, fmt = pair(s, memory_efficient)
    x = torch.randn(2, 3, 12, 12)
    counts = {}
    for name, net, xin in (("ref", ref, x), ("fast", fast, x.contiguous(memory_format=fmt))):
        with torch.no_grad(), _CountRelu() as mode:
            net(xin, s.weights())
        counts[name] = mode.by_channels
    assert counts["ref"][24] == 3  # the stem's output: both inputs of cell 0, s0 of cell 1
    assert counts["fast"][24] == 1  # no_grad: memory_efficient does not recompute, so shares too
    # cell 1's output (64 channels) feeds cell 2 (s1, ReLU-conv-BN) and cell 3 (s0, a factorized reduce)
    assert counts["ref"][64] == 2 and counts["fast"][64] == 1
    if memory_efficient:  # with gradients each recomputed cell keeps its own ReLUs
        with _CountRelu() as mode:
            fast(x.contiguous(memory_format=fmt), s.weights())
        assert mode.by_channels[24] == 3


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("size", [4, 12])
def test_factorized_reduce_on_pixel_phases_equals_the_module(fmt, size):
    """The fast FactorizedReduce (stride-1 convs on the two pixel phases) against the module: output,
    input gradient in the input's layout, weight gradients (odd sizes: the module itself refuses them)."""
    from nasbench.spaces.darts.fast import run_module
    from nasbench.spaces.darts.ops import FactorizedReduce

    torch.manual_seed(size)
    m = FactorizedReduce(6, 8, affine=True).double()
    twin = copy.deepcopy(m).to(memory_format=fmt)
    x = torch.randn(3, 6, size, size, dtype=torch.float64)
    xf = x.clone().contiguous(memory_format=fmt).requires_grad_()
    x.requires_grad_()
    upstream = torch.randn(3, 8, (size + 1) // 2, (size + 1) // 2, dtype=torch.float64)
    out, out_fast = m(x), run_module(twin, xf)
    assert out_fast.shape == out.shape and rel(out_fast, out) <= 1e-12
    g = torch.autograd.grad(out, [x, *m.parameters()], upstream)
    gf = torch.autograd.grad(out_fast, [xf, *twin.parameters()], upstream)
    assert all(rel(a, b) <= 1e-12 for a, b in zip(gf, g))
    assert gf[0].is_contiguous(memory_format=fmt)


def _cell_output(fmt, size):
    """A cell's output as the fast forward leaves it: four float64 node states (the parts, with a detached twin
    each for the reference), their concatenation, and a ReLU memo that knows it is theirs."""
    from nasbench.spaces.darts.fast import ReluMemo

    parts = [torch.randn(4, 8, size, size, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
             for _ in range(4)]
    parts2 = [p.detach().clone().requires_grad_() for p in parts]
    x = torch.cat(parts, dim=1)
    relus = ReluMemo()
    relus.note_parts(x, parts)
    return parts, parts2, x, relus


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", [(3, 4, 6, 6), (2, 3, 7, 5), (2, 3, 1, 4), (2, 5, 5, 1)])
@pytest.mark.parametrize("relu", [False, True], ids=["phases", "relu-phases"])
def test_the_pixel_phases_gradient_is_the_scatter_of_theirs_into_zeros(fmt, shape, relu):
    """The factorized reduce's phases hand back their gradients (through the ReLU's, for the ReLU phases) at
    their pixels and zeros at the others, for even and odd sizes, either phase without a gradient."""
    from nasbench.spaces.darts.fast import _phases_grad

    torch.manual_seed(1)
    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=fmt)
    even, odd = x[:, :, ::2, ::2].relu(), x[:, :, 1::2, 1::2].relu()
    for missing in (None, 0, 1):
        g = [torch.randn(even.shape, dtype=torch.float64), torch.randn(odd.shape, dtype=torch.float64)]
        if missing is not None:
            g[missing] = None
        got = _phases_grad(x.shape, fmt, *g, relu_of=(even, odd) if relu else None)
        want = torch.zeros_like(x)
        for gk, kept, at in ((g[0], even, (slice(None), slice(None), slice(0, None, 2), slice(0, None, 2))),
                             (g[1], odd, (slice(None), slice(None), slice(1, None, 2), slice(1, None, 2)))):
            if gk is not None:
                want[at] = gk * (kept > 0) if relu else gk
        assert torch.equal(got, want) and got.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_a_cell_output_s_two_preprocessings_take_its_relu_once_with_gradients(fmt):
    """A cell's output is preprocessed by the next cell's ReLU-conv-BN and by the one after it: with gradients
    on, the fast forward takes the output's ReLU once for both (the memo holds it, without autograd, until the
    second has read it), and keeps neither it nor a concatenation. Values and gradients are the modules'."""
    from nasbench.spaces.darts.fast import _preprocess
    from nasbench.spaces.darts.ops import ReLUConvBN

    torch.manual_seed(0)
    first, second = (ReLUConvBN(32, c, 1, 1, 0, affine=False).double().to(memory_format=fmt) for c in (16, 24))
    twins = [copy.deepcopy(first), copy.deepcopy(second)]
    parts, parts2, x, relus = _cell_output(fmt, 6)
    with _CountRelu() as mode:
        outs = [_preprocess(first, x, relus), _preprocess(second, x, relus)]
    assert mode.by_channels == {32: 1}
    held = relus.detached(x)
    assert not held.requires_grad and torch.equal(held, torch.relu(x.detach()))
    relus.let_go(x)
    assert relus.detached(x) is not held  # let go: a later call takes it anew
    x2 = torch.cat(parts2, dim=1)
    refs = [m(x2) for m in twins]
    g = [torch.randn(o.shape, dtype=torch.float64) for o in outs]
    got = torch.autograd.grad(outs, [*parts, *first.parameters(), *second.parameters()], g)
    want = torch.autograd.grad(refs, [*parts2, *twins[0].parameters(), *twins[1].parameters()], g)
    assert all(rel(a, b) <= 1e-12 for a, b in zip([*outs, *got], [*refs, *want]))


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_factorized_reduce_preprocessing_of_a_cell_output_keeps_only_the_two_phases(fmt):
    """A cell after a reduction reads the cell before it through a FactorizedReduce: from a cell's output (its
    parts known to the ReLU memo) the fast preprocessing takes the ReLU of the two pixel phases alone and
    keeps those (the convs read them), not the ReLU of the whole input. Same value and gradients."""
    from nasbench.spaces.darts.fast import _preprocess
    from nasbench.spaces.darts.ops import FactorizedReduce

    torch.manual_seed(0)
    m = FactorizedReduce(32, 16, affine=False).double().to(memory_format=fmt)
    twin = copy.deepcopy(m)
    parts, parts2, x, relus = _cell_output(fmt, 10)
    kept: dict[int, int] = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = _preprocess(m, x, relus)
    ref = twin(torch.cat(parts2, dim=1))
    assert rel(out, ref) <= 1e-12
    g = torch.randn(out.shape, dtype=torch.float64)
    got = torch.autograd.grad(out, [*parts, *m.parameters()], g)
    want = torch.autograd.grad(ref, [*parts2, *twin.parameters()], g)
    assert all(rel(a, b) <= 1e-12 for a, b in zip(got, want))
    whole = x.numel() * 8
    assert max(kept.values()) < whole  # no ReLU of the whole input
    assert sum(kept.values()) <= whole // 2 + out.numel() * 8 + 8192  # the phases, the BN's input, the weights


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_global_pool_equals_the_module_with_its_gradient_in_the_input_layout(fmt):
    """The fast head's global average pool: bitwise the module's output and input gradient, the gradient in
    the input's memory format (autograd's own comes back in NCHW)."""
    pool = torch.nn.AdaptiveAvgPool2d(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, 6, generator=g).contiguous(memory_format=fmt).requires_grad_()
    grad = torch.randn(3, 5, 1, 1, generator=g)
    ref = pool(x)
    (gx_ref,) = torch.autograd.grad(ref, x, grad)
    out = global_pool(pool, x)
    (gx,) = torch.autograd.grad(out, x, grad)
    assert torch.equal(out, ref) and torch.equal(gx, gx_ref)
    assert gx.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_channel_slice_keeps_the_layout_forward_and_backward(fmt):
    """PC-DARTS's channel slices of a state: bitwise ``x[:, a:b]`` and its gradient, both in ``x``'s memory
    format (autograd's slice backward zero-fills NCHW)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, 5, 6, generator=g).contiguous(memory_format=fmt).requires_grad_()
    grad = torch.randn(3, 6, 5, 6, generator=g)
    out = channel_slice(x, 2, 8)
    (gx,) = torch.autograd.grad(out, x, grad)
    (gx_ref,) = torch.autograd.grad(x[:, 2:8], x, grad)
    assert torch.equal(out, x[:, 2:8]) and torch.equal(gx, gx_ref)
    assert out.is_contiguous(memory_format=fmt) and gx.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_dense_grad_is_the_identity_with_a_materialised_gradient(fmt):
    """``dense_grad``: the tensor's values, and a strided upstream gradient (a piece of a stack's gradient)
    handed back bitwise, materialised in the tensor's memory format."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g).contiguous(memory_format=fmt).requires_grad_()
    other = torch.randn(2, 3, 4, 5, generator=g)
    out = torch.stack([dense_grad(x), other], dim=-1)
    plain = torch.stack([x, other], dim=-1)
    grad = torch.randn(out.shape, generator=g)
    (gx,) = torch.autograd.grad(out, x, grad)
    assert torch.equal(out, plain) and torch.equal(gx, grad[..., 0])
    assert gx.is_contiguous(memory_format=fmt)
    assert not grad[..., 0].is_contiguous(memory_format=fmt)  # what autograd alone would hand back


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_nchw_copy_hands_the_gradient_back_in_the_input_s_layout(fmt):
    """``nchw``: ``x`` in NCHW memory, bitwise, and the gradient bitwise autograd's, in ``x``'s layout (a
    pool's backward before the narrow BatchNorm's NCHW detour then runs in one layout)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g).contiguous(memory_format=fmt).requires_grad_()
    out = nchw(x)
    grad = torch.randn(out.shape, generator=g)
    (gx,) = torch.autograd.grad(out, x, grad)
    (gx_ref,) = torch.autograd.grad(x.contiguous(), x, grad)
    assert out.is_contiguous() and torch.equal(out, x) and torch.equal(gx, gx_ref)
    assert gx.is_contiguous(memory_format=fmt)
    if fmt == torch.channels_last:
        assert not gx_ref.is_contiguous(memory_format=fmt)  # what autograd alone hands back


@pytest.mark.parametrize("channels", [4, 8])
def test_the_batch_folded_separable_conv_of_benchmarks_ops_computes_the_plain_one(channels):
    """``benchmarks/ops.py --fold`` times separable convs with the batch folded into the channels, with a
    BatchNorm whose statistics pool the folded groups: its output and every gradient are the plain chain's."""
    import argparse
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ops.py"
    spec = importlib.util.spec_from_file_location("benchmark_ops", path)
    ops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ops)
    args = argparse.Namespace(batch_size=8, channels=channels, size=6, repeats=1)
    rows = ops.fold_rows(args, torch.device("cpu"))
    assert len(rows) == 4 and all(r["max_rel_diff"] <= 1e-5 for r in rows), rows
