"""GDAS itself: one sampled op per edge, Gumbel frequencies, the straight-through gradient, τ, derive, FRC."""

import json
import subprocess

import pytest
import torch
from torch import nn

from nasbench.algorithms.base import ArchStepContext, create_strategy
from nasbench.algorithms.gdas import GumbelEdge, derive_cell_pairs, gumbel_straight_through
from nasbench.config import resolve_search_config
from nasbench.errors import ConfigError
from nasbench.spaces.darts.genotype import validate
from nasbench.spaces.darts.network import FixedReductionCell
from nasbench.spaces.darts.ops import PRIMITIVES, search_op
from nasbench.search.trainer import dry_run
from conftest import tiny_strategy


def tiny(*overrides, seed=0):
    return tiny_strategy("gdas", *overrides, seed=seed)


def test_paper_defaults_of_the_official_code():
    cfg = resolve_search_config("gdas")
    assert (cfg.epochs, cfg.batch_size, cfg.model.channels, cfg.model.layers) == (250, 256, 16, 6)
    assert cfg.model.final_bn_relu
    assert (cfg.optim.lr, cfg.optim.lr_min, cfg.optim.momentum, cfg.optim.nesterov) == (0.025, 0.001, 0.9, True)
    assert (cfg.optim.weight_decay, cfg.optim.grad_clip) == (5e-4, 5.0)
    assert (cfg.arch_optim.lr, list(cfg.arch_optim.betas), cfg.arch_optim.weight_decay) == (3e-4, [0.5, 0.999], 1e-3)
    assert (cfg.gdas.tau_max, cfg.gdas.tau_min) == (10.0, 0.1)
    s = create_strategy("gdas", cfg)
    assert s.step_order == "weights_first"
    # 6 cells: normal, normal, reduce, normal, reduce, normal
    spec = s.supernet_spec(10, 3)
    assert s.build_supernet(spec).cell_types == ["normal", "normal", "reduce", "normal", "reduce", "normal"]


def test_exactly_one_op_per_edge_per_forward():
    _, s, net = tiny()
    calls = {}

    def counter(key):
        def hook(module, inp, out):
            calls[key] = calls.get(key, 0) + 1
        return hook

    for name, edge in net.named_modules():
        if isinstance(edge, GumbelEdge):
            for k, op in enumerate(edge.ops):
                op.register_forward_hook(counter((name, k)))
    n_edges = sum(1 for m in net.modules() if isinstance(m, GumbelEdge))
    torch.manual_seed(1)
    net(torch.randn(2, 3, 8, 8), s.weights())
    assert sum(calls.values()) == n_edges  # one op call per edge
    per_edge = {}
    for (name, _), c in calls.items():
        per_edge[name] = per_edge.get(name, 0) + c
    assert len(per_edge) == n_edges and set(per_edge.values()) == {1}


def test_all_cells_of_a_type_share_one_sample_and_the_value_is_the_sampled_op():
    _, s, net = tiny("model.layers=4")  # reductions at 1 and 2: normal, reduce, reduce, normal
    torch.manual_seed(3)
    w = s.weights()
    x = torch.randn(2, 3, 8, 8)
    net.eval()
    out = net(x, w)
    # the same forward with integer choices (only that op, unweighted) gives the same value
    ints = {t: type(cw)([int(k) for _, k in cw.ops]) for t, cw in w.items()}
    assert torch.allclose(out, net(x, ints), atol=1e-5)


def test_sampled_frequencies_follow_softmax_alpha_at_tau_1():
    torch.manual_seed(0)
    total = 40000
    alpha = torch.tensor([[1.0, 0.0, -1.0, 0.5, 2.0, -0.5, 0.2, 0.0]]).repeat(total, 1)  # one row per draw
    _, index = gumbel_straight_through(alpha, tau=1.0)
    freq = torch.bincount(index, minlength=8).float() / total
    p = torch.softmax(alpha[0], dim=0)
    se = torch.sqrt(p * (1 - p) / total)
    assert ((freq - p).abs() < 4 * se).all(), (freq, p)  # every op within 4 standard errors
    # a low temperature does not change the distribution of the argmax (Gumbel-max), only the gradient
    _, index = gumbel_straight_through(alpha, tau=0.1)
    freq = torch.bincount(index, minlength=8).float() / total
    assert ((freq - p).abs() < 4 * se).all()


def test_straight_through_weights_are_one_hot_and_carry_the_soft_gradient():
    torch.manual_seed(0)
    alpha = torch.randn(14, 8, requires_grad=True)
    weights, index = gumbel_straight_through(alpha, tau=1.0)
    assert torch.allclose(weights.detach(), nn.functional.one_hot(index, 8).float(), atol=1e-6)
    (weights * torch.arange(8.0)).sum().backward()
    assert alpha.grad is not None and (alpha.grad.abs().sum(dim=1) > 0).all()


@pytest.mark.parametrize("hard_weight_sum", [False, True])
def test_alpha_gets_a_gradient_through_the_edges(hard_weight_sum):
    _, s, net = tiny(f"gdas.hard_weight_sum={str(hard_weight_sum).lower()}")
    none = PRIMITIVES.index("none")
    with torch.no_grad():  # edge 0 draws 'none' (p ≈ 1 − 1e-13), every other edge almost surely not
        for name in ("alpha_normal", "alpha_reduce"):
            s.arch[name].zero_()
            s.arch[name][:, none] = -30.0
            s.arch[name][0, none] = 30.0
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    torch.manual_seed(2)
    loss = s.arch_backward(ArchStepContext(net, (x, y), (x, y), opt, 0.1, nn.CrossEntropyLoss()))
    assert torch.isfinite(loss)
    for name in ("alpha_normal", "alpha_reduce"):
        g = s.arch[name].grad
        assert g is not None and torch.isfinite(g).all()
        assert (g[1:].abs().sum(dim=1) > 0).all(), name  # the sampled ops pass the gradient
        if hard_weight_sum:  # NAS-Bench-201's formula: the unsampled hard weights pass it too
            assert g[0].abs().sum() > 0, name
        else:  # the official NASNet-space edge: 'none' drawn, no gradient at all
            assert (g[0] == 0).all(), name


@pytest.mark.parametrize("hard_weight_sum", [False, True])
def test_edge_alpha_gradient_equals_the_closed_form(hard_weight_sum):
    """α's gradient through one edge, against the closed form: with p = softmax((log_softmax(α) + g)/τ),
    ∂p_k/∂α_j = p_k(δ_kj − p_j)/τ, and ∂L/∂w_k = ⟨∂L/∂out, o_k(x)⟩ for the sampled k (and ⟨∂L/∂out, 1⟩ for
    the others when their hard weights are summed in)."""
    torch.manual_seed(3)
    edge = GumbelEdge(4, 1, PRIMITIVES, lambda n, C, st: search_op(n, C, st, pool_bn=False), hard_weight_sum).double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.double)
    R = torch.randn(2, 4, 6, 6, dtype=torch.double)
    tau = 0.7
    for index in range(len(PRIMITIVES)):
        alpha = torch.randn(len(PRIMITIVES), dtype=torch.double, requires_grad=True)
        g = torch.randn(len(PRIMITIVES), dtype=torch.double)
        g[index] = 50.0  # this op is the argmax
        p = torch.softmax((alpha.log_softmax(-1) + g) / tau, -1)
        w = torch.zeros_like(p).scatter_(-1, p.argmax().view(1), 1.0) - p.detach() + p
        assert int(p.argmax()) == index
        out = edge(x, (w, index))
        (out * R).sum().backward()
        with torch.no_grad():
            P = p.detach()
            c = torch.full_like(P, float(R.sum()) if hard_weight_sum else 0.0)
            c[index] = float((edge.ops[index](x) * R).sum())
            expected = sum(c[k] * P[k] * ((torch.arange(len(P)) == k).double() - P) / tau for k in range(len(P)))
        assert torch.allclose(alpha.grad, expected, rtol=1e-10, atol=1e-14), PRIMITIVES[index]
        if PRIMITIVES[index] == "none" and not hard_weight_sum:
            assert (alpha.grad == 0).all()


def test_gdas_pools_have_no_batchnorm_and_the_others_keep_it():
    _, s, net = tiny()
    pools = [op for e in net.modules() if isinstance(e, GumbelEdge) for n, op in zip(PRIMITIVES, e.ops) if "pool" in n]
    assert pools and all(isinstance(op, (nn.MaxPool2d, nn.AvgPool2d)) for op in pools)
    _, d, dnet = tiny_strategy("darts")
    dpools = [op for e in dnet.modules() if type(e).__name__ == "MixedOp" for n, op in zip(PRIMITIVES, e.ops)
              if "pool" in n]
    assert dpools and all(isinstance(op, nn.Sequential) and isinstance(op[1], nn.BatchNorm2d) for op in dpools)
    assert resolve_search_config("gdas", overrides=["model.space=nas-bench-201"]).gdas.hard_weight_sum
    assert not resolve_search_config("gdas").gdas.hard_weight_sum


def test_tau_schedule_and_checkpoint():
    cfg, s, _ = tiny("epochs=5")
    taus = []
    for e in range(5):
        s.on_epoch_start(e, None)
        taus.append(s.epoch_metrics()["tau"])
    assert taus == pytest.approx([10.0, 7.525, 5.05, 2.575, 0.1])
    s.on_epoch_start(2, None)
    state = s.state_dict()
    s2 = create_strategy("gdas", cfg)
    assert s2.tau == 10.0
    s2.load_state_dict(state)
    assert s2.tau == pytest.approx(5.05)
    # the paper's τ_min = 1 is one key away
    _, s3, _ = tiny("epochs=3", "gdas.tau_min=1")
    s3.on_epoch_start(2, None)
    assert s3.tau == pytest.approx(1.0)


def test_derive_keeps_the_two_strongest_pairs_even_from_one_input():
    ops = tuple(PRIMITIVES for _ in range(14))
    W = torch.full((14, 8), 1 / 8)
    W[0] = torch.tensor([0.1, 0.02, 0.02, 0.02, 0.45, 0.35, 0.02, 0.02])  # 'none' never counts
    W[1] = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.3, 0.1])
    # node 0: the two strongest pairs both come from input 0 (0.45, 0.35 > 0.3)
    gene = derive_cell_pairs(W, ops, create_strategy("gdas", resolve_search_config("gdas")).topology)
    assert gene[0:2] == [("sep_conv_3x3", 0), ("sep_conv_5x5", 0)]
    _, s, _ = tiny()
    with torch.no_grad():
        s.arch["alpha_normal"].copy_(torch.log(W))
    assert list(s.derive().normal[:2]) == [("sep_conv_3x3", 0), ("sep_conv_5x5", 0)]
    _, s, _ = tiny("gdas.distinct_inputs=true")
    with torch.no_grad():
        s.arch["alpha_normal"].copy_(torch.log(W))
    assert list(s.derive().normal[:2]) == [("sep_conv_3x3", 0), ("dil_conv_3x3", 1)]


def test_fixed_reduction_searches_the_normal_cell_only():
    _, s, net = tiny("model.channels=4", "gdas.fixed_reduction=true")
    assert s.spec.ops("reduce") is None and s.spec.cell_types == ("normal",)
    assert list(s.arch) == ["alpha_normal"]
    fixed = [c for c in net.cells if isinstance(c, FixedReductionCell)]
    assert len(fixed) == 2
    bns = [m for c in fixed for m in c.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(b.affine for b in bns)
    out = s.forward(net, torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 3)
    g = s.derive()
    assert g.reduce is None
    validate(g)
    with pytest.raises(ConfigError):
        resolve_search_config("gdas", overrides=["model.channels=6", "gdas.fixed_reduction=true"])


def test_dry_run_reports_own_sizes():
    cfg = resolve_search_config("gdas", overrides=["data.dataset=synthetic"])
    r = dry_run(cfg)
    assert r["algo"] == "gdas" and r["layers"] == 6 and r["arch_params"] == 2 * 14 * 8
    frc = dry_run(resolve_search_config("gdas", overrides=["data.dataset=synthetic", "gdas.fixed_reduction=true"]))
    assert frc["arch_params"] == 14 * 8 and frc["params"] < r["params"]


def test_quick_preset_keeps_tau_decaying():
    cfg = resolve_search_config("gdas", preset="quick")
    s = create_strategy("gdas", cfg)
    s.on_epoch_start(0, None)
    first = s.tau
    s.on_epoch_start(cfg.epochs - 1, None)
    assert first == 10.0 and s.tau == pytest.approx(0.1)


def test_search_and_derive_end_to_end(tmp_path, nas_cmd):
    """GDAS-FRC through the real CLI: τ decays over the run, derive writes a genotype with reduce: null."""
    out = tmp_path / "run"
    cmd = [*nas_cmd, "search", "--algo", "gdas", "--dataset", "synthetic", "--epochs", "2", "--channels", "4",
           "--layers", "3", "--batch-size", "16", "--subset", "64", "data.num_train=64", "data.image_size=16",
           "gdas.fixed_reduction=true", "--no-progress", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["tau"] for m in metrics] == pytest.approx([10.0, 0.1])
    g_path = tmp_path / "derived.json"
    r = subprocess.run([*nas_cmd, "derive", str(out), "-o", str(g_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    g = json.loads(g_path.read_text())
    assert len(g["normal"]) == 8
    assert g["reduce"] is None


def test_arch_step_keeps_its_logits_for_the_architecture_accuracy():
    _, s, net = tiny()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ctx = ArchStepContext(net, (x, y), (x, y), opt, 0.1, nn.CrossEntropyLoss())
    s.train_generator.manual_seed(5)
    loss = s.arch_backward(ctx)
    assert ctx.logits is not None and ctx.logits.shape == (4, 3) and not ctx.logits.requires_grad
    s.train_generator.manual_seed(5)  # the same draw: the same logits, whose loss was returned
    with torch.no_grad():
        again = s.forward(net, x)
    assert torch.allclose(again, ctx.logits) and torch.isclose(nn.functional.cross_entropy(again, y), loss)
