"""The ENAS micro space (NNI's ENASMicroLayer): ops, networks and their sizes, genotypes, how each algorithm
searches it, and search → derive → train-final through the CLI."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from torch import nn

from conftest import tiny_strategy
from nasbench.errors import GenotypeError
from nasbench.spaces.base import CellWeights, create_space
from nasbench.spaces.enas_micro import genotype as geno
from nasbench.spaces.enas_micro.network import cell_layout, reduction_positions
from nasbench.spaces.enas_micro.ops import PRIMITIVES, FactorizedReduce, StdConv, build_op
from nasbench.spaces.enas_micro.supernet import looseness
from nasbench.spaces.genotypes import load_genotype, save_genotype

SPACE = "enas-micro"
ENAS = geno.from_tf_arc("0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1", "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1")


def space():
    return create_space(SPACE)


# ---------------------------------------------------------------------------------------------- ops
@pytest.mark.parametrize("name", PRIMITIVES)
def test_every_op_keeps_shape(name):
    x = torch.randn(2, 6, 9, 9)
    assert build_op(name, 6)(x).shape == x.shape
    with pytest.raises(ValueError, match="stride 1"):
        build_op(name, 6, 2)


def test_calibration_and_factorized_reduce_shapes():
    x = torch.randn(2, 6, 8, 8)
    assert StdConv(6, 4)(x).shape == (2, 4, 8, 8)
    assert FactorizedReduce(6, 10)(x).shape == (2, 10, 4, 4)


def test_layout_follows_nni_micro_network():
    # num_layers=6: 8 cells, reductions at 2 and 5 (TF: pool_layers = [N//3, 2·(N//3)+1])
    assert reduction_positions(6) == (2, 5) and reduction_positions(15) == (5, 11)
    layout = list(cell_layout(20, 6))
    assert [r for *_, r in layout] == [False, False, True, False, False, True, False, False]
    assert [c for _, _, c, _ in layout] == [20, 20, 40, 40, 40, 80, 80, 80]
    assert layout[0][:2] == (60, 60) and layout[1][:2] == (60, 20) and layout[3][:2] == (40, 40)


# ---------------------------------------------------------------------------------------------- sizes
def _sep(C, k):
    return k * k * C + C * C + 2 * C  # depthwise, pointwise, affine BN


def _inputs(C_pp, C_p, C, reduction):
    if reduction:  # two factorized reduces (non-affine BN), no calibration after them
        return 2 * (C // 2) * (C_pp + C_p)
    return (C_pp * C if C_pp != C else 0) + (C_p * C if C_p != C else 0)  # StdConv: 1×1 conv, non-affine BN


def _eval_params(g, C, N, classes, in_ch=3):
    """The evaluation network counted from NNI's module definitions, not from the modules."""
    total = 9 * in_ch * 3 * C + 2 * 3 * C  # stem conv + affine BN
    pools = reduction_positions(N)
    c_pp = c_p = 3 * C
    c = C
    for i in range(N + 2):
        red = i in pools
        if red:
            c = 2 * c_p
        cell = g.reduce if red else g.normal
        total += _inputs(c_pp, c_p, c, red)
        total += sum(_sep(c, 3 if op == "sep_conv_3x3" else 5) for node in cell for op, _ in node
                     if op.startswith("sep"))
        total += c * len(geno.loose_ends(cell)) * c  # output 1×1 conv of the loose ends, non-affine BN
        if red:
            c_pp = c_p = c
        c_pp, c_p = c_p, c
    return total + c * classes + classes


def _search_params(C, N, classes, nodes=5, k=1):
    """The DARTS-style supernet: every edge a mixed op of the five ops on C/k channels, output over all states."""
    edges = sum(i + 2 for i in range(nodes))
    total = 9 * 3 * 3 * C + 2 * 3 * C
    pools = reduction_positions(N)
    c_pp = c_p = 3 * C
    c = C
    for i in range(N + 2):
        red = i in pools
        if red:
            c = 2 * c_p
        total += _inputs(c_pp, c_p, c, red) + edges * (_sep(c // k, 3) + _sep(c // k, 5)) + c * (nodes + 2) * c
        if red:
            c_pp = c_p = c
        c_pp, c_p = c_p, c
    return total + c * classes + classes


EVAL_PARAMS_PAPER = 1_986_670  # the ENAS paper's cell at C=36, N=15 (17 cells), 10 classes, without aux head
AUX_PARAMS = 421_130  # the auxiliary head on 144 channels (CIFAR head: 128 and 768 channels)
SEARCH_PARAMS = {"darts": 1_483_750, "pc-darts": 325_750}  # NNI's search size: C=20, N=6, 5 nodes


def test_evaluation_network_parameters_at_the_paper_size():
    net = space().build_eval_network(ENAS, C=36, layers=15, num_classes=10, auxiliary=True)
    counted = {n: p.numel() for n, p in net.named_parameters()}
    main = sum(v for n, v in counted.items() if "auxiliary" not in n)
    assert main == _eval_params(ENAS, 36, 15, 10) == EVAL_PARAMS_PAPER
    assert space().reference_params(ENAS) == EVAL_PARAMS_PAPER
    assert sum(counted.values()) - main == AUX_PARAMS


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluation_network_parameters_of_random_cells(seed):
    g = space().random_genotype(seed)
    net = space().build_eval_network(g, C=8, layers=4, num_classes=7, auxiliary=False)
    assert sum(p.numel() for p in net.parameters()) == _eval_params(g, 8, 4, 7)


@pytest.mark.parametrize("algo", ["darts", "pc-darts"])
def test_search_network_parameters_at_nni_search_size(algo):
    _, s, _ = tiny_strategy(algo, f"model.space={SPACE}", channels=20, layers=6, build=False)
    net = s.build_supernet(s.supernet_spec(num_classes=10, in_channels=3))
    n = sum(p.numel() for p in net.parameters())
    assert n == _search_params(20, 6, 10, k=4 if algo == "pc-darts" else 1) == SEARCH_PARAMS[algo]


def test_evaluation_network_forward_with_auxiliary_head_and_drop_path():
    net = space().build_eval_network(ENAS, C=4, layers=3, num_classes=5, auxiliary=True)
    net.drop_path_prob = 0.3
    logits, aux = net.train()(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 5) and aux.shape == (3, 5)
    logits, aux = net.eval()(torch.randn(3, 3, 28, 28))
    assert logits.shape == (3, 5) and aux is None


def test_drop_path_rises_with_depth_as_in_the_tf_code():
    """TF's _apply_drop_path at the paper size (num_layers=15, so 17 layers with the two reductions): layer i
    keeps a path with 1 − (i + 1)/17·(1 − 0.6) at the end of training; the network drops with its complement."""
    net = space().build_eval_network(ENAS, C=2, layers=15, num_classes=10, auxiliary=False, drop_path_by_layer=True)
    net.drop_path_prob = 0.4
    seen = []
    for cell in net.cells:
        cell.register_forward_pre_hook(lambda m, a: seen.append(a[2]))
    net.train()(torch.randn(2, 3, 32, 32))
    tf_keep = [1.0 - (i + 1) / (15 + 2) * (1.0 - 0.6) for i in range(17)]
    assert seen == pytest.approx([1.0 - k for k in tf_keep], abs=1e-12)
    seen.clear()
    flat = space().build_eval_network(ENAS, C=2, layers=15, num_classes=10, auxiliary=False)
    for cell in flat.cells:
        cell.register_forward_pre_hook(lambda m, a: seen.append(a[2]))
    flat.drop_path_prob = 0.4
    flat.train()(torch.randn(2, 3, 32, 32))
    assert seen == [0.4] * 17


def test_paper_recipe_has_the_tf_dropout_and_drop_path_by_layer():
    from nasbench.config import resolve_final_config

    cfg = resolve_final_config(overrides=["genotype=enas-micro"])
    assert (cfg.model.dropout, cfg.model.drop_path_by_layer, cfg.model.drop_path_prob) == (0.2, True, 0.4)
    net = space().build_eval_network(ENAS, C=4, layers=3, num_classes=5, auxiliary=False, dropout=0.2)
    assert net.dropout == 0.2


# ---------------------------------------------------------------------------------------------- genotypes
def test_genotype_round_trips(tmp_path):
    g = space().random_genotype(3)
    assert geno.EnasMicroGenotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    assert space().parse_text(space().format_text(g)) == g
    assert geno.parse_text(geno.format_text(g, one_line=True)) == g
    save_genotype(g, tmp_path / "g.json")
    assert load_genotype(tmp_path / "g.json") == g
    (tmp_path / "g.txt").write_text(space().format_text(g))
    assert load_genotype(tmp_path / "g.txt") == g  # the text notation is claimed by this space
    assert load_genotype("enas-micro") == ENAS
    assert load_genotype("random:3", SPACE) == g
    # the TF code's arc: node 0 of the normal cell is avg_pool(in0) + sep_conv_3x3(in0)
    assert ENAS.normal[0] == (("avg_pool_3x3", 0), ("sep_conv_3x3", 0))
    assert ENAS.reduce[0] == (("sep_conv_3x3", 1), ("sep_conv_3x3", 1))  # one input twice is valid
    assert geno.loose_ends(ENAS.normal) == [2, 3, 4, 5, 6] and geno.loose_ends(ENAS.reduce) == [2, 4, 5, 6]


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d.update(normal=d["normal"][:0]), "normal cell: expected a non-empty list of nodes"),
    (lambda d: d["normal"][1].pop(), "normal cell, node 1: expected two (op, input) pairs"),
    (lambda d: d["reduce"][0][0].__setitem__(0, "conv_7x7"), "reduce cell, node 0: unknown op 'conv_7x7'"),
    (lambda d: d["normal"][2][1].__setitem__(1, 4), "normal cell, node 2: input 4 is out of range"),
    (lambda d: d["normal"][0][1].__setitem__(1, "0"), "expected an (op name, input index) pair"),
    (lambda d: d.pop("reduce"), "'reduce' is missing"),
    (lambda d: d.update(space="darts"), "is not an enas-micro genotype"),
    (lambda d: d.update(text="normal: skip_connect<-0 skip_connect<-1; reduce: skip_connect<-0 skip_connect<-1"),
     "describe different cells"),
])
def test_genotype_errors_are_one_line(mutate, fragment):
    d = ENAS.to_dict()
    d.pop("text")
    if "text" in fragment or "different" in fragment:
        d["text"] = ENAS.to_dict()["text"]
    mutate(d)
    with pytest.raises(GenotypeError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as e:
        geno.EnasMicroGenotype.from_dict(d)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, fragment", [
    ("", "is empty"),
    ("normal: skip_connect<-0 skip_connect<-1", "the reduce cell is missing"),
    ("normal: skip_connect<-0 | x\nreduce: skip_connect<-0 skip_connect<-1", "node 0: expected two op<-input"),
    ("normal: skip_connect<-0 skip_connect<-a\nreduce: skip_connect<-0 skip_connect<-1", "is not op<-input"),
    ("cell: a<-0 b<-1", "must start with 'normal:' or 'reduce:'"),
])
def test_text_errors(text, fragment):
    with pytest.raises(GenotypeError, match=fragment):
        geno.parse_text(text)


def test_space_size():
    # per cell type Π over nodes of ((i+2)·5)²: 10²·15²·20²·25²·30²
    assert geno.space_size() == (10 * 15 * 20 * 25 * 30) ** 2 == 5_062_500_000_000


# ---------------------------------------------------------------------------------------------- supernet
def test_looseness_marks_the_loose_ends_of_a_hard_sample():
    topo = space().topology
    chosen = {0: (0, 1), 1: (1, 2), 2: (0, 3), 3: (2, 4), 4: (1, 5)}  # node -> its two sources
    scale = torch.zeros(topo.num_edges)
    ops: list = [None] * topo.num_edges
    for node, srcs in chosen.items():
        for j in srcs:
            scale[topo.edge_index(node, j)] = 1.0
            ops[topo.edge_index(node, j)] = 0
    u = looseness(CellWeights(ops, edges=scale), topo)
    cell = [tuple(("skip_connect", j) for j in srcs) for srcs in chosen.values()]
    assert [k for k in range(7) if u[k] == 1] == geno.loose_ends(cell) == [6]
    assert all(u[k] == 0 for k in range(6))
    # softmax input weights: node 0's two inputs are always taken; a state nobody weights stays loose
    soft = torch.full((topo.num_edges,), 0.5)
    u = looseness(CellWeights([0] * topo.num_edges, edges=soft), topo)
    assert float(u[0]) == float(u[1]) == 0.0 and float(u[6]) == 1.0 and 0 < float(u[5]) < 1


def test_a_hard_sample_computes_the_sampled_cell():
    """A search cell given one op per sampled edge computes what the sampled cell computes (NNI's layer on
    the sampled architecture): node = op(a) + op(b), output = BN(conv(relu(loose ends))) with the matching
    slices of the one output weight."""
    torch.manual_seed(0)
    _, s, net = tiny_strategy("darts", f"model.space={SPACE}", channels=4, layers=3)
    cell = net.cells[0]  # a normal cell of C=4 on the stem's 12 channels
    topo = cell.body.topology
    chosen = {0: ((0, 3), (1, 0)), 1: ((2, 4), (0, 2)), 2: ((3, 1), (1, 4)), 3: ((2, 0), (4, 3)), 4: ((5, 1), (3, 2))}
    ops: list = [None] * topo.num_edges
    scale = torch.zeros(topo.num_edges)
    for node, pairs in chosen.items():
        for j, k in pairs:
            ops[topo.edge_index(node, j)] = k
            scale[topo.edge_index(node, j)] = 1.0
    x = torch.randn(2, 12, 8, 8)
    cell.eval()
    with torch.no_grad():
        _, out = cell(x, x, CellWeights(ops, edges=scale))
        a, b, _ = cell.inputs(x, x)
        states = [a, b]
        for node, pairs in chosen.items():
            states.append(sum(cell.edges[topo.edge_index(node, j)].ops[k](states[j]) for j, k in pairs))
        g = [tuple((PRIMITIVES[k], j) for j, k in pairs) for pairs in chosen.values()]
        loose = geno.loose_ends(g)
        w = cell.body.output.state_weight(loose)
        expect = cell.body.output.bn(nn.functional.conv2d(torch.relu(torch.cat([states[k] for k in loose], 1)), w))
    assert torch.allclose(out, expect, atol=1e-6)


# ---------------------------------------------------------------------------------------------- algorithms
def _tiny(algo, *over):
    return tiny_strategy(algo, f"model.space={SPACE}", *over, channels=4, layers=3)


def test_darts_weights_inputs_and_keeps_the_top_two():
    _, s, net = _tiny("darts")
    assert set(s.arch) == {"alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce"}
    w = s.weights()["normal"]
    topo = s.topology
    for r in topo.node_slices():  # a softmax over each node's candidate inputs
        assert abs(float(w.edges[r.start:r.stop].detach().sum()) - 1) < 1e-6
    with torch.no_grad():
        s.arch["alpha_normal"].zero_()
        s.arch["alpha_normal"][:, 1] = 3.0  # sep_conv_5x5 strongest everywhere
        s.arch["beta_normal"].zero_()
        s.arch["beta_normal"][topo.edge_index(4, 5)] = 2.0  # node 4 prefers its inputs 5 and 0
        s.arch["beta_normal"][topo.edge_index(4, 0)] = 1.0
    cell = s.derive().normal
    assert sorted(j for _, j in cell[4]) == [0, 5] and all(op == "sep_conv_5x5" for op, _ in cell[4])
    logits = s.forward(net, torch.randn(2, 3, 16, 16))
    logits.sum().backward()
    assert all(s.arch[k].grad is not None and s.arch[k].grad.abs().sum() > 0 for k in s.arch)


def test_gdas_samples_one_op_per_edge_and_two_inputs_per_node():
    _, s, net = _tiny("gdas")
    w = s.weights()["normal"]
    topo = s.topology
    for i, r in enumerate(topo.node_slices()):
        drawn = [e for e in r if w.ops[e] is not None]
        assert len(drawn) == 2 and all(abs(float(w.edges[e].detach()) - 1) < 1e-6 for e in drawn)
        assert all(isinstance(w.ops[e][1], int) for e in drawn)
    logits = s.forward(net, torch.randn(2, 3, 16, 16))
    logits.sum().backward()
    assert float(s.arch["beta_normal"].grad.abs().sum()) > 0 and float(s.arch["alpha_normal"].grad.abs().sum()) > 0
    g = s.derive()  # per node the two strongest (op, input) pairs: the same input may come twice
    space().validate(g)


def test_pc_darts_runs_partial_channels_with_edge_normalization():
    _, s, net = tiny_strategy("pc-darts", f"model.space={SPACE}", "pc_darts.k=2", channels=4, layers=3)
    edge = net.cells[0].edges[0]
    assert edge.k == 2 and edge.ops[0][1].in_channels == 2  # the sep conv runs on C/K of the 4 channels
    w = s.weights()["normal"]
    assert torch.allclose(w.edges[0:2].sum(), torch.tensor(1.0))
    s.forward(net, torch.randn(2, 3, 16, 16)).sum().backward()
    assert float(s.arch["beta_reduce"].grad.abs().sum()) > 0


def test_p_darts_prunes_five_ops_to_one_in_three_stages():
    from nasbench.algorithms.p_darts import final_cell

    cfg, s, _ = _tiny("p-darts", "p_darts.add_layers=[0,0,0]", "epochs=3")
    assert list(cfg.p_darts.num_to_keep) == [3, 2, 1]
    sizes = []
    for stage in range(3):
        s.init_arch_params(s.supernet_spec(3, 3), torch.device("cpu"))
        sizes.append(len(s.ops["normal"][0]))
        s._prune()
        s.next_stage()
    assert sizes == [5, 3, 2] and s.final is not None
    g = s.derive()
    assert all(len(node) == 2 for node in g.normal)
    # the input weights rank a node's edges: node 0 of a 2-input topology keeps both; node 1 the two heaviest
    topo = s.topology
    probs = torch.full((topo.num_edges, 1), 1.0)
    ops = [("sep_conv_3x3",)] * topo.num_edges
    scale = torch.ones(topo.num_edges)
    scale[topo.edge_index(1, 1)] = 0.1
    cell, _ = final_cell(probs, ops, topo, None, scale)
    assert sorted(j for op, j in cell[2:4]) == [0, 2]


def test_sgas_decides_by_input_weight_and_freezes_the_decided_edges():
    cfg, s, net = _tiny("sgas", "epochs=11", "scale_schedules=false", "sgas.warmup_epochs=0",
                        "sgas.decision_freq=1", "sgas.post_train=0")
    topo = s.topology
    with torch.no_grad():
        s.arch["beta_normal"].zero_()
        s.arch["beta_normal"][topo.edge_index(3, 4)] = 5.0  # by far the most important input of its node
        s.arch["alpha_normal"][topo.edge_index(3, 4)] = torch.tensor([0.0, 0.0, 0.0, 4.0, 0.0])
    events = s.on_epoch_end(0, net)
    rec = next(e.record for e in events if e.record["cell"] == "normal")
    assert (rec["node"], rec["input"], rec["op"]) == (3, 4, "max_pool_3x3")
    frozen = s.frozen_rows()
    assert bool(frozen["beta_normal"][topo.edge_index(3, 4)]) and int(frozen["beta_normal"].sum()) == 1
    for epoch in range(1, 10):
        s.on_epoch_end(epoch, net)
    w = s.weights()["normal"]
    assert all(sum(w.ops[e] is not None for e in r) == 2 for r in topo.node_slices())
    g = s.derive()
    assert g.meta["complete"] and ("max_pool_3x3", 4) in g.normal[3]


# ---------------------------------------------------------------------------------------------- CLI
TINY = ["--space", SPACE, "--layers", "3", "--channels", "4", "--batch-size", "16", "--no-progress",
        "--device", "cpu", "plots=false", "--dataset", "synthetic", "--subset", "64", "data.image_size=16"]

ALGO_EXTRA = {"darts": [], "gdas": [], "pc-darts": ["pc_darts.k=2", "pc_darts.warmup_epochs=0",
                                                    "scale_schedules=false"],
              "p-darts": ["p_darts.add_layers=[0,0,1]", "p_darts.epochs_no_arch=0", "scale_schedules=false"],
              "sgas": []}
EPOCHS = {"darts": 2, "gdas": 2, "pc-darts": 2, "p-darts": 3, "sgas": 10}


def _nas(nas_cmd, *args, timeout=600):
    r = subprocess.run([*nas_cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.parametrize("algo", list(ALGO_EXTRA))
def test_search_derive_train_final_through_the_cli(algo, nas_cmd, tmp_path):
    run = tmp_path / "search"
    _nas(nas_cmd, "search", "--algo", algo, "--epochs", EPOCHS[algo], "--out", run, *TINY, *ALGO_EXTRA[algo])
    best = json.loads((run / "best.json").read_text())
    assert best["space"] == SPACE and best["algo"] == algo
    g = load_genotype(run / "best.json")
    r = _nas(nas_cmd, "derive", run, "-o", tmp_path / "d.json")
    assert load_genotype(tmp_path / "d.json") == g
    if algo != "darts":
        return  # one train-final is enough: the network does not depend on the algorithm
    final = tmp_path / "final"
    r = _nas(nas_cmd, "train-final", "--genotype", run, "--dataset", "synthetic", "--preset", "quick", "--epochs",
             "1", "--channels", "4", "--layers", "3", "--subset", "64", "data.image_size=16", "--out", final,
             "--no-progress", "--device", "cpu", "--json")
    result = json.loads(r.stdout)
    assert result["params"] == _eval_params(g, 4, 3, 10)
    _nas(nas_cmd, "show", run)
    _nas(nas_cmd, "show", final)
    _nas(nas_cmd, "plot", run, "-f", "dot", "--out", tmp_path / "plots")
    assert (tmp_path / "plots").is_dir()
    _nas(nas_cmd, "export", final, "-o", tmp_path / "model.pt2")


def test_random_cell_dry_run_and_paper_recipe(nas_cmd):
    r = _nas(nas_cmd, "train-final", "--genotype", "random:5", "--space", SPACE, "--dataset", "cifar10",
             "--dry-run", "--json")
    report = json.loads(r.stdout)
    g = load_genotype("random:5", SPACE)
    assert report["params"] == _eval_params(g, 36, 15, 10) and report["macs"] > 0
    r = _nas(nas_cmd, "train-final", "--genotype", "enas-micro", "--dataset", "cifar10", "--dry-run", "--json")
    assert json.loads(r.stdout)["params"] == EVAL_PARAMS_PAPER


def test_describe_and_dot():
    header, rows = space().describe(ENAS)
    assert rows[0] == ["2", "avg_pool_3x3<-0, sep_conv_3x3<-0", "sep_conv_3x3<-1, sep_conv_3x3<-1"]
    assert rows[-1][0] == "out" and rows[-1][2] == "2 + 4 + 5 + 6 (loose ends)"
    dots = space().dot(ENAS)
    assert set(dots) == {"normal", "reduce"} and '"c_{k-2}" -> "0"' in dots["normal"]


def test_search_and_train_final_on_real_fashion_mnist(nas_cmd, tmp_path, fashion_available):
    """28×28 one-channel images: two reductions leave 7×7 maps; the auxiliary head's pool adapts."""
    run = tmp_path / "fm"
    common = ["--dataset", "fashion-mnist", "--data-dir", fashion_available, "--channels", "4", "--layers", "3",
              "--no-progress", "--device", "cpu"]
    _nas(nas_cmd, "search", "--algo", "darts", "--space", SPACE, "--epochs", "1", "--subset", "128",
         "--batch-size", "16", "plots=false", "--out", run, *common)
    g = load_genotype(run / "best.json")
    space().validate(g)
    final = tmp_path / "final"
    r = _nas(nas_cmd, "train-final", "--genotype", run, "--preset", "quick", "--epochs", "1", "--subset", "256",
             "data.test_subset=200", "model.auxiliary=true", "--out", final, "--json", *common)
    result = json.loads(r.stdout)
    assert result["test_images"] == 200 and result["params"] == _eval_params(g, 4, 3, 10, in_ch=1)


@pytest.mark.parametrize("algo", ["darts", "gdas"])
def test_memory_efficient_search_cells_give_the_same_numbers(algo):
    _, s, net = _tiny(algo)
    x = torch.randn(3, 3, 16, 16)
    results = []
    for memory_efficient in (False, True):
        net.set_execution("reference", memory_efficient)
        params = [*net.parameters(), *s.arch_parameters()]
        for p in params:
            p.grad = None
        if algo == "gdas":
            s.train_generator.manual_seed(1)
        y = s.forward(net, x)
        y.square().sum().backward()
        results.append((y.detach(), [p.grad.clone() for p in params if p.grad is not None]))
    (y0, g0), (y1, g1) = results
    assert torch.equal(y0, y1) and len(g0) == len(g1) and all(torch.allclose(a, b) for a, b in zip(g0, g1))
    with pytest.raises(ValueError, match="one execution"):
        net.set_execution("fast")
