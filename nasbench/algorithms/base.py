"""The strategy interface: everything that makes one differentiable NAS algorithm differ from another.

The trainer (:mod:`nasbench.search.trainer`) and the supernet (:mod:`nasbench.spaces.darts.supernet`) never ask which
algorithm runs; they call these hooks. Each hook has a default that is DARTS's behaviour, so an
algorithm overrides only what it changes:

=========================  ==========================================================================
hook                       what it decides
=========================  ==========================================================================
``init_arch_params``       the architecture parameters (α per edge × op; PC-DARTS adds β per edge)
``make_edge``              the module on one edge (weighted sum, sampled op, partial channels)
``edge_weights``           what each edge receives per forward (softmax, hard Gumbel, one-hot, β)
``arch_backward``          how the architecture gradient is obtained (first or second order)
``updates_arch``           whether an epoch updates the architecture (warm-up)
``step_order``             architecture step first (DARTS) or weight step first (GDAS)
``unused_weights``         whether a weight step may leave weights without gradient (GDAS, SGAS)
``batch_size``             the batch size of an epoch (SGAS grows it)
``frozen_rows``            α rows that must not move at all (SGAS's decided edges)
``on_epoch_start/_end``    temperature and dropout schedules; greedy decisions
``next_stage``             a new, deeper supernet with fewer candidate ops (P-DARTS)
``derive``                 the genotype
``state_dict``             everything a checkpoint must restore
=========================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from nasbench import registry
from nasbench.spaces.darts.genotype import Genotype
from nasbench.spaces.darts.supernet import CellWeights, MixedOp, Supernet, SupernetSpec

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ArchStepContext:
    """What an architecture step may use.

    ``train``/``valid`` are (images, labels) batches from the weight half and the architecture half of
    the search split; ``lr`` is the weights' current learning rate (ξ of the unrolled step). ``reduce``
    averages gradients over distributed ranks (the identity in one process): every gradient a strategy
    computes for its architecture step goes through it, so that every rank takes the same step.
    """

    net: Supernet
    train: tuple[torch.Tensor, torch.Tensor]
    valid: tuple[torch.Tensor, torch.Tensor]
    w_optim: torch.optim.Optimizer
    lr: float
    criterion: LossFn
    reduce: Callable[[Sequence[Optional[torch.Tensor]]], list] = list


@dataclass
class Decision:
    """A logged event of the strategy (an SGAS edge decision, a P-DARTS pruning): text + record."""

    message: str
    record: dict[str, Any]


class Strategy:
    """Base class of all algorithms; with no override it is first-order DARTS."""

    name: ClassVar[str] = "base"
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    @dataclass
    class Config:
        """The algorithm's own config section (subclasses replace it)."""

    paper_defaults: ClassVar[Mapping[str, Any]] = {}
    """Shared config keys (dotted) that this algorithm's paper/code sets differently from DARTS."""
    quick_defaults: ClassVar[Mapping[str, Any]] = {}
    """Extra ``--preset quick`` overrides for this algorithm."""
    paper_epochs: ClassVar[int] = 50
    """Epochs of the paper's search; epoch-counted schedules scale with ``epochs / paper_epochs``."""
    step_order: ClassVar[str] = "arch_first"
    """``arch_first`` (DARTS: architecture step, then weight step) or ``weights_first`` (GDAS)."""
    unused_weights: ClassVar[bool] = False
    """Whether a forward may leave some of the supernet's weights out (GDAS runs one sampled op per edge,
    SGAS's decided and pruned edges one op or none): distributed data parallelism must then look for the
    parameters without gradient at every step, which costs a graph traversal the others are spared."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.section = cfg.get(self.name.replace("-", "_"), DictConfig({}))
        self.space = registry.get("space", cfg.model.space)
        self.arch: dict[str, torch.Tensor] = {}
        self.stage = 0

    # ----------------------------------------------------------------- configuration
    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """Raise ConfigError for settings this algorithm cannot run with."""

    def scaled(self, epochs: float) -> int:
        """An epoch count of the paper's schedule, scaled to this run's length (see ``scale_schedules``)."""
        if not self.cfg.scale_schedules:
            return int(round(epochs))
        return int(round(epochs * self.cfg.epochs / self.paper_epochs))

    # ----------------------------------------------------------------- stages and supernet
    def stage_epochs(self) -> int:
        """Epochs of the current stage (the whole run for single-stage algorithms)."""
        return int(self.cfg.epochs)

    def stage_label(self) -> Optional[str]:
        """Shown in progress and metrics for multi-stage algorithms."""
        return None

    def supernet_spec(self, num_classes: int, in_channels: int) -> SupernetSpec:
        m = self.cfg.model
        all_ops = tuple(tuple(self.space.primitives) for _ in range(self.space.num_edges))
        return SupernetSpec(C=m.channels, layers=m.layers, num_classes=num_classes, normal_ops=all_ops,
                            reduce_ops=all_ops, in_channels=in_channels, steps=m.steps,
                            multiplier=m.multiplier, stem_multiplier=m.stem_multiplier,
                            final_bn_relu=m.final_bn_relu)

    def build_supernet(self, spec: SupernetSpec) -> Supernet:
        return Supernet(spec, self.make_edge)

    def make_edge(self, C: int, stride: int, ops: Sequence[str]) -> nn.Module:
        return MixedOp(C, stride, ops)

    # ----------------------------------------------------------------- architecture parameters
    def init_arch_params(self, spec: SupernetSpec, device: torch.device) -> None:
        """α_t = 1e-3·N(0, 1) of shape [edges, ops] per searched cell type t (the DARTS code)."""
        self.spec = spec
        self.arch = {}
        for t in spec.cell_types:
            n_ops = len(spec.ops(t)[0])
            self.arch[f"alpha_{t}"] = (1e-3 * torch.randn(len(spec.ops(t)), n_ops)).to(device).requires_grad_()

    def arch_parameters(self) -> list[torch.Tensor]:
        return list(self.arch.values())

    def alpha(self, cell_type: str) -> torch.Tensor:
        return self.arch[f"alpha_{cell_type}"]

    def frozen_rows(self) -> dict[str, torch.Tensor]:
        """name → bool [rows] of architecture parameters that must stay bitwise unchanged."""
        return {}

    # ----------------------------------------------------------------- forward
    def edge_weights(self, cell_type: str) -> CellWeights:
        """DARTS: softmax over each edge's ops, p = softmax(α_t) row-wise."""
        return CellWeights(torch.softmax(self.alpha(cell_type), dim=-1))

    def weights(self) -> dict[str, CellWeights]:
        """Every searched cell type's edge weights, in fp32 also under autocast (``amp``)."""
        device_type = next(iter(self.arch.values())).device.type if self.arch else "cpu"
        with torch.autocast(device_type, enabled=False):
            return {t: self.edge_weights(t) for t in self.spec.cell_types}

    def forward(self, net: Supernet, x: torch.Tensor) -> torch.Tensor:
        return net(x, self.weights())

    def op_probabilities(self, cell_type: str) -> torch.Tensor:
        """Op weights [edges, ops] as displayed, plotted and derived from (no noise)."""
        return torch.softmax(self.alpha(cell_type).detach(), dim=-1)

    # ----------------------------------------------------------------- optimisation
    def arch_backward(self, ctx: ArchStepContext) -> torch.Tensor:
        """First order: ∇_α L_val(w, α) at the current weights. Fills ``.grad``; returns the loss."""
        x, y = ctx.valid
        loss = ctx.criterion(self.forward(ctx.net, x), y)
        params = self.trainable_arch_parameters()
        grads = ctx.reduce(torch.autograd.grad(loss, params, allow_unused=True))
        for p, g in zip(params, grads):
            p.grad = g  # None for a cell type the supernet does not use (e.g. 2 layers: no normal cell)
        return loss.detach()

    def trainable_arch_parameters(self) -> list[torch.Tensor]:
        return [p for p in self.arch_parameters() if p.requires_grad]

    def updates_arch(self, epoch: int) -> bool:
        """Whether stage-local ``epoch`` updates the architecture."""
        return True

    def batch_size(self, epoch: int) -> int:
        return int(self.cfg.batch_size)

    # ----------------------------------------------------------------- schedule hooks
    def on_epoch_start(self, epoch: int, net: Supernet) -> None:
        """Called before stage-local ``epoch`` trains."""

    def on_epoch_end(self, epoch: int, net: Supernet) -> list[Decision]:
        """Called after ``epoch`` trained and validated; returns events worth logging."""
        return []

    def next_stage(self) -> bool:
        """Advance to the next stage at the end of one; False when the search is over."""
        return False

    def epoch_metrics(self) -> dict[str, Any]:
        """Strategy values worth a column in ``metrics.jsonl`` (temperature, stage, ...)."""
        return {}

    # ----------------------------------------------------------------- result
    def derive(self) -> Genotype:
        """The DARTS rule on softmax(α) (see :func:`derive_cell`)."""
        cells = {}
        for t in ("normal", "reduce"):
            if t in self.spec.cell_types:
                cells[t] = derive_cell(self.op_probabilities(t), self.spec.ops(t), self.spec.steps)
            else:
                cells[t] = None
        return self.make_genotype(cells["normal"], cells["reduce"])

    def make_genotype(self, normal: list[tuple[str, int]], reduce: Optional[list[tuple[str, int]]]) -> Genotype:
        concat = list(range(2 + self.spec.steps - self.spec.multiplier, self.spec.steps + 2))
        return Genotype(normal=normal, normal_concat=concat, reduce=reduce, reduce_concat=concat,
                        meta={"algo": self.name})

    # ----------------------------------------------------------------- checkpoints
    def extra_state(self) -> dict[str, Any]:
        """The strategy's own state beyond its tensors (subclasses extend)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Plain data (tensors, numbers, strings, lists, dicts) so checkpoints load with weights_only."""
        return {
            "arch": {k: v.detach().cpu().clone() for k, v in self.arch.items()},
            "stage": self.stage,
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device | str = "cpu") -> None:
        self.stage = int(state["stage"])
        self.load_extra_state(state["extra"])
        self.arch = {k: v.to(device).clone().requires_grad_() for k, v in state["arch"].items()}
        # the edges' op sets follow from config and state alone; sizes that depend on data are set by the
        # trainer when it builds the supernet, and do not matter to derive
        self.spec = self.supernet_spec(num_classes=1, in_channels=1)


def derive_cell(weights: torch.Tensor, edge_ops: Sequence[Sequence[str]], steps: int,
                edge_scale: Optional[torch.Tensor] = None) -> list[tuple[str, int]]:
    """The DARTS derive rule on op weights [edges, ops].

    For each node keep the 2 incoming edges whose strongest non-'none' op weight is largest; each kept
    edge gets its strongest non-'none' op. Ties keep the lower index, as the DARTS code's stable sort
    and strict comparison do. ``edge_scale`` [edges] multiplies each edge's weights first (PC-DARTS).
    """
    W = weights.detach().double().cpu()
    if edge_scale is not None:
        W = W * edge_scale.detach().double().cpu()[:, None]
    gene: list[tuple[str, int]] = []
    start = 0
    for i in range(steps):
        n_in = i + 2
        best: list[tuple[float, int, str]] = []  # (weight, input, op) of each incoming edge
        for j in range(n_in):
            ops = edge_ops[start + j]
            k_best = None
            for k, name in enumerate(ops):
                if name == "none":
                    continue
                if k_best is None or W[start + j, k] > W[start + j, k_best]:
                    k_best = k
            if k_best is None:
                raise ValueError(f"edge {start + j} has no candidate op other than 'none'")
            best.append((float(W[start + j, k_best]), j, ops[k_best]))
        kept = sorted(range(n_in), key=lambda j: -best[j][0])[:2]
        gene.extend((best[j][2], j) for j in kept)
        start += n_in
    return gene


def create_strategy(name: str, cfg: DictConfig) -> Strategy:
    return registry.get("algorithm", name)(cfg)
