"""The ENAS micro space (Pham et al., "Efficient Neural Architecture Search via Parameter Sharing", ICML
2018), as NNI's search-space zoo defines it (``ENASMicroLayer``, NNI 2.x), searched by the differentiable
algorithms.

A cell has two inputs (the outputs of the two cells before it) and ``enas_micro.nodes`` intermediate nodes
(5). Node ``i`` takes two inputs among the earlier states, applies one of five ops to each (:mod:`.ops`: sep
conv 3×3 and 5×5, avg and max pool 3×3, identity) and sums them; the cell's output combines the loose ends
(states no node takes). A normal and a reduction cell type. Modules: :mod:`.ops`, :mod:`.genotype`,
:mod:`.network` (layout and evaluation network), :mod:`.supernet` (the search network, one execution:
the reference), :mod:`.graph` (DOT drawings).

The search relaxes both choices (:class:`~nasbench.spaces.base.Topology.dense` edges, every node fed by all
earlier states): each edge carries the strategy's module over the five ops, and each node's choice of its
two inputs is an input weight per edge (``input_choice``: every strategy then keeps a β per edge,
normalised over each node's incoming edges, or samples two inputs per node). Derive keeps two inputs per
node. There is no zero op.

Differences from the ENAS TensorFlow code (melodyguan/enas, ``micro_child.py``), where NNI's zoo differs:
a reduction cell factor-reduces both inputs and runs its ops at stride 1 (the TF evaluation cell puts
stride 2 on the ops that read the inputs, the TF search cell reduces only the previous output); the
separable convs are one ReLU-sepconv-BN (TF's evaluation cell stacks two); there is no extra 1×1
ReLU-conv-BN on the previous cell's output (TF's ``layer_base``); the output of an evaluation cell is the
1×1 conv of its loose ends (TF's evaluation cell concatenates them, so its channels vary); drop-path rises with
depth as in TF (``model.drop_path_by_layer``) but over epochs by the trainer's per-epoch ramp (TF: per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional

import torch
from torch import nn

from nasbench.errors import ConfigError, GenotypeError
from nasbench.registry import register, register_space
from nasbench.spaces.base import EdgeFactory, EdgeOps, SearchSpace, SupernetSpec, Topology, derive_top_edges
from nasbench.spaces.enas_micro import genotype as geno
from nasbench.spaces.enas_micro.ops import NODES, PARAMETER_FREE, PRIMITIVES, build_op

NAME = "enas-micro"

_FINAL = {  # scripts/cifar10_micro_final.sh of the ENAS TF code
    "epochs": 630, "batch_size": 144, "model.layers": 15, "model.channels": 36, "model.auxiliary": True,
    "model.auxiliary_weight": 0.4, "model.drop_path_prob": 0.4, "model.drop_path_by_layer": True,
    "model.dropout": 0.2, "optim.lr": 0.05, "optim.lr_min": 0.0001,
    "optim.schedule": "cosine_restarts", "optim.restart_epochs": 10, "optim.restart_mult": 2, "optim.momentum": 0.9,
    "optim.nesterov": True, "optim.weight_decay": 2e-4,
    "optim.grad_clip": 0.0,  # the TF clip_mode="norm" clips nothing (see README)
    "data.cutout": 16,
}

_CARRIED_OVER: dict[str, dict[str, Any]] = {
    # 5 ops → 3 → 2 → 1, from the search network's depth (6 normal cells) to the evaluation network's (15)
    "p-darts": {"p_darts.layers": 6, "p_darts.add_layers": [0, 4, 9], "p_darts.num_to_keep": [3, 2, 1]},
}


@register_space(NAME)
class EnasMicroSpace(SearchSpace):
    name = NAME
    description = "ENAS micro cell: 5 ops, 5 nodes of 2 chosen inputs, loose ends out (Pham et al., 2018)"
    primitives = PRIMITIVES
    zero_op = None
    parameter_free = PARAMETER_FREE
    cell_types = ("normal", "reduce")
    fixed_cell_types = frozenset()
    executions = ("reference",)
    input_choice = True
    reference_size: ClassVar[Mapping[str, int]] = {"C": 36, "layers": 15, "num_classes": 10}

    model_defaults: ClassVar[Mapping[str, Any]] = {"model.layers": 6, "model.channels": 20}
    """NNI's search network (``MicroNetwork(num_layers=6, out_channels=20, num_nodes=5)``)."""

    @dataclass
    class Config:
        """The ``enas_micro`` config section."""

        nodes: int = NODES  # intermediate nodes per cell (NNI's num_nodes)

    config_section: ClassVar[Optional[str]] = "enas_micro"

    @classmethod
    def search_defaults(cls, algo: str, preset: str) -> Mapping[str, Any]:
        """NNI's search network size and the one execution; each algorithm keeps its own search settings."""
        if preset == "quick":
            # N=3: cells of C, 2C, 2C, 4C, 4C channels (with N < 3 the first reduction is cell 0, at 6C)
            quick: dict[str, Any] = {"model.layers": 3, "supernet": "reference"}
            if algo == "p-darts":
                quick.update({"p_darts.layers": 3, "p_darts.add_layers": [0, 1, 2]})
            return quick
        return {**cls.model_defaults, "supernet": "reference", **_CARRIED_OVER.get(algo, {})}

    @classmethod
    def final_defaults(cls, preset: str) -> Mapping[str, Any]:
        """The ENAS TF code's final training (``cifar10_micro_final.sh``): 630 epochs, batch 144, N=15, C=36,
        auxiliary head 0.4, drop-path 0.4 (keep 0.6) scaled by depth (cell i of n: 0.4·(i+1)/n), dropout 0.2 before
        the classifier (keep 0.8), SGD-Nesterov lr 0.05 cosine to 1e-4 with warm restarts
        (T0=10, Tmul=2: cycles of 10, 20, ..., 320 epochs, the last ending at epoch 630), weight decay 2e-4,
        no gradient clipping (TF's clip_mode='norm' with grad_bound 5 appends the unclipped gradients), cutout 16."""
        if preset == "quick":
            return {"model.layers": 3, "model.channels": 8, "model.auxiliary": False, "model.drop_path_prob": 0.0,
                    "model.dropout": 0.0}
        return dict(_FINAL)

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        nodes = int(cfg.enas_micro.nodes) if "enas_micro" in cfg else NODES
        if nodes < 1:
            raise ConfigError(f"enas_micro.nodes must be at least 1, got {nodes}")
        if cfg.get("supernet", "reference") != "reference":
            raise ConfigError(f"the {NAME} space has one supernet execution, reference; got supernet={cfg.supernet}")

    @property
    def topology(self) -> Topology:
        nodes = NODES
        if self.cfg is not None and "enas_micro" in self.cfg:
            nodes = int(self.cfg.enas_micro.nodes)
        return Topology.dense(n_inputs=2, nodes=nodes, keep=2, output=range(2 + nodes))

    # ------------------------------------------------------------------ networks
    def search_op(self, name: str, C: int, stride: int) -> nn.Module:
        return build_op(name, C, stride)

    def supernet_spec(self, num_classes: int, in_channels: int, edge_ops: Mapping[str, EdgeOps], *,
                      C: Optional[int] = None, layers: Optional[int] = None) -> SupernetSpec:
        spec = super().supernet_spec(num_classes, in_channels, edge_ops, C=C, layers=layers)
        return SupernetSpec(spec.C, spec.layers, spec.num_classes, spec.edge_ops, spec.in_channels,
                            {"nodes": self.topology.nodes})

    def build_supernet(self, spec: SupernetSpec, make_edge: EdgeFactory, *, execution: str = "reference",
                       memory_efficient: bool = False) -> nn.Module:
        from nasbench.spaces.enas_micro.supernet import Supernet

        nodes = int(spec.options.get("nodes", NODES))
        topology = Topology.dense(2, nodes, 2, range(2 + nodes))
        return Supernet(spec, make_edge, topology).set_execution(execution, memory_efficient)

    def build_eval_network(self, genotype: Any, *, C: int, layers: int, num_classes: int, auxiliary: bool,
                           in_channels: int = 3, imagenet: bool = False, dropout: float = 0.0,
                           drop_path_by_layer: bool = False) -> nn.Module:
        """NNI's ``MicroNetwork`` with the genotype's cells: N = ``layers`` normal cells and 2 reduction cells.
        No ImageNet variant (``imagenet=True`` is a ConfigError)."""
        from nasbench.spaces.enas_micro.network import EnasMicroNetwork

        if imagenet:
            raise ConfigError(f"the {NAME} space has no ImageNet network; set model.imagenet=false to train its "
                              "CIFAR network on these images")
        if layers < 1 or C < 1:
            raise ConfigError(f"the {NAME} network needs at least 1 normal cell and 1 channel, got layers={layers}, "
                              f"C={C}")
        return EnasMicroNetwork(self.validate(genotype), C=C, N=layers, num_classes=num_classes, auxiliary=auxiliary,
                                in_channels=in_channels, dropout=dropout, drop_path_by_layer=drop_path_by_layer)

    # ------------------------------------------------------------------ derive
    def derive_cell(self, weights: torch.Tensor, edge_ops: EdgeOps, edge_scale: Optional[torch.Tensor] = None,
                    cell_type: Optional[str] = None) -> list[tuple[str, int]]:
        """The DARTS rule without a zero op: each edge's strength is its strongest op's weight (times its
        normalised input weight when given); each node keeps its two strongest edges, each with that op."""
        return derive_top_edges(weights, edge_ops, self.topology, None, edge_scale)

    # ------------------------------------------------------------------ genotypes
    def make_genotype(self, cells: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None
                      ) -> geno.EnasMicroGenotype:
        return geno.cells_from_pairs(cells, meta)

    def genotype_from_dict(self, d: Mapping[str, Any]) -> geno.EnasMicroGenotype:
        return geno.EnasMicroGenotype.from_dict(d)

    def claims_text(self, text: str) -> bool:
        return geno.claims_text(text)

    def parse_text(self, text: str, name: Optional[str] = None) -> geno.EnasMicroGenotype:
        return geno.parse_text(text, name)

    def format_text(self, genotype: Any) -> str:
        return geno.format_text(self.validate(genotype))

    def validate(self, genotype: Any) -> geno.EnasMicroGenotype:
        if not isinstance(genotype, geno.EnasMicroGenotype):
            raise GenotypeError(f"not an {NAME} genotype: {type(genotype).__name__}")
        return geno.validate(genotype)

    def random_genotype(self, seed: int) -> geno.EnasMicroGenotype:
        return geno.random_genotype(seed, self.topology.nodes)

    def state_name(self, i: int) -> str:
        return geno.state_name(i)

    def short(self, genotype: Any) -> str:
        return "normal " + geno.format_cell(genotype.normal)

    def describe(self, genotype: Any) -> tuple[list[str], list[list[str]]]:
        header = ["node", "normal cell", "reduction cell"]
        rows = []
        for i in range(max(len(genotype.normal), len(genotype.reduce))):
            row = [str(i + 2)]
            for cell in (genotype.normal, genotype.reduce):
                row.append(", ".join(f"{op}<-{j}" for op, j in cell[i]) if i < len(cell) else "")
            rows.append(row)
        rows.append(["out", *(" + ".join(str(k) for k in geno.loose_ends(c)) + " (loose ends)"
                              for c in (genotype.normal, genotype.reduce))])
        return header, rows

    def notation(self) -> Optional[str]:
        return ("op<-input: inputs 0, 1 are the cell inputs c_{k-2}, c_{k-1}; 2.. the nodes; the output combines "
                "the loose ends (states no node takes)")

    def dot(self, genotype: Any) -> dict[str, str]:
        from nasbench.spaces.enas_micro.graph import genotype_dots

        return genotype_dots(genotype)

    def chosen_ops(self, genotype: Any) -> Optional[list[str]]:
        return [op for cell in (genotype.normal, genotype.reduce) for node in cell for op, _ in node]

    def collapse(self, genotype: Any) -> tuple[dict[str, Any], Optional[str]]:
        """The normal cell's skip_connects and parameter-free ops; a warning when every op of it is
        parameter-free."""
        ops = [op for node in genotype.normal for op, _ in node]
        skips = ops.count("skip_connect")
        free = sum(op in PARAMETER_FREE for op in ops)
        warning = None
        if free == len(ops):
            warning = (f"every op of the normal cell is parameter-free ({skips} skip_connect): parameter-free ops "
                       "dominate (the known DARTS collapse)")
        return {"normal_skip_connect": skips, "normal_parameter_free": free}, warning

    def unused_parameters(self, genotype: Any) -> bool:
        """Never: every op of a derived cell feeds a node, and every node reaches the output (a loose end is
        read by the output conv, any other state by a node)."""
        return False


register("genotype", "enas-micro", geno.from_tf_arc(
    "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1", "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1",
    meta={"name": "enas-micro",
          "source": "ENAS (Pham et al., ICML 2018), micro cell (scripts/cifar10_micro_final.sh)"}))
