"""P-DARTS: stage depths, op pruning by weight (8 → 5 → 3 → 1), never 'none' at the end, the skip cap,
the skip dropout schedule, checkpoint state, and one real search + derive."""

import json
import math
import os
import subprocess

import pytest
import torch

from nasbench.algorithms.base import create_strategy
from nasbench.algorithms.p_darts import SkipDropout, final_cell
from nasbench.config import resolve_search_config
from nasbench.spaces.base import Topology
from nasbench.spaces.darts.ops import PRIMITIVES
from conftest import set_alpha, tiny_strategy

DARTS_CELL = Topology.dense(n_inputs=2, nodes=4, keep=2, output=(2, 3, 4, 5))


pytestmark = pytest.mark.usefixtures("one_thread")


def make(*overrides, epochs=9):
    cfg, s, _ = tiny_strategy("p-darts", "p_darts.layers=3", "p_darts.add_layers=[0,1,2]", f"epochs={epochs}",
                              *overrides, build=False)
    return cfg, s


def end_stage(s):
    events = s.on_epoch_end(s.stage_epochs() - 1, None)
    assert len(events) == 1 and events[0].record["event"] == "p-darts-prune"
    return events[0]


def test_paper_defaults_and_stage_depths():
    cfg = resolve_search_config("p-darts")
    assert cfg.batch_size == 96 and cfg.epochs == 75 and cfg.optim.lr_min == 0.0
    assert cfg.arch_optim.lr == 6e-4 and cfg.arch_optim.grad_clip == 5.0 and cfg.model.channels == 16
    s = create_strategy("p-darts", cfg)
    depths = []
    for stage in range(3):
        s.stage = stage
        spec = s.supernet_spec(10, 3)
        depths.append(spec.layers)
        assert spec.C == 16
        assert s.stage_epochs() == 25
        assert [s.updates_arch(e) for e in (0, 9, 10)] == [False, False, True]
    assert depths == [5, 11, 17]
    assert s.stage_label() == "stage 3/3"
    wide = create_strategy("p-darts", resolve_search_config("p-darts", overrides=["p_darts.add_width=[0,2,4]"]))
    wide.stage = 2
    assert wide.supernet_spec(10, 3).C == 20


def test_quick_preset_runs_three_stages():
    cfg = resolve_search_config("p-darts", preset="quick")
    s = create_strategy("p-darts", cfg)
    assert [s.stage_epochs(k) for k in range(3)] == [3, 3, 3]
    odd = create_strategy("p-darts", resolve_search_config("p-darts", overrides=["epochs=8"]))
    assert [odd.stage_epochs(k) for k in range(3)] == [3, 3, 2]


def test_pruning_keeps_five_then_three_ops_by_weight_and_none_may_survive():
    _, s = make()
    torch.manual_seed(1)
    a1 = {t: torch.randn(14, 8) for t in ("normal", "reduce")}
    a1["normal"][0, 0] = 5.0  # 'none' strongest on edge 0: it survives the first two prunings
    for t in a1:
        set_alpha(s, t, a1[t])
    ev = end_stage(s)
    assert s.ops["normal"][0] == PRIMITIVES  # applied only when the next stage starts
    assert s.next_stage() and s.stage == 1
    for t in ("normal", "reduce"):
        for e in range(14):
            top5 = sorted(torch.topk(a1[t][e], 5).indices.tolist())
            assert s.ops[t][e] == tuple(PRIMITIVES[k] for k in top5)
    assert ev.record["normal"]["dropped"][0] == [PRIMITIVES[k] for k in torch.topk(-a1["normal"][0], 3).indices]
    assert "none" in s.ops["normal"][0]

    spec = s.supernet_spec(3, 3)
    assert spec.layers == 4
    s.init_arch_params(spec, torch.device("cpu"))  # fresh α per stage, [14, 5]
    assert s.alpha("normal").shape == (14, 5)
    a2 = {t: torch.randn(14, 5) for t in ("normal", "reduce")}
    a2["normal"][0, 0] = 5.0
    for t in a2:
        set_alpha(s, t, a2[t])
    prev = {t: list(s.ops[t]) for t in s.ops}
    end_stage(s)
    assert s.next_stage() and s.stage == 2
    for t in ("normal", "reduce"):
        for e in range(14):
            top3 = sorted(torch.topk(a2[t][e], 3).indices.tolist())
            assert s.ops[t][e] == tuple(prev[t][e][k] for k in top3)
    assert s.ops["normal"][0][0] == "none"
    assert s.supernet_spec(3, 3).layers == 5


def test_final_op_is_never_none():
    _, s = make()
    s.stage = 2
    s.ops = {t: [("none", "skip_connect", "sep_conv_3x3")] * 14 for t in ("normal", "reduce")}
    s.init_arch_params(s.supernet_spec(3, 3), torch.device("cpu"))
    a = torch.zeros(14, 3)
    a[:, 0] = 10.0  # 'none' dominates every edge
    a[:, 2] = torch.linspace(0, 1, 14)
    for t in ("normal", "reduce"):
        set_alpha(s, t, a)
    end_stage(s)
    assert not s.next_stage()
    g = s.derive()
    for cell in (g.normal, g.reduce):
        assert len(cell) == 8 and all(op != "none" for op, _ in cell)
    assert all(op == "sep_conv_3x3" for op, _ in g.normal)


def test_final_edges_are_the_two_strongest_per_node():
    ops = [("none", "sep_conv_3x3", "max_pool_3x3")] * 14
    P = torch.full((14, 3), 0.1)
    P[:, 0] = 0.8  # 'none' would win everywhere; it is zeroed
    P[2, 1], P[3, 2], P[4, 1] = 0.15, 0.12, 0.3  # node 1: edges 4 (input 2) and 2 (input 0)
    gene, log = final_cell(P, ops, DARTS_CELL, max_skip=2)
    assert gene[2:4] == [("sep_conv_3x3", 0), ("sep_conv_3x3", 2)]
    assert log == []


def test_skip_cap_drops_the_weakest_skip_and_repicks():
    ops = [("skip_connect", "sep_conv_3x3", "max_pool_3x3")] * 14
    P = torch.zeros(14, 3)
    P[:, 0] = torch.linspace(0.9, 0.5, 14)  # skip_connect strongest everywhere, weakest on the last edges
    P[:, 1] = 0.3
    P[:, 2] = torch.linspace(0.05, 0.2, 14)
    uncapped, _ = final_cell(P, ops, DARTS_CELL, max_skip=None)
    assert sum(op == "skip_connect" for op, _ in uncapped) == 8
    gene, log = final_cell(P, ops, DARTS_CELL, max_skip=2)
    assert sum(op == "skip_connect" for op, _ in gene) == 2
    assert len(log) >= 6
    # the first removed skip is the weakest kept one: node 3 keeps edges 9 and 10, edge 10 is weaker
    assert log[0]["edge"] == 10 and log[0]["skips"] == 8
    # the two surviving skips are the strongest ones (node 0, edges 0 and 1)
    assert gene[0:2] == [("skip_connect", 0), ("skip_connect", 1)]
    assert len(gene) == 8


def test_skip_cap_applies_to_the_normal_cell_only():
    _, s = make()
    s.stage = 2
    s.ops = {t: [("skip_connect", "sep_conv_3x3", "max_pool_3x3")] * 14 for t in ("normal", "reduce")}
    s.init_arch_params(s.supernet_spec(3, 3), torch.device("cpu"))
    a = torch.zeros(14, 3)
    a[:, 0] = 3.0
    for t in ("normal", "reduce"):
        set_alpha(s, t, a + 0.01 * torch.randn(14, 3))
    ev = end_stage(s)
    g = s.derive()
    assert sum(op == "skip_connect" for op, _ in g.normal) == 2
    assert sum(op == "skip_connect" for op, _ in g.reduce) == 8
    assert len(ev.record["skip_cap"]) >= 6


def test_skip_dropout_schedule_and_modules():
    cfg = resolve_search_config("p-darts", overrides=["data.dataset=synthetic", "model.channels=4",
                                                      "p_darts.layers=3"])
    s = create_strategy("p-darts", cfg)
    s.stage = 1  # rate 0.4, 25 epochs, 10 without architecture steps
    assert s.skip_dropout_rate(0) == pytest.approx(0.4 * 24 / 25)
    assert s.skip_dropout_rate(9) == pytest.approx(0.4 * 15 / 25)
    assert s.skip_dropout_rate(10) == pytest.approx(0.4)
    assert s.skip_dropout_rate(15) == pytest.approx(0.4 * math.exp(-1.0))
    spec = s.supernet_spec(3, 3)
    net = s.build_supernet(spec)
    s.on_epoch_start(12, net)
    drops = [m for m in net.modules() if isinstance(m, SkipDropout)]
    # one per stride-1 edge: 14 per normal cell, 14 - 4·2 per reduction cell (stride-2 skip is a conv)
    n_normal = sum(t == "normal" for t in net.cell_types)
    n_reduce = sum(t == "reduce" for t in net.cell_types)
    assert len(drops) == 14 * n_normal + 6 * n_reduce
    assert all(m.p == pytest.approx(0.4 * math.exp(-0.4)) for m in drops)
    assert s.epoch_metrics()["skip_dropout"] == pytest.approx(0.4 * math.exp(-0.4))
    off = create_strategy("p-darts", resolve_search_config("p-darts", overrides=["p_darts.dropout_rate=[0,0,0]",
                                                                                "model.channels=4"]))
    assert not any(isinstance(m, SkipDropout) for m in off.build_supernet(off.supernet_spec(3, 3)).modules())


def test_state_restores_mid_stage_with_surviving_ops():
    cfg, s = make()
    torch.manual_seed(2)
    for t in ("normal", "reduce"):
        set_alpha(s, t, torch.randn(14, 8))
    end_stage(s)
    state_end = s.state_dict()  # the checkpoint at the end of stage 1: pruning pending, old α
    other = create_strategy("p-darts", cfg)
    other.load_state_dict(state_end)
    assert other.spec.ops("normal")[0] == PRIMITIVES and other.pending is not None
    assert other.next_stage() and other.ops == {t: list(v) for t, v in s.pending.items()}
    s.next_stage()
    s.init_arch_params(s.supernet_spec(3, 3), torch.device("cpu"))
    state = s.state_dict()
    again = create_strategy("p-darts", cfg)
    again.load_state_dict(json_roundtrip_free(state))
    assert again.stage == 1 and again.ops == s.ops
    assert again.spec.ops("normal") == s.supernet_spec(3, 3).ops("normal")
    assert again.spec.layers == 4
    assert again.derive() == s.derive()


def json_roundtrip_free(state):
    """A checkpoint's trip through torch.save/load with weights_only."""
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_skip_family_one_genotype_per_cap_as_the_official_log():
    _, s = make()
    s.stage = 2
    s.ops = {t: [("skip_connect", "sep_conv_3x3", "max_pool_3x3")] * 14 for t in ("normal", "reduce")}
    s.init_arch_params(s.supernet_spec(3, 3), torch.device("cpu"))
    assert s.genotype_variants() == {}  # nothing before the last stage ended
    a = torch.zeros(14, 3)
    a[:, 0] = torch.linspace(3.0, 1.0, 14)  # skip_connect strongest everywhere
    for t in ("normal", "reduce"):
        set_alpha(s, t, a)
    end_stage(s)
    family = s.genotype_variants()
    assert list(family) == [f"pdarts_max_skip_{c}" for c in range(8, -1, -1)]
    P = s.op_probabilities("normal")
    for c in range(9):
        g = family[f"pdarts_max_skip_{c}"]
        # each member is the official cap applied to the last stage's weights; the reduction cell is uncapped
        assert [tuple(p) for p in g.normal] == final_cell(P, s.ops["normal"], DARTS_CELL, max_skip=c)[0]
        assert sum(op == "skip_connect" for op, _ in g.normal) == c and g.meta["max_skip"] == c
        assert g.reduce == s.derive().reduce
    assert family["pdarts_max_skip_2"].normal == s.derive().normal  # the run's own cap (2)


def test_search_and_derive_end_to_end(tmp_path, nas_cmd):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*nas_cmd, "search", "--algo", "p-darts", "--dataset", "synthetic", "--epochs", "3", "--channels", "4",
           "--batch-size", "16", "--subset", "32", "data.num_train=32", "data.image_size=8", "p_darts.layers=3",
           "p_darts.add_layers=[0,1,2]", "--no-progress", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["stage_label"] for m in metrics] == ["stage 1/3", "stage 2/3", "stage 3/3"]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in events] == [1, 2, 3]
    assert all(len(ops) == 5 for ops in events[0]["normal"]["kept"])
    assert all(len(ops) == 3 for ops in events[1]["normal"]["kept"])
    best = json.loads((out / "best.json").read_text())
    r = subprocess.run([*nas_cmd, "derive", str(out), "-o", str(tmp_path / "derived.json")], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    derived = json.loads((tmp_path / "derived.json").read_text())
    assert derived["normal"] == best["normal"] and derived["reduce"] == best["reduce"]
    assert all(op != "none" for op, _ in best["normal"] + best["reduce"])
    assert sum(op == "skip_connect" for op, _ in best["normal"]) <= 2
    family = sorted(p.name for p in (out / "genotypes").glob("pdarts_max_skip_*.json"))
    assert family == sorted(f"pdarts_max_skip_{c}.json" for c in range(9))
    two = json.loads((out / "genotypes" / "pdarts_max_skip_2.json").read_text())
    assert two["normal"] == best["normal"]
    r = subprocess.run([*nas_cmd, "derive", str(out), "--max-skip", "0"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    zero = json.loads((out / "genotypes" / "derived_epoch_002_max_skip_0.json").read_text())
    assert zero["normal"] == json.loads((out / "genotypes" / "pdarts_max_skip_0.json").read_text())["normal"]
    assert all(op != "skip_connect" for op, _ in zero["normal"]) and zero["max_skip"] == 0
    assert json.loads((out / "best.json").read_text()) == best  # the run's result stays


def test_resume_mid_stage_gives_the_same_search(tmp_path, monkeypatch):
    """Interrupted in the middle of stage 2 and resumed: same ops, same α, same genotype as in one go."""
    from nasbench.engine.rundir import RunDir
    from nasbench.search.trainer import SearchTrainer, search

    def cfg_for(out):
        return resolve_search_config("p-darts", overrides=[
            "data.dataset=synthetic", "model.channels=4", "p_darts.layers=3", "p_darts.add_layers=[0,1,2]",
            "epochs=6", "batch_size=16", "data.subset=32", "data.num_train=32", "data.image_size=8",
            "device=cpu", "checkpoint_every=1", f"out={out}"])

    _, g_once = search(cfg_for(tmp_path / "once"), show_progress=False)

    original = SearchTrainer._run_epoch
    calls = {"n": 0}

    def interrupted(self, epoch, start_step, meter, arch_meter):
        calls["n"] += 1
        if calls["n"] == 4:  # stage 2, second epoch: stop after its first step's checkpoint
            self._interrupted = True
        return original(self, epoch, start_step, meter, arch_meter)

    monkeypatch.setattr(SearchTrainer, "_run_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        search(cfg_for(tmp_path / "twice"), show_progress=False)
    monkeypatch.setattr(SearchTrainer, "_run_epoch", original)
    state = torch.load(RunDir.open(tmp_path / "twice").checkpoint_path, weights_only=True)
    assert state["strategy"]["stage"] == 1 and state["epoch"] == 1 and state["step"] == 1
    assert all(len(ops) == 5 for ops in state["strategy"]["extra"]["ops"]["normal"])
    _, g_twice = search(cfg_for(tmp_path / "twice"), resume=tmp_path / "twice", show_progress=False)
    assert g_twice == g_once


def test_the_trainer_s_list_of_weights_is_each_stage_s_supernet_s(tmp_path, monkeypatch):
    """The trainer lists the supernet's parameters once per stage (for the gradient clipping and the weights'
    freeze in the architecture step): at every epoch of every stage the list is the net's own, in its order,
    and the weight optimizer's."""
    from nasbench.search.trainer import SearchTrainer, search

    cfg = resolve_search_config("p-darts", overrides=[
        "data.dataset=synthetic", "model.channels=4", "p_darts.layers=3", "p_darts.add_layers=[0,1,2]",
        "epochs=6", "batch_size=16", "data.subset=32", "data.num_train=32", "data.image_size=8",
        "device=cpu", f"out={tmp_path}"])
    original, seen = SearchTrainer._run_epoch, []

    def checked(self, *args):
        own = list(self.net.parameters())
        seen.append(len(own))
        assert [id(p) for p in self.weights] == [id(p) for p in own]
        assert [id(p) for p in self.w_optim.param_groups[0]["params"]] == [id(p) for p in own]
        return original(self, *args)

    monkeypatch.setattr(SearchTrainer, "_run_epoch", checked)
    search(cfg, show_progress=False)
    assert len(seen) == 6 and len(set(seen)) == 3  # three stages, three supernets
