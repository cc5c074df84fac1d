"""The DARTS CNN cell space (Liu, Simonyan and Yang, ICLR 2019), as the DARTS code defines it.

A cell has two inputs (the outputs of the two previous cells), ``steps`` intermediate nodes (4) each fed
by every earlier state (14 edges) and keeping two of them at derive, and an output that concatenates the
last ``multiplier`` nodes (all 4). Eight candidate ops per edge (:mod:`.ops`); a normal and a reduction
cell type. Modules: :mod:`.ops` (operations), :mod:`.genotype` (the genotype type and its text notation),
:mod:`.published` (the papers' cells), :mod:`.supernet` (search network) with :mod:`.fast` (its fast
execution), :mod:`.network` (evaluation network), :mod:`.graph` (cells as DOT graphs).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional

from torch import nn

from nasbench.errors import ConfigError, GenotypeError
from nasbench.registry import register_space
from nasbench.spaces.base import EdgeFactory, EdgeOps, SearchSpace, SupernetSpec, Topology
from nasbench.spaces.darts import genotype as geno
from nasbench.spaces.darts.ops import PARAMETER_FREE, PRIMITIVES, STEPS, search_op

SKIP_WARNING = 2
"""More skip_connects than this in the normal cell is the known DARTS collapse (P-DARTS caps it at 2)."""


@register_space("darts")
class DartsSpace(SearchSpace):
    name = "darts"
    description = "DARTS CNN cell: 8 ops, 4 nodes, 14 edges (Liu et al., 2019)"
    primitives = PRIMITIVES
    zero_op = "none"
    parameter_free = PARAMETER_FREE
    cell_types = ("normal", "reduce")
    fixed_cell_types = frozenset({"reduce"})
    executions = ("fast", "reference")
    recompute_ops = True
    stems = ("cifar", "imagenet")
    reference_size: ClassVar[Mapping[str, int]] = {"C": 36, "layers": 20, "num_classes": 10}

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        m = cfg.model
        if m.steps != STEPS or m.multiplier != STEPS:
            raise ConfigError("the darts space has 4 intermediate nodes, all concatenated: model.steps and "
                              f"model.multiplier must be 4, got {m.steps} and {m.multiplier}")
        if m.channels % 2:
            raise ConfigError(f"model.channels must be even (factorized reduce halves it), got {m.channels}")

    @classmethod
    def check_depth(cls, layers: int, what: str) -> None:
        """Reduction cells sit at layers//3 and 2·layers//3: fewer than 3 cells leave no normal cell."""
        reductions = {layers // 3, 2 * layers // 3}
        if not any(i not in reductions for i in range(layers)):
            raise ConfigError(f"{what}={layers} makes every cell a reduction cell (they sit at layers//3 and "
                              f"2·layers//3), so the normal cell would never be searched; use at least 3")

    @property
    def topology(self) -> Topology:
        steps = int(self.cfg.model.steps) if self.cfg is not None else STEPS
        multiplier = int(self.cfg.model.multiplier) if self.cfg is not None else STEPS
        return Topology.dense(n_inputs=2, nodes=steps, keep=2, output=range(2 + steps - multiplier, 2 + steps))

    # ------------------------------------------------------------------ networks
    def search_op(self, name: str, C: int, stride: int) -> nn.Module:
        return search_op(name, C, stride, pool_bn=bool(self.cfg.model.pool_bn) if self.cfg is not None else True)

    def supernet_spec(self, num_classes: int, in_channels: int, edge_ops: Mapping[str, EdgeOps], *,
                      C: Optional[int] = None, layers: Optional[int] = None) -> SupernetSpec:
        spec = super().supernet_spec(num_classes, in_channels, edge_ops, C=C, layers=layers)
        m = self.cfg.model
        stem = str(m.get("stem", "auto"))
        options = {"steps": int(m.steps), "multiplier": int(m.multiplier), "stem_multiplier": int(m.stem_multiplier),
                   "final_bn_relu": bool(m.final_bn_relu),
                   # "auto" is settled by the config from the data; a config from before model.stem means cifar
                   "stem": "cifar" if stem == "auto" else stem}
        return SupernetSpec(spec.C, spec.layers, spec.num_classes, spec.edge_ops, spec.in_channels, options)

    def build_supernet(self, spec: SupernetSpec, make_edge: EdgeFactory, *, execution: str = "reference",
                       memory_efficient: bool = False) -> nn.Module:
        from nasbench.spaces.darts.supernet import Supernet

        steps = int(spec.options.get("steps", STEPS))
        multiplier = int(spec.options.get("multiplier", steps))
        topology = Topology.dense(2, steps, 2, range(2 + steps - multiplier, 2 + steps))
        return Supernet(spec, make_edge, topology).set_execution(execution, memory_efficient)

    def build_eval_network(self, genotype: Any, *, C: int, layers: int, num_classes: int, auxiliary: bool,
                           in_channels: int = 3, imagenet: bool = False, dropout: float = 0.0,
                           drop_path_by_layer: bool = False) -> nn.Module:
        from nasbench.spaces.darts.network import build_eval_network

        return build_eval_network(genotype, C=C, layers=layers, num_classes=num_classes, auxiliary=auxiliary,
                                  in_channels=in_channels, imagenet=imagenet, dropout=dropout,
                                  drop_path_by_layer=drop_path_by_layer)

    # ------------------------------------------------------------------ genotypes
    def make_genotype(self, cells: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None) -> geno.Genotype:
        concat = list(self.topology.output)
        return geno.Genotype(normal=cells["normal"], normal_concat=concat, reduce=cells.get("reduce"),
                             reduce_concat=concat, meta=dict(meta or {}))

    def genotype_from_dict(self, d: Mapping[str, Any]) -> geno.Genotype:
        return geno.Genotype.from_dict(dict(d))

    def claims_text(self, text: str) -> bool:
        return "Genotype(" in text

    def parse_text(self, text: str, name: Optional[str] = None) -> geno.Genotype:
        return geno.parse_genotype_text(text, name)

    def format_text(self, genotype: Any) -> str:
        return geno.format_genotype_text(genotype)

    def validate(self, genotype: Any) -> Any:
        if not isinstance(genotype, geno.Genotype):
            raise GenotypeError(f"not a darts genotype: {type(genotype).__name__}")
        return geno.validate(genotype)

    def random_genotype(self, seed: int) -> geno.Genotype:
        return geno.random_genotype(seed)

    def state_name(self, i: int) -> str:
        return geno.state_name(i)

    def short(self, genotype: Any) -> str:
        return "normal " + " ".join(f"{op}<-{i}" for op, i in genotype.normal)

    def describe(self, genotype: Any) -> tuple[list[str], list[list[str]]]:
        # the official genotype's input index (as in the log and the Genotype(...) text): a node is the index
        # its successors name it by, 2.. (0 and 1 are the cell inputs)
        header = ["node", "normal cell", "reduction cell"]
        rows = []
        for i in range(len(genotype.normal) // 2):
            row = [str(i + 2)]
            for cell in (genotype.normal, genotype.reduce):
                if cell is None:
                    row.append("(fixed)" if i == 0 else "")
                else:
                    row.append(", ".join(f"{op}<-{j}" for op, j in cell[2 * i: 2 * i + 2]))
            rows.append(row)
        return header, rows

    def notation(self) -> Optional[str]:
        return ("op<-input: inputs 0, 1 are the cell inputs c_{k-2}, c_{k-1}; 2.. the nodes "
                "(drawn 0.. in the cell plots)")

    def dot(self, genotype: Any) -> dict[str, str]:
        from nasbench.spaces.darts.graph import genotype_dots

        return genotype_dots(genotype)

    def chosen_ops(self, genotype: Any) -> Optional[list[str]]:
        return [op for cell in (genotype.normal, genotype.reduce) if cell is not None for op, _ in cell]

    def collapse(self, genotype: Any) -> tuple[dict[str, Any], Optional[str]]:
        """The normal cell's skip_connects and parameter-free ops; a warning past two skip_connects."""
        skips = sum(1 for op, _ in genotype.normal if op == "skip_connect")
        free = sum(1 for op, _ in genotype.normal if op in PARAMETER_FREE)
        warning = None
        if skips > SKIP_WARNING:
            warning = (f"the normal cell has {skips} skip_connects (parameter-free ops dominate: the known DARTS "
                       "collapse)")
        return {"normal_skip_connect": skips, "normal_parameter_free": free}, warning

    def unused_parameters(self, genotype: Any) -> bool:
        """Whether a cell leaves an input or a node unread (its parameters then get no gradient)."""
        for cell, concat in ((genotype.normal, genotype.normal_concat), (genotype.reduce, genotype.reduce_concat)):
            if cell is None:
                continue
            read = {j for _, j in cell} | set(concat)
            if any(k not in read for k in range(2 + len(cell) // 2)):
                return True
        return False


from nasbench.spaces.darts import published as _published  # noqa: E402,F401  (registers the papers' cells)
