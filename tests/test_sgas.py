"""SGAS: the decision scores by hand, frozen α rows of decided edges through real optimizer steps, node
pruning, cheaper steps after decisions, Criterion 2's history, the schedule, and one real search + derive."""

import json
import os
import subprocess

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nasbench.algorithms.base import create_strategy
from nasbench.algorithms.sgas import UNDECIDED, edge_scores
from nasbench.config import resolve_search_config
from nasbench.spaces.darts.genotype import validate
from nasbench.engine.rundir import RunDir
from nasbench.spaces.darts.ops import PRIMITIVES
from nasbench.engine.meters import Meter
from nasbench.search.data import SearchData
from nasbench.search.trainer import SearchTrainer
from conftest import set_alpha, tiny_strategy

NONE = PRIMITIVES.index("none")


pytestmark = pytest.mark.usefixtures("one_thread")


def make(*overrides):
    return tiny_strategy("sgas", *overrides)


def hand_scores(alpha, history=None):
    """The paper's formulas written out in numpy, edge by edge."""
    a = alpha.double().numpy()
    imp, cert, hist = [], [], []
    for row in a:
        p = np.exp(row) / np.exp(row).sum()
        importance = p[1:].sum()
        q = p[1:] / importance
        H = -(q * np.log(q)).sum() / np.log(7)
        imp.append(importance)
        cert.append(1 - H)
        if history is not None:
            hist.append(np.mean([np.minimum(h[len(imp) - 1], q).sum() for h in history]) if history else 0.0)

    def norm(v):
        v = np.array(v)
        return (v - v.min()) / (v.max() - v.min()) if v.max() > v.min() else np.zeros_like(v)

    score = norm(imp) * norm(cert)
    if history is not None:
        score = score * norm(hist)
    return np.array(imp), np.array(cert), score


def test_defaults_and_schedule():
    cfg = resolve_search_config("sgas")
    assert cfg.epochs == 50 and cfg.batch_size == 64 and cfg.optim.lr_min == 0.001
    assert cfg.arch_optim.lr == 3e-4 and cfg.arch_optim.grad_clip is None and cfg.model.layers == 8
    s = create_strategy("sgas", cfg)
    assert s.decision_epochs() == [9, 14, 19, 24, 29, 34, 39, 44]
    assert s.schedule() == (9, 5)
    # the paper's run: the last decision leaves post_train weight-only epochs and the final one
    assert s.decision_epochs()[-1] + cfg.sgas.post_train + 1 == cfg.epochs
    assert [s.batch_size(e) for e in (0, 9, 10, 14, 15, 44, 45, 49)] == [64, 64, 72, 72, 80, 120, 128, 128]
    assert s.updates_arch(44) and not s.updates_arch(45)
    off = create_strategy("sgas", resolve_search_config("sgas", overrides=["sgas.batch_increase=0"]))
    assert off.batch_size(49) == 64
    quick = create_strategy("sgas", resolve_search_config("sgas", preset="quick"))
    assert quick.cfg.epochs == 10
    assert len(quick.decision_epochs()) == 8 and quick.decision_epochs()[-1] <= 9
    eight = create_strategy("sgas", resolve_search_config("sgas", overrides=["epochs=8"]))
    assert eight.decision_epochs() == list(range(8))


def test_scores_match_a_hand_computation():
    _, s, _ = make()
    torch.manual_seed(4)
    a = torch.randn(14, 8)
    a[3, 0] = 4.0  # an edge dominated by 'none'
    imp, cert, score = hand_scores(a)
    sc = edge_scores(a, NONE)
    assert np.allclose(sc["importance"].numpy(), imp, atol=1e-12)
    assert np.allclose(1 - sc["entropy"].numpy(), cert, atol=1e-12)
    assert np.allclose(sc["score"].numpy(), score, atol=1e-12)

    # the decision: normalised over all 14 edges, then the best undecided one; op = argmax non-'none'
    best = int(np.argmax(score))
    s.selected["normal"][best] = 4  # already decided: it still counts in the normalisation, but cannot win
    set_alpha(s, "normal", a)
    set_alpha(s, "reduce", a)
    ev = [e for e in s.on_epoch_end(9, None) if e.record["cell"] == "normal"][0]
    masked = score.copy()
    masked[best] = -np.inf
    winner = int(np.argmax(masked))
    assert ev.record["edge"] == winner
    assert ev.record["op"] == PRIMITIVES[1 + int(np.argmax(a[winner, 1:].numpy()))]
    table = ev.record["scores"]
    assert len(table) == 14 and table[best]["status"] == "decided"
    assert np.allclose([r["score"] for r in table], score, atol=1e-9)


def test_no_decision_outside_the_schedule():
    _, s, _ = make()
    assert s.on_epoch_end(8, None) == [] and s.on_epoch_end(10, None) == []
    assert all(v == UNDECIDED for v in s.selected["normal"])
    assert len(s.on_epoch_end(9, None)) == 2  # one edge per cell type


@pytest.mark.parametrize("unrolled", [False, True])
def test_decided_alpha_rows_stay_bitwise_unchanged_through_optimizer_steps(tmp_path, unrolled):
    cfg, s, _ = make(f"sgas.unrolled={str(unrolled).lower()}")
    trainer = SearchTrainer(cfg, RunDir.create(tmp_path / "run"), show_progress=False)
    torch.manual_seed(0)
    trainer.build(SearchData(None, [], [], num_classes=3, in_channels=3))
    s = trainer.strategy
    torch.manual_seed(5)
    set_alpha(s, "normal", torch.randn(14, 8))
    set_alpha(s, "reduce", torch.randn(14, 8))
    s.on_epoch_end(9, trainer.net)
    s.on_epoch_end(14, trainer.net)
    frozen = s.frozen_rows()["alpha_normal"]
    assert int(frozen.sum()) >= 2
    before = {k: v.detach().clone() for k, v in s.arch.items()}
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    for step in range(3):
        trainer._arch_step((x, y), (x, y), 0.025, Meter(), 0, step)
        trainer._weight_step(x, y, Meter(), 0, step)
    for k, v in s.arch.items():
        mask = s.frozen_rows()[k]
        assert torch.equal(v.detach()[mask], before[k][mask])  # bitwise, despite Adam's weight decay
        assert not torch.equal(v.detach()[~mask], before[k][~mask])


def test_node_with_two_decided_edges_prunes_its_other_edges():
    _, s, net = make()
    a = torch.zeros(14, 8)
    a[:, 0] = 3.0  # every edge mostly 'none': low importance
    a[2, 0], a[2, 5] = -3.0, 6.0  # node 1: edge 2 (input 0) is the best edge ...
    a[3, 0], a[3, 6] = -3.0, 5.0  # ... edge 3 (input 1) the next best
    set_alpha(s, "normal", a)
    ev1 = s.on_epoch_end(9, net)[0]
    assert ev1.record["edge"] == 2 and ev1.record["op"] == "sep_conv_5x5" and ev1.record["pruned"] == []
    ev2 = s.on_epoch_end(14, net)[0]
    assert ev2.record["edge"] == 3 and ev2.record["op"] == "dil_conv_3x3" and ev2.record["pruned"] == [4]
    assert s.selected["normal"][2:5] == [5, 6, NONE]
    assert s.frozen_rows()["alpha_normal"][2:5].tolist() == [True, True, True]
    w = s.edge_weights("normal").ops
    assert w[2] == 5 and w[3] == 6 and w[4] is None and torch.is_tensor(w[0])
    g = s.derive()
    validate(g)
    assert g.normal[2:4] == (("sep_conv_5x5", 0), ("dil_conv_3x3", 1))


def test_step_cost_falls_after_decisions():
    _, s, net = make()
    x = torch.randn(1, 3, 8, 8)

    def flops():  # of a forward pass; the backward follows the same graph
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            s.forward(net, x)
        return counter.get_total_flops()

    f0 = flops()
    torch.manual_seed(6)
    set_alpha(s, "normal", torch.randn(14, 8))
    set_alpha(s, "reduce", torch.randn(14, 8))
    costs = [f0]
    for e in s.decision_epochs():
        s.on_epoch_end(e, net)
        costs.append(flops())
    assert all(v != UNDECIDED for t in ("normal", "reduce") for v in s.selected[t])
    assert costs[-1] < 0.25 * costs[0]
    assert all(b <= a for a, b in zip(costs, costs[1:]))
    g = s.derive()
    assert g.meta["complete"] and len(g.normal) == 8 and len(g.reduce) == 8
    # the genotype is the decisions
    for t, cell in (("normal", g.normal), ("reduce", g.reduce)):
        decided = [(PRIMITIVES[v], e) for e, v in enumerate(s.selected[t]) if v not in (UNDECIDED, NONE)]
        assert [op for op, _ in cell] == [op for op, _ in decided]


def test_criterion_two_uses_the_history():
    _, s, _ = make("sgas.criterion=2", "sgas.history_size=4")
    torch.manual_seed(7)
    alphas = [torch.randn(14, 8) for _ in range(6)]
    history = []
    for epoch, a in enumerate(alphas):
        set_alpha(s, "normal", a)
        set_alpha(s, "reduce", a)
        sc = edge_scores(a, NONE, list(s.history["normal"]))
        _, _, expected = hand_scores(a, [h.numpy() for h in history])
        assert np.allclose(sc["score"].numpy(), expected, atol=1e-12)
        s.on_epoch_end(epoch, None)  # epochs 0-5: before the warm-up ends, history only
        p = torch.softmax(a.double(), -1)
        history = (history + [p[:, 1:] / p[:, 1:].sum(-1, keepdim=True)])[-4:]
    assert len(s.history["normal"]) == 4
    for h, e in zip(s.history["normal"], history):
        assert torch.allclose(h, e, atol=1e-12)
    # the same α with another history gives another score; Criterion 1 ignores it
    a = alphas[-1]
    c2 = edge_scores(a, NONE, list(s.history["normal"]))["score"]
    c2_other = edge_scores(a, NONE, [torch.full((14, 7), 1 / 7)])["score"]
    assert not torch.allclose(c2, c2_other)
    c1 = edge_scores(a, NONE)["score"]
    assert not torch.allclose(c1, c2)
    assert edge_scores(a, NONE, [])["score"].abs().max() == 0  # no history yet: all zero, as in the code


def test_state_round_trip_keeps_decisions_and_history():
    cfg, s, net = make("sgas.criterion=2")
    torch.manual_seed(8)
    set_alpha(s, "normal", torch.randn(14, 8))
    for e in range(15):
        s.on_epoch_end(e, net)
    other = create_strategy("sgas", cfg)
    other.load_state_dict(s.state_dict())
    assert other.selected == s.selected and len(other.history["normal"]) == 4
    assert other.derive() == s.derive() and other.frozen_rows()["alpha_normal"].sum() == 2


def test_search_and_derive_end_to_end(tmp_path, nas_cmd):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*nas_cmd, "search", "--algo", "sgas", "--dataset", "synthetic", "--epochs", "8", "--channels", "4",
           "--layers", "3", "--batch-size", "8", "--subset", "32", "data.num_train=32", "data.image_size=8",
           "sgas.batch_increase=1", "--no-progress", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert len(events) == 16 and all(len(e["scores"]) == 14 for e in events)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["batch_size"] for m in metrics] == list(range(8, 16))
    best = json.loads((out / "best.json").read_text())
    assert best["complete"] is True
    for cell in ("normal", "reduce"):
        decided = {(e["node"], e["input"]): e["op"] for e in events if e["cell"] == cell}
        assert sorted(decided.values()) == sorted(op for op, _ in best[cell])
    r = subprocess.run([*nas_cmd, "derive", str(out), "-o", str(tmp_path / "derived.json")], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    derived = json.loads((tmp_path / "derived.json").read_text())
    assert derived["normal"] == best["normal"] and derived["reduce"] == best["reduce"]


def test_weights_are_left_unused_from_the_first_decision_on():
    """What DDP is told (find_unused_parameters): every op of every edge runs until SGAS decides an edge; the
    other algorithms say it once (GDAS: always, DARTS: never)."""
    from conftest import tiny_strategy

    _, s, _ = tiny_strategy("sgas", build=False)
    assert not s.leaves_weights_unused()
    s.selected["normal"][3] = 4
    assert s.leaves_weights_unused()
    s.selected["normal"][3] = UNDECIDED
    assert not s.leaves_weights_unused()
    assert tiny_strategy("gdas", build=False)[1].leaves_weights_unused()
    assert not tiny_strategy("darts", build=False)[1].leaves_weights_unused()
