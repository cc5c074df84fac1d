"""The five algorithms on the NAS-Bench-201 space: what makes each itself there, the official settings, and
search → derive → train-final through the real CLI (synthetic data and real Fashion-MNIST)."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from torch import nn

from nasbench.config import resolve_final_config, resolve_search_config
from nasbench.spaces.base import create_space
from nasbench.spaces.genotypes import load_genotype
from conftest import set_alpha, tiny_strategy

SPACE = "model.space=nas-bench-201"


def tiny(algo: str, *overrides: str, **kw):
    return tiny_strategy(algo, SPACE, *overrides, layers=1, **kw)


def loss_of(s, net, x, y):
    return nn.functional.cross_entropy(s.forward(net, x), y)


# ---------------------------------------------------------------------------------------------- settings
def test_official_search_settings_per_algorithm():
    darts = resolve_search_config("darts", overrides=[SPACE])
    assert (darts.epochs, darts.batch_size, darts.model.layers, darts.model.channels) == (50, 64, 5, 16)
    assert darts.optim.nesterov and darts.optim.weight_decay == 5e-4 and darts.arch_optim.lr == 3e-4
    gdas = resolve_search_config("gdas", overrides=[SPACE])
    # GDAS.config: 240 epochs; its DARTS-space settings (6 cells, BN-ReLU head) do not carry over
    assert (gdas.epochs, gdas.batch_size, gdas.model.layers) == (240, 64, 5)
    assert (gdas.gdas.tau_max, gdas.gdas.tau_min) == (10.0, 0.1)
    assert resolve_search_config("darts").model.layers == 8  # the darts space is untouched
    pd = resolve_search_config("p-darts", overrides=[SPACE])
    assert list(pd.p_darts.num_to_keep) == [3, 2, 1] and [pd.p_darts.layers + a for a in pd.p_darts.add_layers] == [
        1, 3, 5]
    assert resolve_search_config("darts", overrides=[SPACE, "nb201.track_running_stats=false"]).nb201 == {
        "track_running_stats": False}


def test_official_step_orders():
    """DARTS-V1 on NAS-Bench-201 steps the weights first; DARTS-V2 and DARTS in its own space, the architecture."""
    assert tiny("darts")[1].order() == "weights_first"
    assert tiny("darts", "darts.unrolled=true")[1].order() == "arch_first"
    assert tiny_strategy("darts")[1].order() == "arch_first"
    assert tiny("gdas")[1].order() == "weights_first"
    assert tiny("darts", "step_order=arch_first")[1].order() == "arch_first"


def test_train_final_recipe_of_the_benchmark():
    g = "random:7"
    cfg = resolve_final_config(overrides=[f"genotype={g}", "space=nas-bench-201"])
    assert (cfg.epochs, cfg.batch_size, cfg.model.channels, cfg.model.layers) == (200, 256, 16, 5)
    assert cfg.optim.lr == 0.1 and cfg.optim.lr_min == 0.0 and cfg.optim.nesterov and cfg.optim.weight_decay == 5e-4
    assert not cfg.model.auxiliary and cfg.model.drop_path_prob == 0.0 and cfg.data.cutout == 0
    assert load_genotype(g, "nas-bench-201") == load_genotype(g, "nas-bench-201")
    assert load_genotype(g, "nas-bench-201").space == "nas-bench-201"
    darts = resolve_final_config(overrides=[f"genotype={g}"])
    assert (darts.epochs, darts.model.channels, darts.model.layers) == (600, 36, 20)


# ---------------------------------------------------------------------------------------------- each algorithm
def test_darts_second_order_runs_and_differs_from_first_order(one_thread):
    from nasbench.algorithms.base import ArchStepContext

    grads = []
    for unrolled in ("false", "true"):
        cfg, s, net = tiny("darts", f"darts.unrolled={unrolled}")
        torch.manual_seed(1)
        x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))
        w_optim = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9)
        ctx = ArchStepContext(net, (x, y), (x, y), w_optim, 0.025, nn.functional.cross_entropy)
        s.arch_backward(ctx)
        grads.append(s.alpha("cell").grad.clone())
    assert grads[0].shape == (6, 5) and not torch.allclose(grads[0], grads[1])


def test_gdas_runs_one_op_per_edge_and_passes_gradient_to_every_alpha(one_thread):
    cfg, s, net = tiny("gdas")
    ran = []
    hooks = [m.register_forward_hook(lambda mod, i, o: ran.append(mod)) for e in net.modules()
             if type(e).__name__ == "GumbelEdge" for m in e.ops]
    torch.manual_seed(0)
    loss = loss_of(s, net, torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))
    for h in hooks:
        h.remove()
    edges = [e for e in net.modules() if type(e).__name__ == "GumbelEdge"]
    none_ops = sum(1 for e in edges for m in e.ops if type(m).__name__ == "Zero")
    assert len(ran) <= len(edges) and len(edges) == 6 * 3 and none_ops == 18
    loss.backward()
    # the hard weights of the unsampled ops enter the output (NAS-Bench-201's GDAS): every α gets a gradient
    assert (s.alpha("cell").grad != 0).all()


def test_pc_darts_normalises_edges_within_each_node(one_thread):
    from nasbench.algorithms.pc_darts import edge_normalization

    cfg, s, net = tiny("pc-darts", "pc_darts.k=2")
    e = edge_normalization(torch.randn(6), s.topology)
    assert torch.allclose(torch.stack([e[0:1].sum(), e[1:3].sum(), e[3:6].sum()]), torch.ones(3))
    assert e[0] == 1.0  # node 1 has one incoming edge
    edge = next(m for m in net.modules() if type(m).__name__ == "PartialChannelEdge")
    conv = next(m for m in edge.modules() if isinstance(m, nn.Conv2d))
    assert conv.in_channels == 2  # C=4 over K=2
    g = s.derive()
    create_space("nas-bench-201").validate(g)


def test_p_darts_stages_prune_to_one_op_without_none(one_thread):
    cfg, s, _ = tiny("p-darts", "epochs=3", build=False)
    assert [s.supernet_spec(3, 3).layers] == [1]
    torch.manual_seed(0)
    for stage in range(3):
        set_alpha(s, "cell", torch.randn(6, len(s.ops["cell"][0])))
        assert s.on_epoch_end(s.stage_epochs() - 1, None)
        s.next_stage()
        if stage < 2:
            s.init_arch_params(s.supernet_spec(3, 3), torch.device("cpu"))
            assert len(s.ops["cell"][0]) == [3, 2][stage]
    g = s.derive()
    assert g.meta["final"] and all(op != "none" for node in g.nodes for op, _ in node)
    assert sum(op == "skip_connect" for node in g.nodes for op, _ in node) <= 2  # the skip cap carries over


def test_sgas_decides_every_edge_greedily_without_pruning(one_thread):
    cfg, s, _ = tiny("sgas", "epochs=6", "scale_schedules=false", "sgas.warmup_epochs=0", "sgas.decision_freq=1",
                     "sgas.post_train=0")
    assert s.decision_epochs() == [0, 1, 2, 3, 4, 5]
    torch.manual_seed(0)
    set_alpha(s, "cell", torch.randn(6, 5))
    order = []
    for epoch in range(6):
        events = s.on_epoch_end(epoch, None)
        assert len(events) == 1 and events[0].record["pruned"] == []
        order.append(events[0].record["edge"])
    assert sorted(order) == list(range(6)) and s.derive().meta["complete"]
    assert all(op != "none" for node in s.derive().nodes for op, _ in node)


# ---------------------------------------------------------------------------------------------- end to end
TINY = ["--space", "nas-bench-201", "--layers", "1", "--channels", "4", "--batch-size", "16", "--no-progress",
        "--device", "cpu", "plots=false"]


def _nas(nas_cmd, *args, timeout=600):
    r = subprocess.run([*nas_cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.parametrize("algo", ["darts"])  # GDAS goes through the CLI on this space in test_resume.py
def test_search_derive_train_final_through_the_cli(algo, nas_cmd, tmp_path):
    run = tmp_path / "search"
    _nas(nas_cmd, "search", "--algo", algo, "--dataset", "synthetic", "--epochs", "2", "--subset", "64",
         "data.image_size=16", "--out", run, *TINY)
    best = json.loads((run / "best.json").read_text())
    assert best["space"] == "nas-bench-201"
    g = load_genotype(run / "best.json")
    assert create_space("nas-bench-201").format_text(g) == best["arch"]
    r = _nas(nas_cmd, "derive", run, "-o", tmp_path / "d.json")
    assert load_genotype(tmp_path / "d.json") == g
    assert all(op in r.stdout for node in g.nodes for op, _ in node)  # the derived cell, as the space draws it
    final = tmp_path / "final"
    r = _nas(nas_cmd, "train-final", "--genotype", run, "--dataset", "synthetic", "--preset", "quick", "--epochs",
             "1", "--channels", "4", "--layers", "1", "--subset", "64", "data.image_size=16", "--out", final,
             "--no-progress", "--device", "cpu", "--json")
    result = json.loads(r.stdout)
    net = create_space("nas-bench-201").build_eval_network(g, C=4, layers=1, num_classes=10, auxiliary=False)
    assert result["params"] == sum(p.numel() for p in net.parameters())
    assert json.loads((final / "genotype.json").read_text())["arch"] == best["arch"]
    evaluated = json.loads(_nas(nas_cmd, "eval", final, "--json", "--device", "cpu").stdout)
    assert evaluated["test_acc"] == result["test_acc"]  # eval rebuilds the space's network from the run


def test_random_cell_dry_run_reports_its_size(nas_cmd):
    r = _nas(nas_cmd, "train-final", "--genotype", "random:0", "--space", "nas-bench-201", "--dataset", "cifar10",
             "--dry-run", "--json")
    report = json.loads(r.stdout)
    g = load_genotype("random:0", "nas-bench-201")
    net = create_space("nas-bench-201").build_eval_network(g, C=16, layers=5, num_classes=10, auxiliary=False)
    assert report["params"] == sum(p.numel() for p in net.parameters()) and report["macs"] > 0


def test_search_on_real_fashion_mnist(nas_cmd, tmp_path, fashion_available):
    run = tmp_path / "fm"
    _nas(nas_cmd, "search", "--algo", "darts", "--dataset", "fashion-mnist", "--data-dir", fashion_available,
         "--epochs", "1", "--subset", "128", "--out", run, *TINY)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["genotype"]["space"] == "nas-bench-201"
    assert "cell_parameter_free" in records[0]
    g = load_genotype(run / "best.json")
    create_space("nas-bench-201").validate(g)
    _nas(nas_cmd, "derive", run)
    final = tmp_path / "final"
    r = _nas(nas_cmd, "train-final", "--genotype", run, "--dataset", "fashion-mnist", "--data-dir", fashion_available,
             "--preset", "quick", "--epochs", "1", "--channels", "4", "--layers", "1", "--subset", "256",
             "data.test_subset=200", "--out", final, "--no-progress", "--device", "cpu", "--json")
    result = json.loads(r.stdout)
    assert result["test_images"] == 200 and result["dataset"] == "fashion-mnist"
    net = create_space("nas-bench-201").build_eval_network(g, C=4, layers=1, num_classes=10, auxiliary=False,
                                                           in_channels=1)
    assert result["params"] == sum(p.numel() for p in net.parameters())
