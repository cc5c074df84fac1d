"""On a CUDA device (every test here is marked ``cuda`` and skipped without one; ``benchmarks/gpu_check.sh``
runs them): every algorithm's supernet, fast against reference, in fp32 and under bf16 autocast; the real
trainer's step with ``amp=bf16``; a search, derive, train-final, eval and export through the CLI on CUDA.

The fp32 comparisons run with TF32 off: PyTorch lets cuDNN round fp32 convolutions to TF32 by default, which
would hide what the two executions compute. The bf16 comparison cannot be exact (two executions round in
different places), so it asks that the fast execution under autocast be as close to the fp32 reference as
the reference itself under autocast is.

``NASBENCH_CUDA_TESTS_ON=cpu`` runs them on the CPU instead (slowly; bf16 autocast on CPU): a check of the
tests themselves on a machine without a GPU, up to the point where CUDA is required.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess

import pytest
import torch
import torch.nn.functional as F

from conftest import rel
from test_supernet_fast import CASES, build

pytestmark = pytest.mark.cuda
DEV = torch.device(os.environ.get("NASBENCH_CUDA_TESTS_ON", "cuda"))

TOL = 1e-4  # fp32 on the GPU: other kernels (and summation orders) for the per-edge and the fused convolutions


@pytest.fixture(autouse=True)
def no_tf32():
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev


def cuda_pair(s, memory_efficient=False, recompute_ops=False):
    dev = DEV
    torch.manual_seed(0)
    spec = s.supernet_spec(10, 3)
    ref = s.build_supernet(spec).set_execution("reference").to(dev)
    fast = copy.deepcopy(ref).set_execution("fast", memory_efficient)
    if recompute_ops:
        fast.set_recompute_ops(True)
    s.init_arch_params(spec, dev)
    with torch.no_grad():
        for p in s.arch_parameters():
            p.normal_(0.0, 0.5)
    return ref, fast


def forward_backward(s, nets, amp=(False, False), dtype=torch.float32):
    """Logits and every gradient (weights and α) of each net on one batch and one set of edge weights."""
    dev = DEV
    for net in nets:
        s.on_epoch_start(0, net)
    torch.manual_seed(1)
    size = 32 if s.cfg.model.stem == "imagenet" else 16  # the ImageNet stems halve 3 times, the reductions twice
    x = torch.randn(6, 3, size, size, device=dev, dtype=dtype)
    y = torch.randint(0, 10, (6,), device=dev)
    w = s.weights()
    out = []
    for net, on in zip(nets, amp):
        torch.manual_seed(2)
        with torch.autocast(DEV.type, dtype=torch.bfloat16, enabled=on):
            logits = net(x, w)
            loss = F.cross_entropy(logits, y)
        params = dict(net.named_parameters())
        grads = torch.autograd.grad(loss, [*params.values(), *s.arch.values()], allow_unused=True,
                                    retain_graph=True)
        out.append((logits.float(), dict(zip([*params, *s.arch], grads))))
    return out


def worst(a: dict, b: dict) -> float:
    """Largest per-tensor ‖a − b‖/‖b‖ (against the largest norm for tensors that are zero up to rounding)."""
    scale = max(float(t.double().norm()) for t in b.values() if t is not None)
    out = 0.0
    for k, tb in b.items():
        ta = a[k]
        if ta is None or tb is None:
            other = ta if tb is None else tb
            assert other is None or float(other.abs().max()) == 0.0, k
            continue
        n = float(tb.double().norm())
        out = max(out, float((ta.double() - tb.double()).norm()) / (n if n > 1e-6 * scale else scale))
    return out


def overall(a: dict, b: dict) -> float:
    """‖a − b‖/‖b‖ over all tensors together."""
    keys = [k for k in b if b[k] is not None and a[k] is not None]
    num = sum(float((a[k].double() - b[k].double()).norm()) ** 2 for k in keys)
    return (num / sum(float(b[k].double().norm()) ** 2 for k in keys)) ** 0.5


@pytest.mark.parametrize("memory_efficient,recompute_ops", [(False, False), (True, False), (False, True)],
                         ids=["fast", "fast+memory-efficient", "fast+recompute-ops"])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_equals_reference_on_cuda(case, memory_efficient, recompute_ops):
    """float64: per tensor to 1e-10 (what is computed is the same); fp32: the logits, α's gradient and all
    gradients together to 1e-4 (single tensors can lose two more digits: a BatchNorm over a few nearly equal
    values amplifies rounding, as it does on the CPU)."""
    algo, overrides, prepare = CASES[case]
    _, s = build(algo, *overrides)
    if prepare:
        prepare(s)
    if recompute_ops and "model.space=nas-bench-201" in overrides:
        pytest.skip("recompute_ops is a darts-space execution")
    ref, fast = cuda_pair(s, memory_efficient, recompute_ops)
    for _ in range(2):  # twice: the running statistics, updated on the device, stay equal too
        (l0, g0), (l1, g1) = forward_backward(s, (ref, fast))
        assert rel(l1, l0) <= TOL
        assert worst({k: g1[k] for k in s.arch}, {k: g0[k] for k in s.arch}) <= TOL
        assert overall(g1, g0) <= TOL
    for (name, a), (_, b) in zip(fast.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=lambda m: f"{name}: {m}")
    ref.double()
    fast.double()
    s.arch = {k: v.detach().double().requires_grad_() for k, v in s.arch.items()}
    (l0, g0), (l1, g1) = forward_backward(s, (ref, fast), dtype=torch.float64)
    assert rel(l1, l0) <= 1e-10 and worst(g1, g0) <= 1e-10


@pytest.mark.parametrize("case", ["darts", "gdas", "pc-darts", "p-darts-stage2", "sgas-decided"])
def test_fast_under_bf16_autocast_is_as_close_to_fp32_as_the_reference_is(case):
    algo, overrides, prepare = CASES[case]
    if algo == "p-darts":  # no dropout: CUDA draws other masks for bf16 tensors than for fp32 ones
        overrides = [*overrides, "p_darts.dropout_rate=[0.0,0.0,0.0]"]
    _, s = build(algo, *overrides)
    if prepare:
        prepare(s)
    ref, fast = cuda_pair(s)
    ref_amp = copy.deepcopy(ref)
    (l32, g32), (l_ref, g_ref), (l_fast, g_fast) = forward_backward(s, (ref, ref_amp, fast), amp=(False, True, True))
    assert rel(l_ref, l32) < 0.05  # bf16 keeps 8 bits: a few 1e-3 per op
    assert rel(l_fast, l32) <= 2 * rel(l_ref, l32) + 1e-3
    alpha = [k for k in g32 if k in s.arch]
    assert worst({k: g_fast[k] for k in alpha}, {k: g32[k] for k in alpha}) <= \
        2 * worst({k: g_ref[k] for k in alpha}, {k: g32[k] for k in alpha}) + 1e-2
    assert overall(g_fast, g32) <= 2 * overall(g_ref, g32) + 1e-2


@pytest.mark.parametrize("algo", ["darts", "gdas", "pc-darts", "p-darts", "sgas"])
def test_a_trainer_step_with_amp_on_cuda_keeps_alpha_fp32(algo, tmp_path):
    from nasbench.config import resolve_search_config
    from nasbench.engine.meters import Meter
    from nasbench.engine.rundir import RunDir
    from nasbench.search.data import SearchData
    from nasbench.search.trainer import SearchTrainer

    extra = ["p_darts.layers=3"] if algo == "p-darts" else []
    cfg = resolve_search_config(algo, overrides=["data.dataset=synthetic", "model.channels=8", "model.layers=3",
                                                 "batch_size=8", f"device={DEV}", "amp=bf16", *extra])
    trainer = SearchTrainer(cfg, RunDir.create(tmp_path / "run"), show_progress=False)
    trainer.build(SearchData(None, [], [], 10, 3))
    assert trainer.device.type == DEV.type
    batch = (torch.randn(8, 3, 16, 16, device=DEV), torch.randint(0, 10, (8,), device=DEV))
    trainer.train_step(batch, batch, cfg.optim.lr, Meter(), Meter())
    for p in trainer.strategy.arch_parameters():
        assert p.dtype == torch.float32 and p.device.type == DEV.type and torch.isfinite(p).all()
        assert p.grad is None or p.grad.dtype == torch.float32
    for p in trainer.net.parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all()


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("algo", ["darts", "gdas", "pc-darts", "p-darts", "sgas"])
def test_search_derive_train_final_eval_export_on_cuda(algo, nas_cmd, tmp_path):
    run = tmp_path / "search"
    epochs = {"p-darts": 3, "sgas": 8}.get(algo, 1)  # a stage each; eight decisions
    depth = ["--epochs", str(epochs), "--layers", "3", *(["p_darts.add_layers=[0,1,2]"] if algo == "p-darts" else [])]
    _run([*nas_cmd, "search", "--algo", algo, "--device", DEV.type, "--batch-size", "8", "--channels", "4", *depth, "--out", str(run), "--no-progress", "data.dataset=synthetic",
          "data.num_train=16", "data.image_size=16", "plots=false"])
    genotype = tmp_path / "g.json"
    _run([*nas_cmd, "derive", str(run), "-o", str(genotype)])
    final = tmp_path / "final"
    r = _run([*nas_cmd, "train-final", "--genotype", str(genotype), "--device", DEV.type, "--amp",
              "--epochs", "1", "--batch-size", "8", "--channels", "4", "--layers", "3", "--auxiliary",
              "--out", str(final), "--no-progress", "--json", "data.dataset=synthetic", "data.num_train=32",
              "data.num_test=16", "data.image_size=16"])
    result = json.loads(r.stdout)
    assert 0.0 <= result["test_acc"] <= 100.0
    r = _run([*nas_cmd, "eval", str(final), "--device", DEV.type, "--json"])
    assert json.loads(r.stdout)["test_acc"] == pytest.approx(result["test_acc"], abs=1e-6)
    r = _run([*nas_cmd, "export", str(final), "--format", "pt2", "--json"])
    assert json.loads(r.stdout)["max_abs_diff"] < 1e-3
    assert (final / "model.pt2").is_file()
