"""The DARTS search space and the shared supernet: op definitions, shapes, the weight count."""

import pytest
import torch
from torch import nn

from nasbench.algorithms.base import create_strategy
from nasbench.config import resolve_search_config
from nasbench.engine.measure import count_weights
from nasbench.spaces.base import CellWeights, SupernetSpec, Topology
from nasbench.spaces.darts import DartsSpace
from nasbench.spaces.darts.ops import OPS, PRIMITIVES, FactorizedReduce, Identity, Zero, search_op
from nasbench.spaces.darts.supernet import Supernet
from nasbench.spaces.edges import MixedOp


def test_primitives_in_the_darts_order():
    assert PRIMITIVES == ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                          "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride", [1, 2])
def test_op_shapes(name, stride):
    C = 8
    op = OPS[name](C, stride, False)
    y = op(torch.randn(2, C, 16, 16))
    assert y.shape == (2, C, 16 // stride, 16 // stride)


def test_ops_have_no_conv_bias_and_the_right_structure():
    C = 6
    sep = OPS["sep_conv_3x3"](C, 2, True)
    convs = [m for m in sep.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(c.bias is None for c in convs)
    assert convs[0].stride == (2, 2) and convs[2].stride == (1, 1)  # stride on the first block only
    assert convs[0].groups == C and convs[1].kernel_size == (1, 1)
    dil = OPS["dil_conv_5x5"](C, 1, True)
    convs = [m for m in dil.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and convs[0].dilation == (2, 2) and convs[0].padding == (4, 4)
    assert isinstance(OPS["skip_connect"](C, 1, True), Identity)
    assert isinstance(OPS["skip_connect"](C, 2, True), FactorizedReduce)
    assert isinstance(OPS["none"](C, 2, True), Zero)


def test_avg_pool_does_not_count_padding():
    pool = OPS["avg_pool_3x3"](1, 1, False)
    y = pool(torch.ones(1, 1, 4, 4))
    assert torch.allclose(y, torch.ones_like(y))  # corners average 4 real pixels, not 9 with zeros


def test_none_is_zeros_of_the_output_shape():
    y = OPS["none"](3, 2, False)(torch.randn(2, 3, 8, 8))
    assert y.shape == (2, 3, 4, 4) and not y.any()


def test_search_pools_get_a_non_affine_batchnorm():
    op = search_op("max_pool_3x3", 4, 1)
    assert isinstance(op, nn.Sequential) and isinstance(op[1], nn.BatchNorm2d) and not op[1].affine
    sep = search_op("sep_conv_3x3", 4, 1)
    assert all(not m.affine for m in sep.modules() if isinstance(m, nn.BatchNorm2d))


def test_edge_indexing():
    topo = DartsSpace().topology
    assert topo.num_edges == 14 and topo.decisions == 8 and topo.output == (2, 3, 4, 5)
    assert [topo.edge_index(0, 0), topo.edge_index(0, 1), topo.edge_index(1, 0), topo.edge_index(3, 4)] == [0, 1, 2, 13]
    assert [list(r) for r in topo.node_slices()] == [[0, 1], [2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12, 13]]
    assert topo.sources(2) == [0, 1, 2, 3] and topo.edges[13] == (3, 4)


def test_supernet_weight_count_matches_the_darts_code():
    """The DARTS code's search network at C=16, 8 layers, 10 classes has 1,930,618 weights."""
    cfg = resolve_search_config("darts", overrides=["data.dataset=synthetic"])
    s = create_strategy("darts", cfg)
    net = s.build_supernet(s.supernet_spec(10, 3))
    assert count_weights(net) == 1_930_618


DARTS_CELL = Topology.dense(n_inputs=2, nodes=4, keep=2, output=(2, 3, 4, 5))


def _tiny_spec(reduce: bool = True, **kw):
    ops = tuple(PRIMITIVES for _ in range(14))
    base = dict(C=4, layers=3, num_classes=5, edge_ops={"normal": ops, **({"reduce": ops} if reduce else {})})
    base.update(kw)
    return SupernetSpec(**base)


def darts_edge(C, stride, ops):
    return MixedOp(C, stride, ops, search_op)


def test_supernet_reduction_cells_and_shapes():
    net = Supernet(_tiny_spec(layers=5), darts_edge, DARTS_CELL)
    assert net.cell_types == ["normal", "reduce", "normal", "reduce", "normal"]
    w = {t: CellWeights(torch.softmax(torch.randn(14, 8), -1)) for t in ("normal", "reduce")}
    assert net(torch.randn(2, 3, 16, 16), w).shape == (2, 5)


def test_mixed_op_is_the_weighted_sum_of_its_ops():
    torch.manual_seed(0)
    m = MixedOp(4, 1, PRIMITIVES, search_op).eval()
    x = torch.randn(2, 4, 8, 8)
    w = torch.softmax(torch.randn(8), -1)
    expected = sum(w[k] * m.ops[k](x) for k in range(8))
    assert torch.allclose(m(x, w), expected, atol=1e-6)
    assert torch.equal(m(x, 4), m.ops[4](x))  # a decided edge computes only its op
    assert m(x, None) is None  # a pruned edge computes nothing


def test_cell_node_is_the_sum_over_all_earlier_states():
    """Node 0 = e0(s0) + e1(s1), with edge outputs scaled by the optional edge weights."""
    torch.manual_seed(0)
    spec = _tiny_spec(reduce=False, layers=1)
    calls = []

    class Recorder(nn.Module):
        def __init__(self, C, stride, ops):
            super().__init__()
            self.k = len(calls)
            calls.append(self.k)

        def forward(self, x, w):
            return x * w

    from nasbench.spaces.darts.supernet import SearchCell

    cell = SearchCell(4, 4, 4, False, False, spec.ops("normal"), Recorder, DARTS_CELL)
    s0, s1 = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    ops_w = [float(e + 1) for e in range(14)]
    scale = torch.arange(14, dtype=torch.float32) + 0.5
    out = cell(s0, s1, CellWeights(ops_w, scale))
    p0, p1 = cell.preprocess0(s0), cell.preprocess1(s1)
    node0 = 1.0 * 0.5 * p0 + 2.0 * 1.5 * p1
    assert torch.allclose(out[:, :4], node0, atol=1e-6)
    assert len(calls) == 14


def test_auto_memory_format_avoids_channels_last_where_pytorch_cpu_convs_crash():
    from nasbench.engine.device import channels_last_unsafe, memory_format

    wide = Supernet(_tiny_spec(C=16), darts_edge, DARTS_CELL)
    narrow = Supernet(_tiny_spec(C=2), darts_edge, DARTS_CELL)  # skip_connect at stride 2: 1×1 stride-2 convs on 4 channels
    assert not channels_last_unsafe(wide) and channels_last_unsafe(narrow)
    cpu = torch.device("cpu")
    assert memory_format("auto", cpu, wide) == torch.channels_last
    assert memory_format("auto", cpu, narrow) == torch.channels_last  # its unsafe convs now run NCHW
    assert memory_format("auto", torch.device("cuda"), wide) == torch.contiguous_format
    assert memory_format("channels_last", cpu, narrow) == torch.channels_last


def test_parameter_free_share_of_every_space():
    """The share of weightless ops among a genotype's chosen ops (the study's "param-free" column), counted by
    hand for one genotype of each space."""
    from nasbench.spaces.genotypes import load_genotype, parse_text, space_of

    darts = load_genotype("darts-v2")  # normal: 2 skip_connect of 8; reduce: 5 max_pool_3x3 + 3 skip_connect
    nb201 = parse_text("|none~0|+|skip_connect~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|")
    macro = load_genotype("random:0", "enas-macro")
    micro = load_genotype("enas-micro")
    micro_ops = [op for cell in (micro.normal, micro.reduce) for node in cell for op, _ in node]
    expected = {
        "darts": (2 + 8) / 16,
        "nas-bench-201": 4 / 6,
        "enas-macro": 0.0,  # every branch has weights (a pool branch starts with a 1×1 conv)
        "enas-micro": sum(op in ("avg_pool_3x3", "max_pool_3x3", "skip_connect") for op in micro_ops) / 20,
    }
    for g in (darts, nb201, macro, micro):
        assert space_of(g).parameter_free_share(g) == pytest.approx(expected[g.space]), g.space
    assert 0 < expected["enas-micro"] < 1
