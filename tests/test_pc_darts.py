"""PC-DARTS itself: partial channels and the shuffle, edge normalization, the warm-up, derive with β, size."""

import json
import subprocess

import pytest
import torch
from torch import nn

from nasbench.algorithms.base import create_strategy
from nasbench.algorithms.pc_darts import PartialChannelEdge, channel_shuffle, edge_normalization, shuffled_cat
from nasbench.config import resolve_search_config
from nasbench.errors import ConfigError
from nasbench.engine.rundir import RunDir, torch_load
from nasbench.spaces.darts.ops import PRIMITIVES
from nasbench.engine.measure import count_weights
from nasbench.spaces.base import CellWeights
from nasbench.spaces.darts.ops import search_op
from nasbench.spaces.edges import MixedOp
from nasbench.search.trainer import SearchTrainer, dry_run
from conftest import tiny_strategy


def tiny(algo="pc-darts", *overrides):
    return tiny_strategy(algo, *overrides, channels=8)


def test_paper_defaults_of_the_official_code():
    cfg = resolve_search_config("pc-darts")
    assert (cfg.epochs, cfg.batch_size, cfg.model.channels, cfg.model.layers) == (50, 256, 16, 8)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.grad_clip) == (0.1, 0.9, 3e-4, 5.0)
    assert (cfg.arch_optim.lr, list(cfg.arch_optim.betas), cfg.arch_optim.weight_decay) == (6e-4, [0.5, 0.999], 1e-3)
    assert (cfg.pc_darts.k, cfg.pc_darts.warmup_epochs) == (4, 15)


def test_weight_count_equals_the_official_code():
    cfg = resolve_search_config("pc-darts")
    s = create_strategy("pc-darts", cfg)
    net = s.build_supernet(s.supernet_spec(num_classes=10, in_channels=3))
    assert count_weights(net) == 299_578


def test_edge_ops_are_built_for_c_over_k_channels():
    edge = PartialChannelEdge(16, 1, PRIMITIVES, search_op, 4)
    convs = [m for m in edge.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.in_channels == 4 for c in convs)
    pool_bn = edge.ops[PRIMITIVES.index("max_pool_3x3")][1]
    assert isinstance(pool_bn, nn.BatchNorm2d) and pool_bn.num_features == 4 and not pool_bn.affine
    w = torch.softmax(torch.randn(8), 0)
    assert edge(torch.randn(2, 16, 8, 8), w).shape == (2, 16, 8, 8)
    red = PartialChannelEdge(16, 2, PRIMITIVES, search_op, 4)
    assert red(torch.randn(2, 16, 8, 8), w).shape == (2, 16, 4, 4)


def test_edge_output_is_the_shuffled_concat_of_mixed_part_and_bypass():
    torch.manual_seed(0)
    w = torch.softmax(torch.randn(8), 0)
    for stride in (1, 2):
        edge = PartialChannelEdge(8, stride, PRIMITIVES, search_op, 4).eval()
        x = torch.randn(2, 8, 8, 8)
        part = MixedOp.forward(edge, x[:, :2], w)
        rest = x[:, 2:] if stride == 1 else nn.functional.max_pool2d(x[:, 2:], 2, 2)
        expected = channel_shuffle(torch.cat([part, rest], 1), 4)
        assert torch.allclose(edge(x, w), expected)


def test_channel_shuffle_is_a_permutation():
    C, k = 12, 4
    x = torch.arange(C, dtype=torch.float32).view(1, C, 1, 1).expand(2, C, 3, 3).contiguous()
    y = channel_shuffle(x, k)
    perm = y[0, :, 0, 0].long()
    assert sorted(perm.tolist()) == list(range(C))
    # output channel i·k + g is input channel g·(C/k) + i
    assert perm.tolist() == [g * (C // k) + i for i in range(C // k) for g in range(k)]
    assert torch.equal(channel_shuffle(y, C // k), x)  # the transpose undoes it
    assert torch.equal(channel_shuffle(x, 1), x)
    xl = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(channel_shuffle(xl, k), y)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("k", [2, 4])
def test_shuffled_cat_is_the_shuffle_of_the_cat_in_the_input_layout(fmt, k):
    """The fast execution's one-copy shuffle: channel for channel the reference's cat + shuffle, the
    gradient too, and a channels_last input stays channels_last (the reshape of channel_shuffle hands back NCHW)."""
    g = torch.Generator().manual_seed(k)
    c = 3
    mixed = torch.randn(2, c, 5, 4, generator=g).contiguous(memory_format=fmt).requires_grad_()
    rest = torch.randn(2, c * (k - 1), 5, 4, generator=g).contiguous(memory_format=fmt).requires_grad_()
    out = shuffled_cat(mixed, rest, k)
    expected = channel_shuffle(torch.cat([mixed, rest], 1), k)
    assert torch.equal(out, expected)
    assert out.is_contiguous(memory_format=fmt)
    upstream = torch.randn(out.shape, generator=g)
    got = torch.autograd.grad(out, (mixed, rest), upstream)
    want = torch.autograd.grad(expected, (mixed, rest), upstream)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    # the mixed piece's gradient comes back materialised in its layout, not as a strided view of the stack's
    assert got[0].is_contiguous(memory_format=fmt)


def test_k1_equal_beta_equals_darts_with_edges_scaled_by_one_over_inputs():
    cfg, s, net = tiny("pc-darts", "pc_darts.k=1", "model.channels=4")
    _, d, dnet = tiny("darts", "model.channels=4")
    dnet.load_state_dict(net.state_dict())  # same weight names: a K=1 edge is a DARTS mixed op
    net, dnet = net.double(), dnet.double()
    torch.manual_seed(4)
    alphas = {t: torch.randn(14, 8, dtype=torch.float64) for t in ("normal", "reduce")}
    with torch.no_grad():
        for t in ("normal", "reduce"):
            s.arch[f"alpha_{t}"] = alphas[t].clone().requires_grad_()
            s.arch[f"beta_{t}"] = torch.full((14,), 0.7, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([1 / (i + 2) for i in range(4) for _ in range(i + 2)], dtype=torch.float64)
    dw = {t: CellWeights(torch.softmax(alphas[t], -1), edges=scale) for t in ("normal", "reduce")}
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(s.forward(net, x), dnet(x, dw), atol=1e-10)
    # and with unequal β it differs
    with torch.no_grad():
        s.arch["beta_normal"][0] += 1.0
    assert not torch.allclose(s.forward(net, x), dnet(x, dw), atol=1e-6)


def test_beta_is_an_architecture_parameter_normalised_per_node():
    _, s, net = tiny()
    assert set(s.arch) == {"alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce"}
    b = s.beta("normal")
    assert b.shape == (14,) and b.requires_grad and b.abs().max() < 1e-2
    e = edge_normalization(torch.randn(14), s.topology)
    sums = [e[0:2].sum(), e[2:5].sum(), e[5:9].sum(), e[9:14].sum()]
    assert torch.allclose(torch.stack(sums), torch.ones(4))
    loss = nn.functional.cross_entropy(s.forward(net, torch.randn(2, 3, 8, 8)), torch.tensor([0, 1]))
    loss.backward()
    assert all(s.arch[k].grad is not None and s.arch[k].grad.abs().sum() > 0 for k in s.arch)


def test_derive_uses_beta():
    _, s, _ = tiny()
    W = torch.full((14, 8), 0.1)
    W[0, 4], W[1, 5] = 0.35, 0.3  # node 0: edge 0 strongest by α alone
    with torch.no_grad():
        for t in ("normal", "reduce"):
            s.arch[f"alpha_{t}"].copy_(torch.log(W / W.sum(1, keepdim=True)))
            s.arch[f"beta_{t}"].zero_()
    g = s.derive()
    assert ("sep_conv_3x3", 0) in g.normal[:2]
    assert {j for _, j in g.normal[:2]} == {0, 1}
    # node 1 (edges 2..4) is a tie by α; β decides: edge 4 (input 2) and edge 3 (input 1)
    with torch.no_grad():
        for t in ("normal", "reduce"):
            s.arch[f"beta_{t}"][2:5] = torch.tensor([-2.0, 0.5, 1.0])
    g = s.derive()
    assert [j for _, j in g.normal[2:4]] == [2, 1]


def test_warmup_is_scaled_and_quick_preset_ends_it():
    cfg, s, _ = tiny()
    assert [s.updates_arch(e) for e in (0, 14, 15)] == [False, False, True]
    q = resolve_search_config("pc-darts", preset="quick")
    sq = create_strategy("pc-darts", q)
    ups = [sq.updates_arch(e) for e in range(q.epochs)]
    assert not ups[0] and ups[-1]
    with pytest.raises(ConfigError):
        resolve_search_config("pc-darts", overrides=["model.channels=6"])


def test_dry_run_reports_own_sizes():
    r = dry_run(resolve_search_config("pc-darts", overrides=["data.dataset=synthetic"]))
    assert r["params"] == 299_578 and r["arch_params"] == 2 * 14 * 8 + 2 * 14


def test_warmup_leaves_alpha_and_beta_untouched(tmp_path):
    """Through the real trainer: epoch 0 is warm-up (15 of 50 scaled to 2 epochs → 1), epoch 1 is not."""
    cfg = resolve_search_config("pc-darts", overrides=[
        "data.dataset=synthetic", "model.channels=4", "model.layers=3", "batch_size=16", "data.subset=64",
        "data.num_train=64", "data.image_size=8", "epochs=2"])
    trainer = SearchTrainer(cfg, RunDir.create(tmp_path / "run"), show_progress=False)
    initial = {}
    init = trainer.strategy.init_arch_params

    def recording_init(spec, device):
        init(spec, device)
        initial.update({k: v.detach().clone() for k, v in trainer.strategy.arch.items()})

    trainer.strategy.init_arch_params = recording_init
    trainer.fit()
    after_warmup = torch_load(trainer.run.arch_path(0))["arch"]
    after_search = torch_load(trainer.run.arch_path(1))["arch"]
    assert set(initial) == {"alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce"}
    for k, v in initial.items():
        assert torch.equal(after_warmup[k], v), k
        assert not torch.equal(after_search[k], v), k
    metrics = trainer.run.metrics()
    assert [m["arch_updated"] for m in metrics] == [False, True]


def test_search_and_derive_end_to_end(tmp_path, nas_cmd):
    out = tmp_path / "run"
    cmd = [*nas_cmd, "search", "--algo", "pc-darts", "--dataset", "synthetic", "--epochs", "2", "--channels", "4",
           "--layers", "3", "--batch-size", "16", "--subset", "64", "data.num_train=64", "data.image_size=16",
           "--no-progress", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    g_path = tmp_path / "derived.json"
    r = subprocess.run([*nas_cmd, "derive", str(out), "-o", str(g_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    g = json.loads(g_path.read_text())
    assert len(g["normal"]) == 8 and len(g["reduce"]) == 8


def test_learning_rate_anneals_to_zero_as_the_official_master_branch():
    from nasbench.config import resolve_search_config

    cfg = resolve_search_config("pc-darts")
    assert (cfg.optim.lr, cfg.optim.lr_min) == (0.1, 0.0)
