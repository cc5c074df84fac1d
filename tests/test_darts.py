"""DARTS itself: softmax edge weights, the second-order step and its Hessian-vector product, derive."""


import torch
from torch.func import functional_call

from nasbench.algorithms.base import ArchStepContext
from nasbench.spaces.base import Topology, derive_top_edges
from nasbench.algorithms.darts import finite_difference_hvp
from nasbench.spaces.darts.ops import PRIMITIVES
from conftest import tiny_strategy

DARTS_CELL = Topology.dense(n_inputs=2, nodes=4, keep=2, output=(2, 3, 4, 5))


def tiny(algo="darts", *overrides):
    return tiny_strategy(algo, *overrides)


def test_alpha_init_and_softmax_weights():
    _, s, _ = tiny()
    a = s.alpha("normal")
    assert a.shape == (14, 8) and a.requires_grad
    assert a.abs().max() < 1e-2  # 1e-3 · N(0, 1)
    w = s.edge_weights("normal").ops
    expected = torch.exp(a) / torch.exp(a).sum(dim=1, keepdim=True)
    assert torch.allclose(w, expected, atol=1e-7)


def test_first_order_gradient_is_the_validation_gradient():
    cfg, s, net = tiny()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    crit = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    torch.manual_seed(1)
    s.arch_backward(ArchStepContext(net, (x, y), (x, y), opt, 0.1, crit))
    got = [p.grad.clone() for p in s.arch_parameters()]
    expected = torch.autograd.grad(crit(net(x, s.weights()), y), s.arch_parameters())
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, atol=1e-6)


def _double_setup():
    # r small enough that the finite difference is accurate (the default 0.01 is the paper's trade-off)
    cfg, s, net = tiny("darts", "darts.unrolled=true", "darts.hvp_r=1e-5")
    net = net.double()
    for k in s.arch:
        s.arch[k] = (torch.randn_like(s.arch[k].double()) * 0.5).requires_grad_()
    torch.manual_seed(3)
    xt, yt = torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    xv, yv = torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.tensor([2, 1, 0, 0, 1, 2])
    return s, net, (xt, yt), (xv, yv)


def test_hessian_vector_product_matches_exact_double_backward():
    """[∇_α L(w+εv) − ∇_α L(w−εv)] / 2ε against ∇_α(∇_w L · v) computed by autograd twice."""
    s, net, (xt, yt), _ = _double_setup()
    crit = torch.nn.CrossEntropyLoss()
    names, w = zip(*net.named_parameters())
    alphas = s.arch_parameters()

    def loss_fn(params):
        return crit(functional_call(net, dict(zip(names, params)), (xt, s.weights())), yt)

    torch.manual_seed(5)
    v = [torch.randn_like(p) for p in w]
    fd = finite_difference_hvp(loss_fn, [p.detach() for p in w], v, alphas, r=1e-5)

    g_w = torch.autograd.grad(loss_fn(list(w)), w, create_graph=True)
    dot = sum((g * t).sum() for g, t in zip(g_w, v))
    exact = torch.autograd.grad(dot, alphas)
    for a, b in zip(fd, exact):
        rel = (a - b).norm() / b.norm()
        assert rel < 1e-4, rel
    # the slip of a widely copied implementation (× ε / 2 instead of ÷ 2ε) is far off
    norm = torch.sqrt(sum((t * t).sum() for t in v))
    eps = 1e-5 / norm
    wrong = [h * (2 * eps) * eps / 2 for h in fd]
    assert (wrong[0] - exact[0]).norm() / exact[0].norm() > 0.5


def test_unrolled_gradient_matches_differentiating_through_the_virtual_step():
    """∇_α L_val(w − ξ(μb + ∇_w L_train + λw), α), differentiated exactly by autograd."""
    s, net, train, valid = _double_setup()
    crit = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    # one real step so that the momentum buffer is non-zero
    loss = crit(net(train[0], {k: v for k, v in s.weights().items()}), train[1])
    opt.zero_grad()
    loss.backward()
    opt.step()
    xi = 0.05
    s.arch_backward(ArchStepContext(net, train, valid, opt, xi, crit))
    got = [p.grad.clone() for p in s.arch_parameters()]

    names, w = zip(*net.named_parameters())
    alphas = s.arch_parameters()
    g_train = torch.autograd.grad(crit(net(train[0], s.weights()), train[1]), w, create_graph=True)
    w_virtual = [p - xi * (0.9 * opt.state[p]["momentum_buffer"] + g + 3e-4 * p) for p, g in zip(w, g_train)]
    logits = functional_call(net, dict(zip(names, w_virtual)), (valid[0], s.weights()))
    exact = torch.autograd.grad(crit(logits, valid[1]), alphas)
    for a, b in zip(got, exact):
        rel = (a - b).norm() / b.norm()
        assert rel < 1e-4, rel


def test_derive_keeps_two_strongest_edges_and_never_none():
    ops = tuple(PRIMITIVES for _ in range(14))
    W = torch.full((14, 8), 0.01)
    # node 0 (edges 0, 1): 'none' is strongest on edge 0 but does not count
    W[0, 0] = 0.9
    W[0, 4] = 0.2  # sep_conv_3x3
    W[1, 6] = 0.5  # dil_conv_3x3
    # node 1 (edges 2, 3, 4): edge 4 (input 2) and edge 2 (input 0) are strongest
    W[2, 3] = 0.3
    W[3, 1] = 0.1
    W[4, 7] = 0.6
    # node 2 (edges 5..8), node 3 (edges 9..13): ties resolve to the lower input index
    W[8, 5] = 0.4
    gene = derive_top_edges(W, ops, DARTS_CELL)
    assert gene[0:2] == [("dil_conv_3x3", 1), ("sep_conv_3x3", 0)]
    assert gene[2:4] == [("dil_conv_5x5", 2), ("skip_connect", 0)]
    assert gene[4:6] == [("sep_conv_5x5", 3), ("max_pool_3x3", 0)]
    assert gene[6:8] == [("max_pool_3x3", 0), ("max_pool_3x3", 1)]
    assert all(op != "none" for op, _ in gene)


def test_derive_with_edge_scale_reorders_edges():
    ops = tuple(PRIMITIVES for _ in range(14))
    W = torch.full((14, 8), 0.1)
    W[0, 4], W[1, 5] = 0.5, 0.4
    scale = torch.ones(14)
    scale[0] = 0.1
    gene = derive_top_edges(W, ops, DARTS_CELL, edge_scale=scale)
    assert gene[0] == ("sep_conv_5x5", 1)


def test_strategy_derive_gives_a_valid_genotype():
    from nasbench.spaces.darts.genotype import validate

    _, s, _ = tiny()
    g = s.derive()
    validate(g)
    assert list(g.normal_concat) == [2, 3, 4, 5]
