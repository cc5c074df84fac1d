"""The ENAS macro space (NNI's ENASMacroGeneralModel): branches, networks and their sizes, genotypes, how each
algorithm searches the branches and the on/off skip connections, and the CLI."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from conftest import tiny_strategy
from nasbench.errors import ConfigError, GenotypeError
from nasbench.spaces.base import create_space
from nasbench.spaces.enas_macro import genotype as geno
from nasbench.spaces.enas_macro.network import pool_positions, skip_topology
from nasbench.spaces.enas_macro.ops import BRANCHES, build_op
from nasbench.spaces.genotypes import load_genotype, save_genotype

SPACE = "enas-macro"


def space():
    return create_space(SPACE)


@pytest.mark.parametrize("name", [*BRANCHES, "none", "skip_connect"])
def test_every_branch_keeps_shape(name):
    x = torch.randn(2, 6, 9, 9)
    assert build_op(name, 6)(x).shape == x.shape


def test_layout():
    assert pool_positions(12) == (3, 7) and pool_positions(24) == (7, 15)  # NNI: L//3 - 1, 2·(L//3) - 1
    t = skip_topology(12)
    assert t.num_edges == 66 and t.sources(0) == [0] and t.sources(10) == list(range(11))


def _branch(name, C):
    if name.startswith("conv"):
        k = 3 if "3x3" in name else 5
        return C * C + k * k * C * C + C  # 1×1 StdConv, k×k conv with bias; non-affine BNs
    if name.startswith("sep"):
        k = 3 if "3x3" in name else 5
        return C * C + k * k * C + C * C
    return C * C  # pools: the 1×1 StdConv only


def _common(C, classes, in_ch=3):
    return 9 * in_ch * C + 2 * C + 2 * C * C + C * classes + classes  # stem, two factorized reduces, classifier


def _eval_params(g, C, classes, in_ch=3):
    return _common(C, classes, in_ch) + sum(_branch(b, C) for b, _ in g.layers)


def _search_params(C, L, classes, k=1):
    return _common(C, classes) + L * sum(_branch(b, C // k) for b in BRANCHES)


EVAL_PARAMS_PAPER = 3_060_394  # the paper's 24-layer network at C=96 (NNI's constant width), 10 classes
SEARCH_PARAMS = {"darts": 302_770, "pc-darts": 22_834}  # NNI's default: 12 layers, C=24, 10 classes


def test_evaluation_network_parameters_of_the_paper_network():
    g = load_genotype("enas-macro")
    assert len(g.layers) == 24 and g.layers[2] == ("conv_3x3", (0,))
    net = space().build_eval_network(g, C=96, layers=24, num_classes=10, auxiliary=False)
    assert sum(p.numel() for p in net.parameters()) == _eval_params(g, 96, 10) == EVAL_PARAMS_PAPER
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and aux is None


@pytest.mark.parametrize("algo", ["darts", "pc-darts"])
def test_search_network_parameters_at_nni_default(algo):
    _, s, _ = tiny_strategy(algo, f"model.space={SPACE}", channels=24, layers=12, build=False)
    net = s.build_supernet(s.supernet_spec(num_classes=10, in_channels=3))
    n = sum(p.numel() for p in net.parameters())
    assert n == _search_params(24, 12, 10, k=4 if algo == "pc-darts" else 1) == SEARCH_PARAMS[algo]


def test_genotype_round_trips_and_errors(tmp_path):
    g = space().random_genotype(4)
    assert geno.EnasMacroGenotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    assert space().parse_text(space().format_text(g)) == g
    save_genotype(g, tmp_path / "g.json")
    assert load_genotype(tmp_path / "g.json") == g
    (tmp_path / "g.txt").write_text(space().format_text(g))
    assert load_genotype(tmp_path / "g.txt") == g
    assert load_genotype("random:4", SPACE) == g
    for layers, fragment in [
        ([["conv_3x3", []]], "at least 2 layers"),
        ([["conv_3x3", []], ["conv_7x7", []]], "layer 1: unknown branch 'conv_7x7'"),
        ([["conv_3x3", [0]], ["conv_3x3", []]], "layer 0 has no skip connections"),
        ([["conv_3x3", []], ["conv_3x3", [1]]], "layer 1: skip source 1 is out of range"),
        ([["conv_3x3", []], ["conv_3x3", []], ["conv_3x3", [0, 0]]], "appears twice"),
        ([["conv_3x3", []], ["conv_3x3", ["0"]]], "must be a state index"),
    ]:
        with pytest.raises(GenotypeError, match=fragment):
            geno.EnasMacroGenotype.from_dict({"space": SPACE, "layers": layers})
    with pytest.raises(GenotypeError, match="starts with 'layers:'"):
        geno.parse_text("conv_3x3 | conv_3x3")
    with pytest.raises(GenotypeError, match="is not <-source"):
        geno.parse_text("layers: conv_3x3 | conv_3x3 0")
    assert geno.space_size(12) == 6 ** 12 * 2 ** 66


def test_derive_keeps_the_strongest_branch_and_the_skips_whose_on_weight_wins():
    _, s, _ = tiny_strategy("darts", f"model.space={SPACE}", channels=4, layers=4, build=False)
    t = s.topology_of("skip")
    with torch.no_grad():
        s.arch["alpha_branch"].zero_()
        s.arch["alpha_branch"][:, 3] = 1.0  # sep_conv_5x5
        s.arch["alpha_skip"].zero_()
        s.arch["alpha_skip"][:, 0] = 1.0  # every skip off ...
        s.arch["alpha_skip"][t.edge_index(2, 1)] = torch.tensor([0.0, 0.5])  # ... but layer 3 adds state 1
    g = s.derive()
    assert g.layers == (("sep_conv_5x5", ()), ("sep_conv_5x5", ()), ("sep_conv_5x5", ()), ("sep_conv_5x5", (1,)))


def test_gdas_samples_a_branch_per_layer_and_each_skip_on_or_off():
    _, s, net = tiny_strategy("gdas", f"model.space={SPACE}", channels=4, layers=4)
    w = s.weights()
    assert all(isinstance(k, int) for _, k in w["branch"].ops) and all(k in (0, 1) for _, k in w["skip"].ops)
    s.forward(net, torch.randn(2, 3, 16, 16)).sum().backward()
    assert float(s.arch["alpha_branch"].grad.abs().sum()) > 0


def test_pc_darts_splits_the_branches_and_keeps_the_skips_whole():
    from nasbench.algorithms.pc_darts import PartialChannelEdge

    _, s, net = tiny_strategy("pc-darts", f"model.space={SPACE}", "pc_darts.k=2", channels=4, layers=4)
    assert all(isinstance(e, PartialChannelEdge) for e in net.branches)
    assert not any(isinstance(e, PartialChannelEdge) for e in net.skips)
    w = s.weights()["skip"]  # β normalised over each layer's skip connections
    assert abs(float(w.edges[1:3].detach().sum()) - 1) < 1e-6


def test_p_darts_prunes_branches_and_leaves_the_skips_alone():
    cfg, s, _ = tiny_strategy("p-darts", f"model.space={SPACE}", "epochs=3", channels=4, layers=4, build=False)
    assert list(cfg.p_darts.num_to_keep) == [4, 2, 1] and list(cfg.p_darts.add_layers) == [0, 0, 0]
    sizes = []
    for _ in range(3):
        s.init_arch_params(s.supernet_spec(3, 3), torch.device("cpu"))
        sizes.append((len(s.ops["branch"][0]), len(s.ops["skip"][0])))
        s._prune()
        s.next_stage()
    assert sizes == [(6, 2), (4, 2), (2, 2)]
    space().validate(s.derive())
    with pytest.raises(ConfigError, match="keeps the depth"):
        tiny_strategy("p-darts", f"model.space={SPACE}", "p_darts.add_layers=[0,1,2]", channels=4, layers=4,
                      build=False)


def test_sgas_decides_branches_by_certainty_and_derives_skips_as_darts():
    _, s, net = tiny_strategy("sgas", f"model.space={SPACE}", "epochs=5", "scale_schedules=false",
                              "sgas.warmup_epochs=0", "sgas.decision_freq=1", "sgas.post_train=0",
                              channels=4, layers=4)
    with torch.no_grad():
        s.arch["alpha_branch"][2] = torch.tensor([0.0, 0.0, 0.0, 0.0, 6.0, 0.0])  # layer 2: certainly avg pool
    events = s.on_epoch_end(0, net)
    assert [e.record["cell"] for e in events] == ["branch"]
    assert (events[0].record["node"], events[0].record["op"]) == (2, "avg_pool_3x3")
    assert s.selected["skip"] == [-1] * 6 and not bool(s.frozen_rows()["alpha_skip"].any())
    for epoch in range(1, 4):
        s.on_epoch_end(epoch, net)
    g = s.derive()
    assert g.meta["complete"] and g.layers[2][0] == "avg_pool_3x3"


TINY = ["--space", SPACE, "--layers", "4", "--channels", "4", "--batch-size", "16", "--no-progress",
        "--device", "cpu", "plots=false", "--dataset", "synthetic", "--subset", "64", "data.image_size=16"]
ALGO_EXTRA = {"darts": [], "gdas": [], "pc-darts": ["pc_darts.k=2", "pc_darts.warmup_epochs=0",
                                                    "scale_schedules=false"],
              "p-darts": ["p_darts.epochs_no_arch=0", "scale_schedules=false"], "sgas": []}
EPOCHS = {"darts": 2, "gdas": 2, "pc-darts": 2, "p-darts": 3, "sgas": 5}


def _nas(nas_cmd, *args, timeout=600):
    r = subprocess.run([*nas_cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.parametrize("algo", list(ALGO_EXTRA))
def test_search_derive_train_final_through_the_cli(algo, nas_cmd, tmp_path):
    run = tmp_path / "search"
    _nas(nas_cmd, "search", "--algo", algo, "--epochs", EPOCHS[algo], "--out", run, *TINY, *ALGO_EXTRA[algo])
    g = load_genotype(run / "best.json")
    assert g.space == SPACE and len(g.layers) == 4
    _nas(nas_cmd, "derive", run, "-o", tmp_path / "d.json")
    assert load_genotype(tmp_path / "d.json") == g
    if algo != "darts":
        return
    final = tmp_path / "final"
    r = _nas(nas_cmd, "train-final", "--genotype", run, "--dataset", "synthetic", "--preset", "quick", "--epochs",
             "1", "--channels", "4", "--subset", "64", "data.image_size=16", "--out", final, "--no-progress",
             "--device", "cpu", "--json")
    assert json.loads(r.stdout)["params"] == _eval_params(g, 4, 10)
    _nas(nas_cmd, "show", run)
    _nas(nas_cmd, "plot", run, "-f", "dot", "--out", tmp_path / "plots")
    _nas(nas_cmd, "export", final, "-o", tmp_path / "model.pt2")


def test_random_network_dry_run_and_paper_recipe(nas_cmd):
    r = _nas(nas_cmd, "train-final", "--genotype", "random:1", "--space", SPACE, "--dataset", "cifar10",
             "--dry-run", "--json")
    report = json.loads(r.stdout)  # a random cell of the paper recipe is as deep as the TF final network: 24
    assert report["layers"] == 24 and report["params"] == _eval_params(load_genotype("random:1", SPACE, 24), 96, 10)
    r = _nas(nas_cmd, "train-final", "--genotype", "enas-macro", "--dataset", "cifar10", "--dry-run", "--json")
    assert json.loads(r.stdout)["params"] == EVAL_PARAMS_PAPER


def test_train_final_takes_the_depth_of_the_genotype_and_refuses_another(nas_cmd, tmp_path):
    g = tmp_path / "five.json"
    save_genotype(geno.random_genotype(3, 5), g)
    dry = ["--dataset", "cifar10", "--dry-run", "--json"]
    report = json.loads(_nas(nas_cmd, "train-final", "--genotype", g, *dry).stdout)
    assert report["layers"] == 5 and report["params"] == _eval_params(load_genotype(g), 96, 10)
    for bad, line in ((["--layers", "7"], "this enas-macro genotype has 5 layers and its network has the genotype's "
                                           "depth; got model.layers=7 (leave it out, or set it to 5)"),
                      (["--channels", "5"], "the enas-macro network needs an even number of channels, got C=5")):
        r = subprocess.run([*nas_cmd, "train-final", "--genotype", str(g), *bad, "--dataset", "synthetic", "--subset",
                            "200", "--out", str(tmp_path / "refused")], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: {line}"]
        assert not (tmp_path / "refused").exists()  # refused before anything is written
    # random:SEED draws a network of model.layers (here 7; the quick preset's 6 otherwise)
    report = json.loads(_nas(nas_cmd, "train-final", "--genotype", "random:2", "--space", SPACE, "--layers", "7",
                             *dry).stdout)
    assert report["layers"] == 7 and report["params"] == _eval_params(load_genotype("random:2", SPACE, 7), 96, 10)
    report = json.loads(_nas(nas_cmd, "train-final", "--genotype", "random:2", "--space", SPACE, "--preset", "quick",
                             *dry).stdout)
    assert report["layers"] == 6
    r = subprocess.run([*nas_cmd, "train-final", "--genotype", str(g), "model.drop_path_prob=0.1", *dry],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "has no drop-path" in r.stderr and "Traceback" not in r.stderr


def test_dropout_before_the_classifier_in_training_only():
    """The TF final training's dropout (keep 0.5): each pooled feature is zeroed or scaled by 1/(1 − p) in
    training, untouched in evaluation; at p = 0 no random number is drawn."""
    g = geno.random_genotype(0, 4)
    seen = []
    torch.manual_seed(0)
    net = space().build_eval_network(g, C=4, layers=4, num_classes=10, auxiliary=False, dropout=0.5)
    plain = space().build_eval_network(g, C=4, layers=4, num_classes=10, auxiliary=False)
    plain.load_state_dict(net.state_dict())
    net.classifier.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    plain.classifier.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    x = torch.randn(32, 3, 16, 16)
    net.train()(x), plain.train()(x)
    ratio = seen[0] / seen[1]
    assert seen[1].abs().min() > 0
    dropped = ratio.abs() < 1e-6
    assert torch.allclose(ratio[~dropped], torch.full_like(ratio[~dropped], 2.0), atol=1e-5)
    assert 0.35 < dropped.float().mean().item() < 0.65
    assert torch.equal(net.eval()(x)[0], plain.eval()(x)[0])
    state = torch.get_rng_state()
    plain.train()(x)
    assert torch.equal(torch.get_rng_state(), state)


def test_paper_recipe_has_the_tf_classifier_dropout():
    from nasbench.config import resolve_final_config

    cfg = resolve_final_config(overrides=["genotype=enas-macro"])
    assert cfg.model.dropout == 0.5 and cfg.model.layers == 24
    assert resolve_final_config(preset="quick", overrides=["genotype=enas-macro"]).model.dropout == 0.0


def test_search_and_train_final_on_real_fashion_mnist(nas_cmd, tmp_path, fashion_available):
    run = tmp_path / "fm"
    common = ["--dataset", "fashion-mnist", "--data-dir", fashion_available, "--channels", "4", "--layers", "4",
              "--no-progress", "--device", "cpu"]
    _nas(nas_cmd, "search", "--algo", "gdas", "--space", SPACE, "--epochs", "1", "--subset", "128",
         "--batch-size", "16", "plots=false", "--out", run, *common)
    g = load_genotype(run / "best.json")
    r = _nas(nas_cmd, "train-final", "--genotype", run, "--preset", "quick", "--epochs", "1", "--subset", "256",
             "data.test_subset=200", "--out", tmp_path / "final", "--json", *common)
    result = json.loads(r.stdout)
    assert result["test_images"] == 200 and result["params"] == _eval_params(g, 4, 10, in_ch=1)
