"""The NAS-Bench-201 space: ops, the two networks' sizes against the official code's, the benchmark's
architecture string, the derive rule (``none`` kept), random cells, the fast execution against the
reference, and a search by DARTS on the space.

The parameter counts below were obtained by running the official code (AutoDL-Projects, ``xautodl/models``:
``cell_infers.tiny_network.TinyNetwork`` and ``cell_searchs.search_model_darts.TinyNetworkDarts``) on CPU;
the same run checked that this space's networks compute the official ones' outputs exactly (with the
official weights copied in, both executions of the search network, train and eval mode).
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn

from nasbench.errors import ConfigError, GenotypeError
from nasbench.spaces.base import CellWeights, SupernetSpec, create_space
from nasbench.spaces.edges import MixedOp
from nasbench.spaces.genotypes import genotype_from_dict, parse_text, save_genotype, load_genotype
from nasbench.spaces.nas_bench_201 import NasBench201Space
from nasbench.spaces.nas_bench_201.genotype import Nb201Genotype
from nasbench.spaces.nas_bench_201.ops import PRIMITIVES, build_op, eval_op, search_op

EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
MIXED = "|nor_conv_1x1~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|none~0|nor_conv_1x1~1|avg_pool_3x3~2|"
# node 1 feeds only 'none' edges; node 2 does not reach the output either
DEAD_NODES = "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|nor_conv_3x3~0|none~1|none~2|"

# parameters of the official TinyNetwork (C=16, N=5, 10 classes) with these cells, from the official code
OFFICIAL_EVAL_PARAMS = {ALL_SKIP: 73_306, ALL_NONE: 73_306, EXAMPLE: 1_288_506, MIXED: 372_346}
# weights (get_weights(), α excluded) of the official TinyNetworkDarts(C, N, max_nodes=4, classes,
# NAS-Bench-201 ops, affine=False), either track_running_stats, by (C, N, classes)
OFFICIAL_SEARCH_WEIGHTS = {(16, 5, 10): 1_692_826, (4, 1, 3): 25_271}


@pytest.fixture()
def space() -> NasBench201Space:
    return create_space("nas-bench-201")


def mixed_supernet(space, C=4, N=1, num_classes=3, in_channels=3, track=True, execution="reference"):
    spec = SupernetSpec(C, N, num_classes, space.all_ops(), in_channels, {"track_running_stats": track})
    return spec, space.build_supernet(spec, lambda C, s, ops: MixedOp(C, s, ops, space.search_op),
                                      execution=execution)


# ---------------------------------------------------------------------------------------------- ops
@pytest.mark.parametrize("name", PRIMITIVES)
def test_every_op_keeps_the_shape(name):
    x = torch.randn(2, 4, 6, 6)
    for op in (search_op(name, 4, 1), eval_op(name, 4)):
        assert op(x).shape == x.shape
    assert build_op(name if name not in ("none", "skip_connect") else "avg_pool_3x3", 4, 8, 1, True)(x).shape \
        == (2, 8, 6, 6)


def test_ops_follow_the_official_definitions():
    s, e = search_op("nor_conv_3x3", 4, 1), eval_op("nor_conv_3x3", 4)
    assert isinstance(s[0], nn.ReLU) and s[1].bias is not None and not s[2].affine  # bias = not affine
    assert e[1].bias is None and e[2].affine and e[2].track_running_stats
    assert e[1].kernel_size == (3, 3) and eval_op("nor_conv_1x1", 4)[1].kernel_size == (1, 1)
    pool = eval_op("avg_pool_3x3", 4)
    assert pool.preprocess is None and not pool.pool.count_include_pad
    assert not list(pool.parameters()) and not list(search_op("skip_connect", 4, 1).parameters())
    x = torch.randn(1, 4, 5, 5)
    assert torch.equal(search_op("skip_connect", 4, 1)(x), x)
    assert torch.equal(search_op("none", 4, 1)(x), torch.zeros_like(x))
    with pytest.raises(ValueError, match="no strided edges"):
        search_op("nor_conv_3x3", 4, 2)


# ---------------------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("arch", list(OFFICIAL_EVAL_PARAMS))
def test_evaluation_network_has_the_official_parameter_count(space, arch):
    assert space.reference_params(space.parse_text(arch)) == OFFICIAL_EVAL_PARAMS[arch]


def test_all_skip_cell_has_73306_parameters(space):
    net = space.build_eval_network(space.parse_text(ALL_SKIP), C=16, layers=5, num_classes=10, auxiliary=False)
    assert sum(p.numel() for p in net.parameters()) == 73_306


@pytest.mark.parametrize("C, N, classes", [(16, 5, 10), (4, 1, 3)])
def test_search_network_has_the_official_weight_count(space, C, N, classes):
    _, net = mixed_supernet(space, C=C, N=N, num_classes=classes)
    assert sum(p.numel() for p in net.parameters()) == OFFICIAL_SEARCH_WEIGHTS[C, N, classes]
    assert sum(isinstance(m, nn.BatchNorm2d) and not m.affine for m in net.modules()) == 3 * N * 6 * 2


# ---------------------------------------------------------------------------------------------- the string
def test_the_example_string_is_read_to_its_nodes(space):
    g = space.parse_text(EXAMPLE)
    assert g.nodes == ((("nor_conv_3x3", 0),),
                       (("nor_conv_3x3", 0), ("nor_conv_3x3", 1)),
                       (("skip_connect", 0), ("nor_conv_3x3", 1), ("nor_conv_3x3", 2)))
    assert g.space == "nas-bench-201" and space.format_text(g) == EXAMPLE == space.short(g)
    assert parse_text("  " + EXAMPLE + "\n") == g  # the text is routed to this space by its leading bar
    assert space.claims_text(EXAMPLE) and not space.claims_text("Genotype(normal=[])")
    # a node's pairs may come in any order; they are written by input
    shuffled = "|nor_conv_3x3~0|+|nor_conv_3x3~1|nor_conv_3x3~0|+|nor_conv_3x3~2|skip_connect~0|nor_conv_3x3~1|"
    assert space.parse_text(shuffled) == g


@pytest.mark.parametrize("seed", range(20))
def test_string_and_json_round_trip(space, seed, tmp_path):
    g = space.random_genotype(seed).with_meta(algo="darts", epoch=3)
    assert space.parse_text(space.format_text(g)) == g
    d = json.loads(json.dumps(g.to_dict()))
    assert d["arch"] == space.format_text(g) and d["space"] == "nas-bench-201" and d["epoch"] == 3
    back = genotype_from_dict(d)
    assert back == g and back.meta["algo"] == "darts"
    assert genotype_from_dict({"space": "nas-bench-201", "arch": d["arch"]}) == g
    assert genotype_from_dict({"space": "nas-bench-201", "nodes": d["nodes"]}) == g
    assert load_genotype(save_genotype(g, tmp_path / "g.json")) == g
    (tmp_path / "g.txt").write_text(space.format_text(g) + "\n")
    assert load_genotype(tmp_path / "g.txt") == g


@pytest.mark.parametrize("text, message", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "has 2 nodes; a nas-bench-201 cell has 3"),
    (EXAMPLE + "+|none~0|", "has 4 nodes"),
    ("", "is empty"),
    ("|conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1: unknown op 'conv_3x3'; ops: none, "),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1: input 1 is out of range; node 1 takes inputs 0..0"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~3|", "node 3: input 3 is out of range"),
    ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "node 2: input 0 appears twice"),
    ("|none~0|+|none~0|none~1|+|none~0|none~2|", "node 3: no op for input 1"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none|", "node 3: 'none' is not op~input"),
    ("|none~0|+|none~0|none~x|+|none~0|none~1|none~2|", "node 2: the input of 'none~x' is not a state index"),
    ("|none~0|+|none~0||none~1|+|none~0|none~1|none~2|", "node 2: an empty entry"),
    ("|none~0|+none~0|none~1|+|none~0|none~1|none~2|", "node 2: 'none~0|none~1|' must be op~input entries"),
])
def test_malformed_strings_are_one_precise_line(space, text, message):
    with pytest.raises(GenotypeError) as e:
        space.parse_text(text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_non_strings_and_bad_objects_are_genotype_errors(space):
    with pytest.raises(GenotypeError, match="must be a str, got int"):
        space.parse_text(3)
    with pytest.raises(GenotypeError, match="not a nas-bench-201 genotype"):
        space.validate("|none~0|")
    with pytest.raises(GenotypeError, match="node 2: expected an \\(op name, input index\\) pair"):
        space.validate(Nb201Genotype(nodes=((("none", 0),), (("none", 0), ("none", True)), ())))
    with pytest.raises(GenotypeError, match="has 2 nodes"):
        genotype_from_dict({"space": "nas-bench-201", "nodes": [[["none", 0]], [["none", 0], ["none", 1]]]})
    with pytest.raises(GenotypeError, match="'arch' or 'nodes'|needs 'arch'"):
        genotype_from_dict({"space": "nas-bench-201"})
    with pytest.raises(GenotypeError, match="describe different cells"):
        genotype_from_dict({"space": "nas-bench-201", "arch": ALL_SKIP, "nodes": space.parse_text(ALL_NONE).to_dict()["nodes"]})


def test_validate_accepts_every_cell_and_meta_is_not_compared(space):
    g = space.parse_text(ALL_NONE)
    assert space.validate(g) is g
    assert g.with_meta(algo="x") == g and hash(g.with_meta(algo="x")) == hash(g)
    assert g != space.parse_text(ALL_SKIP)


# ---------------------------------------------------------------------------------------------- derive, random
def test_derive_keeps_none_and_breaks_ties_by_the_first_op(space):
    ops = space.all_ops()["cell"]
    W = torch.full((6, 5), 0.1)
    W[0, 0] = 0.9                        # 'none' strongest: kept
    W[1, :] = 0.2                        # a five-way tie: the first op ('none')
    W[2, 2] = W[2, 3] = 0.5              # nor_conv_1x1 ties nor_conv_3x3: the first
    W[3, 4] = 0.6
    W[4, 1] = 0.3
    W[5, 3] = 0.7
    cell = space.derive_cell(torch.softmax(W, -1), ops)
    assert cell == [("none", 0), ("none", 0), ("nor_conv_1x1", 1), ("avg_pool_3x3", 0), ("skip_connect", 1),
                    ("nor_conv_3x3", 2)]
    g = space.make_genotype({"cell": cell}, meta={"algo": "darts"})
    assert space.format_text(g) == ("|none~0|+|none~0|nor_conv_1x1~1|+|avg_pool_3x3~0|skip_connect~1|"
                                    "nor_conv_3x3~2|") and g.meta == {"algo": "darts"}


def test_derive_works_on_pruned_candidates(space):
    ops = (("skip_connect", "nor_conv_3x3"),) * 6
    W = torch.tensor([[0.4, 0.6]] * 6)
    assert [op for op, _ in space.derive_cell(W, ops)] == ["nor_conv_3x3"] * 6


def test_random_genotypes_are_valid_seeded_and_cover_the_ops(space):
    gs = [space.random_genotype(seed) for seed in range(200)]
    for g in gs:
        space.validate(g)
    assert space.random_genotype(7) == gs[7] and space.random_genotype(7).meta["source"] == "random (seed 7)"
    assert len(set(gs)) > 190
    rng = random.Random(7)  # uniform over the 5^6 cells: each edge's op drawn in edge order
    assert [op for op, _, _ in gs[7].edges] == [rng.choice(PRIMITIVES) for _ in range(6)]
    seen = {op for g in gs for op, _, _ in g.edges}
    assert seen == set(PRIMITIVES)


# ---------------------------------------------------------------------------------------------- eval network
def test_eval_network_on_one_channel_images(space):
    net = space.build_eval_network(space.parse_text(MIXED), C=4, layers=1, num_classes=7, auxiliary=False,
                                   in_channels=1)
    net.drop_path_prob = 0.1  # train-final sets it on every network: accepted, no drop-path
    logits, aux = net(torch.randn(3, 1, 16, 16))
    assert logits.shape == (3, 7) and aux is None
    net.eval()
    assert net(torch.randn(2, 1, 16, 16))[0].shape == (2, 7)


def test_eval_network_refuses_auxiliary_and_imagenet(space):
    g = space.parse_text(EXAMPLE)
    with pytest.raises(ConfigError, match="no auxiliary head; set model.auxiliary=false"):
        space.build_eval_network(g, C=4, layers=1, num_classes=10, auxiliary=True)
    with pytest.raises(ConfigError, match="no ImageNet network"):
        space.build_eval_network(g, C=4, layers=1, num_classes=10, auxiliary=False, imagenet=True)


@pytest.mark.parametrize("arch", [DEAD_NODES, ALL_NONE, EXAMPLE])
def test_every_parameter_gets_a_gradient(space, arch):
    """'none' multiplies by zero inside the graph, so no parameter is left without a gradient (DDP)."""
    g = space.parse_text(arch)
    assert space.unused_parameters(g) is False
    net = space.build_eval_network(g, C=4, layers=1, num_classes=3, auxiliary=False)
    net(torch.randn(2, 3, 8, 8))[0].sum().backward()
    assert all(p.grad is not None for p in net.parameters())


# ---------------------------------------------------------------------------------------------- display
def test_describe_short_dot_and_state_names(space):
    g = space.parse_text(EXAMPLE)
    header, rows = space.describe(g)
    assert header == ["node", "cell"] and len(rows) == 3
    assert rows[0] == ["1", "nor_conv_3x3~0"] and rows[2][0] == "3 (out)"
    assert rows[2][1] == "skip_connect~0, nor_conv_3x3~1, nor_conv_3x3~2"  # as in the architecture string
    assert [space.state_name(i) for i in range(4)] == ["in", "1", "2", "3"]
    dots = space.dot(space.parse_text(MIXED))
    assert list(dots) == ["cell"]
    dot = dots["cell"]
    assert dot.startswith('digraph "cell" {') and dot.count(" -> ") == 6
    assert '"in" -> "3" [label="none", style=dashed' in dot and '"2" -> "3" [label="avg_pool_3x3"' in dot


def test_collapse_figures_and_warnings(space):
    figures, warning = space.collapse(space.parse_text(EXAMPLE))
    assert figures == {"cell_parameter_free": 1, "cell_none": 0, "cell_skip_connect": 1} and warning is None
    figures, warning = space.collapse(space.parse_text(ALL_SKIP))
    assert figures["cell_parameter_free"] == 6 and "parameter-free ops dominate" in warning
    _, warning = space.collapse(space.parse_text("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"))
    assert "always zero" in warning
    assert space.collapse(space.parse_text(DEAD_NODES))[1] is None  # in → 3 directly


# ---------------------------------------------------------------------------------------------- supernet
BIASES_BEFORE_BN = {f"cells.{c}.edges.{e}.ops.{k}.1.bias" for c in (0, 2, 4) for e in range(6) for k in (2, 3)}
"""The search ops' conv biases (N=1: cells 0, 2, 4; ops nor_conv_1x1, nor_conv_3x3), each followed by BN."""


def _grads(net, w_alpha, weights_of, x, y):
    loss = nn.functional.cross_entropy(net(x, weights_of(w_alpha)), y)
    return torch.autograd.grad(loss, [*net.parameters(), w_alpha], allow_unused=True)


@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("edge_scale", [False, True])
def test_fast_execution_equals_the_reference(space, one_thread, track, edge_scale):
    torch.manual_seed(0)
    spec, ref = mixed_supernet(space, C=4, N=1, track=track)
    _, fast = mixed_supernet(space, C=4, N=1, track=track, execution="fast")
    fast.load_state_dict(ref.state_dict())
    alpha = (0.5 * torch.randn(6, 5)).requires_grad_()
    scale = torch.softmax(torch.randn(6), 0) if edge_scale else None

    def weights_of(a):
        return {"cell": CellWeights(torch.softmax(a, -1), scale)}

    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))
    with torch.no_grad():
        assert torch.allclose(fast(x, weights_of(alpha)), ref(x, weights_of(alpha)), rtol=1e-5, atol=1e-6)
    g_ref, g_fast = _grads(ref, alpha, weights_of, x, y), _grads(fast, alpha, weights_of, x, y)
    names = [n for n, _ in ref.named_parameters()] + ["alpha"]
    total = torch.cat([g.flatten() for g in g_ref]).norm()
    for name, a, b in zip(names, g_ref, g_fast):
        if name in BIASES_BEFORE_BN:  # zero in exact arithmetic (the BN removes the mean): rounding noise only,
            assert a.norm() <= 1e-5 * total and b.norm() <= 1e-5 * total, name  # against all the gradients
        else:
            assert (a - b).norm() <= 1e-5 * a.norm(), name
    for b1, b2 in zip(ref.buffers(), fast.buffers()):
        assert torch.allclose(b1.float(), b2.float(), rtol=1e-5, atol=1e-6)
    ref.eval(), fast.eval()
    with torch.no_grad():
        assert torch.allclose(fast(x, weights_of(alpha)), ref(x, weights_of(alpha)), rtol=1e-5, atol=1e-6)


def test_fast_execution_takes_decided_and_pruned_edges(space, one_thread):
    torch.manual_seed(0)
    _, ref = mixed_supernet(space)
    _, fast = mixed_supernet(space, execution="fast")
    fast.load_state_dict(ref.state_dict())
    w = {"cell": CellWeights([3, None, 0, 4, 1, 2])}  # op indices, one pruned edge, a decided 'none'
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(fast(x, w), ref(x, w), rtol=1e-5, atol=1e-6)
    w = {"cell": CellWeights([None] * 6)}  # a cell of nothing computes zeros
    assert torch.allclose(fast(x, w), ref(x, w))


def test_memory_efficient_gives_the_same_gradients(space, one_thread):
    torch.manual_seed(0)
    _, ref = mixed_supernet(space, execution="fast")
    torch.manual_seed(0)
    _, mem = mixed_supernet(space, execution="fast")
    mem.set_execution("fast", memory_efficient=True)
    alpha = torch.randn(6, 5).requires_grad_()

    def weights_of(a):
        return {"cell": CellWeights(torch.softmax(a, -1))}

    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2,))
    for a, b in zip(_grads(ref, alpha, weights_of, x, y), _grads(mem, alpha, weights_of, x, y)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_untracked_batchnorm_has_no_running_statistics(space):
    _, net = mixed_supernet(space, track=False)
    cell_bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d) and not m.affine]
    assert cell_bns and all(not m.track_running_stats and m.running_mean is None for m in cell_bns)
    assert net.stem[1].track_running_stats  # only the cells' ops follow the option, as in the official code
    net.eval()
    out = net(torch.randn(2, 3, 8, 8), {"cell": CellWeights(torch.softmax(torch.randn(6, 5), -1))})
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------- strategies
NB201 = ["model.space=nas-bench-201", "data.dataset=synthetic", "model.channels=4", "model.layers=1"]


def test_darts_searches_the_space(one_thread):
    from nasbench.algorithms.base import create_strategy
    from nasbench.config import resolve_search_config

    cfg = resolve_search_config("darts", overrides=NB201)
    s = create_strategy("darts", cfg)
    spec = s.supernet_spec(num_classes=3, in_channels=3)
    assert spec.options == {"track_running_stats": True} and spec.layers == 1
    net = s.build_supernet(spec, execution="fast")
    s.init_arch_params(spec, torch.device("cpu"))
    assert list(s.arch) == ["alpha_cell"] and s.alpha("cell").shape == (6, 5)
    assert s.forward(net, torch.randn(2, 3, 8, 8)).shape == (2, 3)
    g = s.derive()
    assert isinstance(g, Nb201Genotype) and create_space("nas-bench-201").validate(g) is g
    assert g.meta["algo"] == "darts"


def test_the_space_brings_its_sizes():
    assert NasBench201Space.model_defaults == {"model.layers": 5, "model.channels": 16}
    assert NasBench201Space.search_defaults("darts", "paper")["model.layers"] == 5
    assert NasBench201Space.final_defaults("paper")["model.auxiliary"] is False


def test_a_search_and_its_training_end_to_end(tmp_path, one_thread):
    from nasbench.config import resolve_final_config, resolve_search_config
    from nasbench.final.train import train_final
    from nasbench.search.trainer import search

    data = ["data.dataset=synthetic", "data.image_size=8", "data.num_train=32", "data.num_test=16",
            "data.num_classes=3", "model.channels=4", "model.layers=1", "batch_size=8", "device=cpu"]
    cfg = resolve_search_config("darts", overrides=["model.space=nas-bench-201", *data, "epochs=1",
                                                    f"out={tmp_path / 'search'}"])
    run, g = search(cfg, show_progress=False)
    assert isinstance(g, Nb201Genotype) and load_genotype(run.best_path) == g
    record = json.loads(run.metrics_path.read_text().splitlines()[-1])
    assert record["genotype"]["arch"] == g.arch_str() and "cell_parameter_free" in record
    fcfg = resolve_final_config(overrides=[f"genotype={run.best_path}", *data, "epochs=1", f"out={tmp_path / 'final'}"])
    assert fcfg.model.auxiliary is False and fcfg.model.drop_path_prob == 0.0  # the space's recipe
    _, result = train_final(fcfg, show_progress=False)
    net = create_space("nas-bench-201").build_eval_network(g, C=4, layers=1, num_classes=3, auxiliary=False)
    assert result["params"] == sum(p.numel() for p in net.parameters())


def test_gdas_derives_by_the_space_rule(one_thread):
    """GDAS's pair rule needs nodes that keep some edges; here every edge stays, and 'none' counts, as in the
    official GDAS on NAS-Bench-201."""
    from nasbench.algorithms.base import create_strategy
    from nasbench.config import resolve_search_config

    s = create_strategy("gdas", resolve_search_config("gdas", overrides=NB201))
    spec = s.supernet_spec(num_classes=3, in_channels=3)
    s.init_arch_params(spec, torch.device("cpu"))
    alpha = torch.zeros(6, 5)
    alpha[:, 0] = 5.0  # 'none' strongest everywhere
    alpha[4, 2:4] = 1.0  # edge 3←1: two strong ops
    with torch.no_grad():
        s.alpha("cell").copy_(alpha)
    g = s.derive()
    assert g == create_space("nas-bench-201").parse_text(ALL_NONE)
