"""The ENAS macro space (Pham et al., ICML 2018), as NNI's search-space zoo defines it
(``ENASMacroGeneralModel``/``ENASMacroLayer``, NNI 2.x), searched by the differentiable algorithms.

A chain of L layers (``model.layers``, 12); each layer applies one of six branches (:mod:`.ops`) to the
previous layer's output and adds any subset of the earlier states through skip connections; factorized
reductions halve every state after layers L//3 − 1 and 2·(L//3) − 1 (:mod:`.network`). Two searched "cell
types" carry the architecture: ``branch`` (one edge per layer over the six branches, a mixed op) and ``skip``
(one edge per possible skip connection, an on/off choice over ``none``/``skip_connect`` with its own
parameters: a binary cell type, derived by this space's rule by every algorithm). Derive keeps each layer's
strongest branch and every skip whose "on" weight wins. Modules: :mod:`.ops`, :mod:`.genotype`,
:mod:`.network` (search and evaluation networks; one supernet execution, the reference).

Differences from the ENAS TensorFlow code (melodyguan/enas ``general_child.py``), where NNI's zoo differs:
the channels stay C throughout (the TF evaluation network doubles them at each reduction); a layer adds its
skips and normalises the sum (the TF evaluation layer concatenates them with its output and applies a 1×1
conv + BN); one factorized reduce per position shared by every state (TF: one per state); the search network has
no dropout before the classifier (TF: keep 0.9); the final training's is the TF one (0.5, ``model.dropout``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional

import torch
from torch import nn

from nasbench.errors import ConfigError, GenotypeError
from nasbench.registry import register, register_space
from nasbench.spaces.base import EdgeFactory, EdgeOps, SearchSpace, SupernetSpec, Topology
from nasbench.spaces.enas_macro import genotype as geno
from nasbench.spaces.enas_macro.network import branch_topology, skip_topology
from nasbench.spaces.enas_macro.ops import BRANCHES, LAYERS, SKIP_OPS, build_op

NAME = "enas-macro"

_FINAL = {  # scripts/cifar10_macro_final.sh of the ENAS TF code (channels: NNI's constant width)
    "model.layers": 24,  # the depth of random:SEED cells; a genotype's own depth beats it
    "epochs": 310, "batch_size": 100, "model.channels": 96, "model.auxiliary": False, "model.drop_path_prob": 0.0,
    "model.dropout": 0.5,
    "optim.lr": 0.05, "optim.lr_min": 0.001, "optim.schedule": "cosine_restarts", "optim.restart_epochs": 10,
    "optim.restart_mult": 2, "optim.momentum": 0.9, "optim.nesterov": True, "optim.weight_decay": 2e-4,
    "optim.grad_clip": 0.0,  # the TF clip_mode="norm" clips nothing (see README)
    "data.cutout": 0,
}


@register_space(NAME)
class EnasMacroSpace(SearchSpace):
    name = NAME
    description = "ENAS macro network: 12 layers of 6 branches, on/off skips between layers (Pham et al., 2018)"
    primitives = BRANCHES
    zero_op = "none"
    parameter_free = frozenset({"none", "skip_connect"})
    cell_types = ("branch", "skip")
    binary_cell_types = frozenset({"skip"})
    fixed_cell_types = frozenset()
    executions = ("reference",)
    eval_drop_path = False
    reference_size: ClassVar[Mapping[str, int]] = {}  # the depth is the genotype's

    model_defaults: ClassVar[Mapping[str, Any]] = {"model.layers": LAYERS, "model.channels": 24}
    """NNI's ``ENASMacroGeneralModel()``: 12 layers of 24 channels."""

    @classmethod
    def search_defaults(cls, algo: str, preset: str) -> Mapping[str, Any]:
        """NNI's network; P-DARTS keeps the depth (the genotype has one entry per layer) and prunes 6 → 4 → 2 → 1
        branches; each algorithm keeps its own search settings."""
        d: dict[str, Any] = {"supernet": "reference"}
        if preset == "quick":
            d["model.layers"] = 6
        else:
            d.update(cls.model_defaults)
        if algo == "p-darts":
            d.update({"p_darts.layers": d["model.layers"], "p_darts.add_layers": [0, 0, 0],
                      "p_darts.num_to_keep": [4, 2, 1]})
        return d

    @classmethod
    def final_defaults(cls, preset: str) -> Mapping[str, Any]:
        """The ENAS TF code's final training (``cifar10_macro_final.sh``): 310 epochs, batch 100, C=96, SGD-Nesterov
        lr 0.05 cosine to 0.001 with warm restarts (T0=10, Tmul=2: cycles end at 310), weight decay 2e-4, no
        gradient clipping (the TF clip_mode='norm' appends the unclipped gradients), dropout 0.5 before the
        classifier (keep 0.5); no auxiliary head, no drop-path, no cutout. The depth is the genotype's; random:SEED
        cells have the TF final network's 24 layers (6 with the quick preset, the quick search's depth)."""
        if preset == "quick":
            return {"model.layers": 6, "model.channels": 8, "model.auxiliary": False, "model.drop_path_prob": 0.0,
                    "model.dropout": 0.0}  # 6 layers: random:SEED cells as deep as the quick search's
        return dict(_FINAL)

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.model.layers < 2:
            raise ConfigError(f"the {NAME} network needs at least 2 layers (model.layers), got {cfg.model.layers}")
        if cfg.model.channels % 2:
            raise ConfigError(f"model.channels must be even (factorized reduce halves it), got {cfg.model.channels}")
        if cfg.get("supernet", "reference") != "reference":
            raise ConfigError(f"the {NAME} space has one supernet execution, reference; got supernet={cfg.supernet}")
        if cfg.get("memory_efficient", False):
            raise ConfigError(f"the {NAME} space has no memory-efficient execution; set memory_efficient=false")
        if cfg.get("algo") == "p-darts" and any(int(a) for a in cfg.p_darts.add_layers):
            raise ConfigError(f"P-DARTS on the {NAME} space keeps the depth (a genotype has one entry per layer): "
                              "p_darts.add_layers must be all 0")

    def _layers(self) -> int:
        return int(self.cfg.model.layers) if self.cfg is not None else LAYERS

    @property
    def topology(self) -> Topology:
        return branch_topology(self._layers())

    def topology_of(self, cell_type: str) -> Topology:
        return skip_topology(self._layers()) if cell_type == "skip" else branch_topology(self._layers())

    def ops_of(self, cell_type: str) -> tuple[str, ...]:
        return SKIP_OPS if cell_type == "skip" else BRANCHES

    # ------------------------------------------------------------------ networks
    def search_op(self, name: str, C: int, stride: int) -> nn.Module:
        return build_op(name, C, stride)

    def build_supernet(self, spec: SupernetSpec, make_edge: EdgeFactory, *, execution: str = "reference",
                       memory_efficient: bool = False) -> nn.Module:
        from nasbench.spaces.enas_macro.network import Supernet

        return Supernet(spec, make_edge).set_execution(execution, memory_efficient)

    def build_eval_network(self, genotype: Any, *, C: int, layers: int, num_classes: int, auxiliary: bool,
                           in_channels: int = 3, imagenet: bool = False, dropout: float = 0.0,
                           drop_path_by_layer: bool = False) -> nn.Module:
        """NNI's network with the genotype's branches and skips; its depth is the genotype's (``layers`` must
        equal it). No auxiliary head, no ImageNet variant."""
        from nasbench.spaces.enas_macro.network import EnasMacroNetwork

        if auxiliary:
            raise ConfigError(f"the {NAME} network has no auxiliary head; set model.auxiliary=false")
        if imagenet:
            raise ConfigError(f"the {NAME} space has no ImageNet network; set model.imagenet=false")
        if C < 2 or C % 2:
            raise ConfigError(f"the {NAME} network needs an even number of channels, got C={C}")
        g = self.validate(genotype)
        if layers != len(g.layers):
            raise ConfigError(f"this {NAME} genotype has {len(g.layers)} layers and its network has the genotype's "
                              f"depth; got model.layers={layers} (leave it out, or set it to {len(g.layers)})")
        return EnasMacroNetwork(g, C=C, num_classes=num_classes, in_channels=in_channels,
                                dropout=dropout)

    # ------------------------------------------------------------------ derive
    def derive_cell(self, weights: torch.Tensor, edge_ops: EdgeOps, edge_scale: Optional[torch.Tensor] = None,
                    cell_type: Optional[str] = None) -> list[tuple[str, int]]:
        """Every edge keeps its strongest op (the first on ties), ``none`` included: a layer's strongest
        branch, a skip that is on when its "on" weight wins. ``edge_scale`` (a positive factor per edge) cannot
        change an edge's argmax and is ignored."""
        W = weights.detach().double().cpu()
        topo = self.topology_of(cell_type or "branch")
        out = []
        for e, (_, src) in enumerate(topo.edges):
            row = W[e].tolist()
            k = max(range(len(edge_ops[e])), key=lambda c: (row[c], -c))
            out.append((edge_ops[e][k], src))
        return out

    # ------------------------------------------------------------------ genotypes
    def make_genotype(self, cells: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None
                      ) -> geno.EnasMacroGenotype:
        return geno.from_rows(cells["branch"], cells["skip"], meta)

    def genotype_from_dict(self, d: Mapping[str, Any]) -> geno.EnasMacroGenotype:
        return geno.EnasMacroGenotype.from_dict(d)

    def claims_text(self, text: str) -> bool:
        return geno.claims_text(text)

    def parse_text(self, text: str, name: Optional[str] = None) -> geno.EnasMacroGenotype:
        return geno.parse_text(text, name)

    def format_text(self, genotype: Any) -> str:
        return geno.format_text(self.validate(genotype))

    def validate(self, genotype: Any) -> geno.EnasMacroGenotype:
        if not isinstance(genotype, geno.EnasMacroGenotype):
            raise GenotypeError(f"not an {NAME} genotype: {type(genotype).__name__}")
        return geno.validate(genotype)

    depth_from_genotype = True

    def random_genotype(self, seed: int, layers: Optional[int] = None) -> geno.EnasMacroGenotype:
        return geno.random_genotype(seed, self._layers() if layers is None else layers)

    def genotype_depth(self, genotype: Any) -> Optional[int]:
        return len(genotype.layers)

    def state_name(self, i: int) -> str:
        return "stem" if i == 0 else f"layer {i - 1}"

    def short(self, genotype: Any) -> str:
        return geno.format_text(genotype).strip()

    def describe(self, genotype: Any) -> tuple[list[str], list[list[str]]]:
        rows = [[str(i), b, ", ".join(self.state_name(j) for j in s)] for i, (b, s) in enumerate(genotype.layers)]
        return ["layer", "branch", "skip connections from"], rows

    def notation(self) -> Optional[str]:
        return "layer i applies its branch to layer i-1's output (layer 0: the stem's) and adds its skip sources"

    def dot(self, genotype: Any) -> dict[str, str]:
        from nasbench.spaces.dot import preamble, quote

        lines = [*preamble("network"), f"  {quote('stem')} [fillcolor=darkseagreen2];"]
        prev = "stem"
        for i, (b, skips) in enumerate(genotype.layers):
            name = f"{i}: {b}"
            lines.append(f"  {quote(name)} [fillcolor=lightblue];")
            lines.append(f"  {quote(prev)} -> {quote(name)};")
            for j in skips:
                src = "stem" if j == 0 else f"{j - 1}: {genotype.layers[j - 1][0]}"
                lines.append(f"  {quote(src)} -> {quote(name)} [style=dashed];")
            prev = name
        lines.append("}")
        return {"network": "\n".join(lines) + "\n"}

    def chosen_ops(self, genotype: Any) -> Optional[list[str]]:
        """The layers' branches (every one has weights: a pool branch starts with a 1×1 conv)."""
        return [b for b, _ in genotype.layers]

    def collapse(self, genotype: Any) -> tuple[dict[str, Any], Optional[str]]:
        """Pooling branches and skip connections; a warning when every branch is a pool."""
        pools = sum(1 for b, _ in genotype.layers if "pool" in b)
        skips = sum(len(s) for _, s in genotype.layers)
        warning = None
        if pools == len(genotype.layers):
            warning = "every layer's branch is a pool: parameter-free choices dominate (the known DARTS collapse)"
        return {"pool_branches": pools, "skip_connections": skips}, warning


register("genotype", "enas-macro", geno.from_tf_arc(
    " ".join([
        "0",
        "3 0",
        "0 1 0",
        "2 0 0 1",
        "2 0 0 0 0",
        "3 1 1 0 1 0",
        "2 0 0 0 0 0 1",
        "2 0 1 1 0 1 1 1",
        "1 0 1 1 1 0 1 0 1",
        "0 0 0 0 0 0 0 0 0 0",
        "2 0 0 0 0 0 1 0 0 0 0",
        "0 1 0 0 1 1 0 0 0 0 1 1",
        "2 0 1 0 0 0 0 0 1 0 1 1 0",
        "1 0 0 1 0 0 0 1 1 1 0 1 0 1",
        "0 1 1 0 1 0 1 0 0 0 0 0 1 0 0",
        "2 0 0 1 0 0 0 0 0 0 0 1 0 1 0 1",
        "2 0 1 0 0 0 1 0 0 1 1 1 1 0 0 1 0",
        "2 0 0 0 0 1 0 1 0 1 0 0 1 0 1 0 0 1",
        "3 0 1 1 0 1 0 0 0 0 0 1 0 1 0 1 0 0 0",
        "3 0 1 1 0 0 0 0 0 0 0 0 0 1 1 0 0 0 0 1",
        "0 1 0 0 1 0 1 1 0 0 0 1 0 0 0 0 0 1 1 0 0",
        "3 0 1 0 1 1 0 0 1 0 1 1 0 1 1 0 1 0 0 1 0 0",
        "0 1 0 1 0 1 0 0 0 0 0 0 0 0 1 0 1 0 0 1 0 0 0",
        "0 1 1 0 0 0 1 1 1 0 1 0 0 0 1 0 1 0 0 1 1 0 0 0",
    ]), meta={"name": "enas-macro",
              "source": "ENAS (Pham et al., ICML 2018), macro network (scripts/cifar10_macro_final.sh)"}))
