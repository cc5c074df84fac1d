"""The NAS-Bench-201 cell space (Dong and Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural
Architecture Search", ICLR 2020), as its official code (AutoDL-Projects) defines it.

A cell has one input (the previous cell's output) and three nodes, each summing one op on every earlier
state (6 edges, :meth:`~nasbench.spaces.base.Topology.dense`); its output is the last node. Five candidate
ops per edge (:mod:`.ops`), ``none`` among them: a derived cell keeps every edge with its strongest op,
``none`` included, so the space holds 5^6 = 15,625 cells. One cell type, ``"cell"``, shared by every cell
of the network. Modules: :mod:`.ops` (operations), :mod:`.genotype` (the genotype type and the benchmark's
architecture string), :mod:`.supernet` (search network, reference and fast executions), :mod:`.network`
(evaluation network), :mod:`.graph` (the cell as a DOT graph).

``model.layers`` is N, the cells per stage: both networks have three stages of N cells (C, 2C, 4C
channels) with a residual block between two stages, so 3N cells and 2 blocks (the benchmark: N=5, C=16).
The DARTS-space keys ``model.steps``, ``model.multiplier``, ``model.stem_multiplier`` and
``model.final_bn_relu`` do not apply (the search network always ends with BN-ReLU, as the official one).
The search cells' BatchNorm tracks running statistics unless ``nb201.track_running_stats`` is false
(the official ``--track_running_stats``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional

from torch import nn

from nasbench.errors import ConfigError, GenotypeError
from nasbench.registry import register_space
from nasbench.spaces.base import EdgeFactory, EdgeOps, SearchSpace, SupernetSpec, Topology
from nasbench.spaces.nas_bench_201 import genotype as geno
from nasbench.spaces.nas_bench_201.ops import NODES, PARAMETER_FREE, PRIMITIVES, search_op

NAME = "nas-bench-201"

_OFFICIAL_SEARCH = {  # configs/nas-benchmark/algos/{DARTS,GDAS}.config and the NAS-Bench-201-algos scripts
    "batch_size": 64,
    "optim.lr": 0.025,
    "optim.lr_min": 0.001,
    "optim.momentum": 0.9,
    "optim.nesterov": True,
    "optim.weight_decay": 5e-4,
    "optim.grad_clip": 5.0,
    "arch_optim.lr": 3e-4,
    "arch_optim.betas": [0.5, 0.999],
    "arch_optim.weight_decay": 1e-3,
}
_OFFICIAL_EPOCHS = {"darts": 50, "gdas": 240}  # DARTS.config, GDAS.config

_CARRIED_OVER: dict[str, dict[str, Any]] = {
    # no official NAS-Bench-201 code: the algorithm's own settings at the benchmark's size, and its stages
    # shaped for 5 ops and N cells per stage (1, 3, 5: the last stage at the benchmark's depth)
    "p-darts": {"p_darts.layers": 1, "p_darts.add_layers": [0, 2, 4], "p_darts.num_to_keep": [3, 2, 1]},
}


@register_space(NAME)
class NasBench201Space(SearchSpace):
    name = NAME
    description = "NAS-Bench-201 cell: 5 ops, 3 nodes, 6 edges, 'none' kept (Dong & Yang, 2020)"
    primitives = PRIMITIVES
    zero_op = "none"
    parameter_free = PARAMETER_FREE
    cell_types = ("cell",)
    fixed_cell_types = frozenset()
    executions = ("fast", "reference")
    eval_drop_path = False
    reference_size: ClassVar[Mapping[str, int]] = {"C": 16, "layers": 5, "num_classes": 10}

    final_recipe = NAME  # the benchmark's own training recipe (final_defaults), not a paper's --recipe
    model_defaults: ClassVar[Mapping[str, Any]] = {"model.layers": 5, "model.channels": 16}
    """The benchmark's network size: N=5 cells per stage, C=16 (search and evaluation)."""

    @dataclass
    class Config:
        """The ``nb201`` config section."""

        track_running_stats: bool = True  # the search cells' BatchNorm keeps running statistics (official BN=1)

    config_section: ClassVar[Optional[str]] = "nb201"

    @classmethod
    def search_defaults(cls, algo: str, preset: str) -> Mapping[str, Any]:
        """The benchmark's size; for DARTS and GDAS (``paper``) also the official search settings."""
        if preset == "quick":
            quick: dict[str, Any] = {"model.layers": 2}
            if algo == "p-darts":
                quick["p_darts.add_layers"] = [0, 1, 1]
            return quick
        d: dict[str, Any] = dict(cls.model_defaults)
        if algo in _OFFICIAL_EPOCHS:
            d.update(_OFFICIAL_SEARCH, epochs=_OFFICIAL_EPOCHS[algo])
        d.update(_CARRIED_OVER.get(algo, {}))
        if algo == "gdas":  # the official cell's edge also sums the unsampled ops' hard weights
            d["gdas.hard_weight_sum"] = True
        return d

    def step_order(self, algo: str, cfg: Any) -> Optional[str]:
        """The official first-order DARTS on NAS-Bench-201 (exps/algos/DARTS-V1.py) steps the weights first;
        its second order (DARTS-V2.py), like GDAS's own order, is unchanged."""
        if algo == "darts" and not cfg.get("darts", {}).get("unrolled", False):
            return "weights_first"
        return None

    @classmethod
    def final_defaults(cls, preset: str) -> Mapping[str, Any]:
        """The benchmark's training recipe (configs/nas-benchmark/hyper-opts/200E.config): 200 epochs, batch
        256, SGD-Nesterov lr 0.1 cosine to 0, weight decay 5e-4, no cutout, no auxiliary head, no drop-path,
        no gradient clipping."""
        if preset == "quick":
            return {"model.layers": 2, "model.auxiliary": False, "model.drop_path_prob": 0.0}
        return {**cls.model_defaults, "epochs": 200, "batch_size": 256, "model.auxiliary": False,
                "model.drop_path_prob": 0.0, "optim.lr": 0.1, "optim.lr_min": 0.0, "optim.schedule": "cosine",
                "optim.momentum": 0.9, "optim.nesterov": True, "optim.weight_decay": 5e-4, "optim.grad_clip": 0.0,
                "data.cutout": 0}

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        m = cfg.model
        if m.layers < 1:
            raise ConfigError(f"model.layers is the cells per stage of the {NAME} network and must be at least 1, "
                              f"got {m.layers}")
        if m.channels < 1:
            raise ConfigError(f"model.channels must be at least 1, got {m.channels}")

    @property
    def topology(self) -> Topology:
        return Topology.dense(n_inputs=1, nodes=NODES, keep=None, output=(NODES,))

    # ------------------------------------------------------------------ networks
    def search_op(self, name: str, C: int, stride: int) -> nn.Module:
        return search_op(name, C, stride)

    def supernet_spec(self, num_classes: int, in_channels: int, edge_ops: Mapping[str, EdgeOps], *,
                      C: Optional[int] = None, layers: Optional[int] = None) -> SupernetSpec:
        spec = super().supernet_spec(num_classes, in_channels, edge_ops, C=C, layers=layers)
        section = self.cfg.get("nb201", None) if hasattr(self.cfg, "get") else None
        track = True if section is None else bool(section.get("track_running_stats", True))
        return SupernetSpec(spec.C, spec.layers, spec.num_classes, spec.edge_ops, spec.in_channels,
                            {"track_running_stats": track})

    def build_supernet(self, spec: SupernetSpec, make_edge: EdgeFactory, *, execution: str = "reference",
                       memory_efficient: bool = False) -> nn.Module:
        from nasbench.spaces.nas_bench_201.supernet import Supernet

        return Supernet(spec, make_edge, self.topology).set_execution(execution, memory_efficient)

    def build_eval_network(self, genotype: Any, *, C: int, layers: int, num_classes: int, auxiliary: bool,
                           in_channels: int = 3, imagenet: bool = False, dropout: float = 0.0,
                           drop_path_by_layer: bool = False) -> nn.Module:
        """The benchmark's ``TinyNetwork`` with N = ``layers`` cells per stage. It has no auxiliary head and
        no ImageNet variant: ``auxiliary=True`` or ``imagenet=True`` is a ConfigError."""
        from nasbench.spaces.nas_bench_201.network import TinyNetwork

        if auxiliary:
            raise ConfigError(f"the {NAME} network has no auxiliary head; set model.auxiliary=false")
        if imagenet:
            raise ConfigError(f"the {NAME} space has no ImageNet network (its network is the benchmark's "
                              "CIFAR one); set model.imagenet=false to train that on these images")
        if layers < 1 or C < 1:
            raise ConfigError(f"the {NAME} network needs at least 1 cell per stage and 1 channel, got "
                              f"layers={layers}, C={C}")
        return TinyNetwork(self.validate(genotype), C=C, N=layers, num_classes=num_classes, in_channels=in_channels,
                           dropout=dropout)

    # ------------------------------------------------------------------ derive
    def derive_cell(self, weights: Any, edge_ops: EdgeOps, edge_scale: Any = None,
                    cell_type: Optional[str] = None) -> list[tuple[str, int]]:
        """The official rule: every edge keeps its strongest op, ``none`` included (the first on ties).
        ``edge_scale`` (a positive factor per edge) cannot change an edge's argmax and is ignored."""
        W = weights.detach().double().cpu()
        cell = []
        for e, (_, src) in enumerate(self.topology.edges):
            row = W[e].tolist()
            k = max(range(len(edge_ops[e])), key=lambda c: (row[c], -c))
            cell.append((edge_ops[e][k], src))
        return cell

    # ------------------------------------------------------------------ genotypes
    def make_genotype(self, cells: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None) -> geno.Nb201Genotype:
        return geno.cell_from_edges(cells["cell"], meta)

    def genotype_from_dict(self, d: Mapping[str, Any]) -> geno.Nb201Genotype:
        return geno.Nb201Genotype.from_dict(d)

    def claims_text(self, text: str) -> bool:
        return geno.claims_text(text)

    def parse_text(self, text: str, name: Optional[str] = None) -> geno.Nb201Genotype:
        return geno.parse_text(text, name)

    def format_text(self, genotype: Any) -> str:
        return geno.format_text(self.validate(genotype))

    def validate(self, genotype: Any) -> geno.Nb201Genotype:
        if not isinstance(genotype, geno.Nb201Genotype):
            raise GenotypeError(f"not a {NAME} genotype: {type(genotype).__name__}")
        return geno.validate(genotype)

    def random_genotype(self, seed: int) -> geno.Nb201Genotype:
        return geno.random_genotype(seed)

    def state_name(self, i: int) -> str:
        return geno.state_name(i)

    def short(self, genotype: Any) -> str:
        return geno.format_text(genotype)

    def describe(self, genotype: Any) -> tuple[list[str], list[list[str]]]:
        # the benchmark's own notation, as in its architecture string (the log): op~input
        rows = [[str(i), ", ".join(f"{op}~{j}" for op, j in node)]
                for i, node in enumerate(genotype.nodes, start=1)]
        rows[-1][0] += " (out)"
        return ["node", "cell"], rows

    def notation(self) -> Optional[str]:
        return "op~input: input 0 is the cell input, 1.. the nodes (the benchmark's architecture string)"

    def dot(self, genotype: Any) -> dict[str, str]:
        from nasbench.spaces.nas_bench_201.graph import genotype_dots

        return genotype_dots(genotype)

    def chosen_ops(self, genotype: Any) -> Optional[list[str]]:
        return [op for op, _, _ in genotype.edges]

    def collapse(self, genotype: Any) -> tuple[dict[str, Any], Optional[str]]:
        """Parameter-free edges, ``none`` and ``skip_connect`` edges of the cell; a warning when no edge has
        weights or when nothing reaches the output (the cell computes zeros)."""
        ops = [op for op, _, _ in genotype.edges]
        free = sum(op in PARAMETER_FREE for op in ops)
        nones = ops.count("none")
        skips = ops.count("skip_connect")
        figures = {"cell_parameter_free": free, "cell_none": nones, "cell_skip_connect": skips}
        warning = None
        if 0 not in geno.reaches_output(genotype):
            warning = (f"the cell's output is always zero: no path of edges other than 'none' leads from its input "
                       f"to node {NODES} ({nones} of {len(ops)} edges are 'none')")
        elif free == len(ops):
            warning = (f"every edge of the cell is parameter-free ({skips} skip_connect, {nones} none, "
                       f"{ops.count('avg_pool_3x3')} avg_pool_3x3): parameter-free ops dominate (the known "
                       "DARTS collapse)")
        return figures, warning

    def unused_parameters(self, genotype: Any) -> bool:
        """Never: the evaluation network runs every edge and a ``none`` edge multiplies its input by zero, so
        every state stays in the autograd graph of the output and every parameter gets a gradient (zero for
        the parameters of an op whose output only feeds ``none`` edges)."""
        return False
