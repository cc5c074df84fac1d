"""Second order for PC-DARTS and SGAS (their official codes take --unrolled): the same virtual step and
Hessian-vector product as DARTS, checked against autograd through the virtual step (SGAS's decided rows
stay bitwise unchanged in second order too: tests/test_sgas.py); the CLI's --unrolled reaches them."""

import pytest
import torch
from torch.func import functional_call

from nasbench.algorithms.base import ArchStepContext
from nasbench.config import resolve_search_config
from conftest import invoke, tiny_strategy

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = {
    "pc-darts": ("pc-darts", ["pc_darts.k=2"], 8),
    "pc-darts-k1": ("pc-darts", ["pc_darts.k=1"], 8),
    "sgas": ("sgas", [], 4),  # with two decided edges in each cell type (below)
}


def _setup(case):
    algo, extra, C = CASES[case]
    section = algo.replace("-", "_")
    # r small enough for an accurate finite difference (the default 0.01 is the paper's trade-off)
    cfg, s, net = tiny_strategy(algo, f"{section}.unrolled=true", f"{section}.hvp_r=1e-6", *extra, channels=C)
    net = net.double()
    torch.manual_seed(7)
    for k in s.arch:
        s.arch[k] = (torch.randn_like(s.arch[k].double()) * 0.5).requires_grad_()
    if algo == "sgas":
        s.on_epoch_end(9, net)
        s.on_epoch_end(14, net)
        assert int(s.frozen_rows()["alpha_normal"].sum()) >= 2
    torch.manual_seed(3)
    xt, yt = torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    xv, yv = torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.tensor([2, 1, 0, 0, 1, 2])
    return s, net, (xt, yt), (xv, yv)


@pytest.mark.parametrize("case", list(CASES))
def test_unrolled_gradient_matches_differentiating_through_the_virtual_step(case):
    """∇ of L_val(w − ξ(μb + ∇_w L_train + λw), α) w.r.t. every trainable architecture parameter (PC-DARTS:
    α and β), differentiated exactly by autograd, against the finite-difference second-order step."""
    s, net, train, valid = _setup(case)
    crit = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    loss = crit(s.forward(net, train[0]), train[1])  # one real step: a non-zero momentum buffer
    opt.zero_grad()
    loss.backward()
    opt.step()
    xi = 0.05
    ctx = ArchStepContext(net, train, valid, opt, xi, crit)
    s.arch_backward(ctx)
    alphas = s.trainable_arch_parameters()
    assert len(alphas) == (4 if case.startswith("pc-darts") else 2)  # PC-DARTS: β too
    got = [p.grad.clone() for p in alphas]

    names, w = zip(*net.named_parameters())
    g_train = torch.autograd.grad(crit(s.forward(net, train[0]), train[1]), w, create_graph=True,
                                  allow_unused=True)
    w_virtual = []
    for p, g in zip(w, g_train):
        buf = opt.state[p].get("momentum_buffer")
        w_virtual.append(p - xi * ((0.9 * buf if buf is not None else 0) + (0 if g is None else g) + 3e-4 * p))
    logits = functional_call(net, dict(zip(names, w_virtual)), (valid[0], s.weights()))
    exact = torch.autograd.grad(crit(logits, valid[1]), alphas)
    for a, b in zip(got, exact):
        assert (a - b).norm() / b.norm() < 1e-4
    assert torch.allclose(ctx.logits, logits.detach())
    if case == "sgas":  # a decided edge runs one op: some weights take no part (they must not break it)
        assert any(g is None for g in g_train)


def test_cli_unrolled_reaches_pc_darts_and_sgas_and_names_who_has_it():
    for algo in ("pc-darts", "sgas"):
        r = invoke("search", "--algo", algo, "--unrolled", "--dataset", "synthetic", "--dry-run", "--json")
        assert r.exit_code == 0, r.output
    assert resolve_search_config("pc-darts", overrides=["pc_darts.unrolled=true"]).pc_darts.unrolled
    r = invoke("search", "--algo", "gdas", "--unrolled", "--dataset", "synthetic", "--dry-run")
    assert r.exit_code == 2 and "only darts, pc-darts, sgas have it" in r.output
