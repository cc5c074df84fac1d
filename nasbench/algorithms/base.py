"""The strategy interface: everything that makes one differentiable NAS algorithm differ from another.

The search loop (:mod:`nasbench.search.trainer`) and the space's supernet never ask which algorithm
runs; they call these hooks. A strategy receives the search space (:class:`~nasbench.spaces.base.SearchSpace`)
and asks it for everything that names ops or topology; ``spaces`` lists the spaces it runs on (``None``:
every space). Each hook has a default that is DARTS's behaviour, so an algorithm overrides only what it
changes:

=========================  ==========================================================================
hook                       what it decides
=========================  ==========================================================================
``check_config``           settings the algorithm cannot run with (one ConfigError line)
``supernet_spec``          the search network's sizes and candidate ops (P-DARTS: per stage)
``build_supernet``         the search network over the strategy's edges (the space builds it)
``make_edge``              the module on one edge (weighted sum, sampled op, partial channels)
``init_arch_params``       the architecture parameters (α per edge × op; β per edge: PC-DARTS, ENAS micro)
``edge_weights``           what each edge receives per forward (softmax, hard Gumbel, one-hot, β)
``weights``/``forward``    all cell types' edge weights (fp32 under autocast), the supernet's forward
``op_probabilities``       op weights as displayed, plotted and derived from (no noise)
``arch_backward``          how the architecture gradient is obtained (first or second order)
``trainable_arch_parameters``  the architecture parameters the optimizer moves
``updates_arch``           whether an epoch updates the architecture (warm-up)
``step_order``/``order``   architecture step first (DARTS) or weight step first (GDAS); ``order()`` is the
                           run's: ``step_order`` in the config, the space's official order, or the algorithm's
``unused_weights``         whether a weight step may leave weights without gradient (GDAS, SGAS);
                           ``leaves_weights_unused()`` whether it may now (SGAS: after its first decision)
``batch_size``             the batch size of an epoch (SGAS grows it)
``frozen_rows``            α rows that must not move at all (SGAS's decided edges)
``stage_epochs``/``stage_label``  multi-stage schedules (P-DARTS)
``on_epoch_start/_end``    temperature and dropout schedules; greedy decisions
``next_stage``             a new, deeper supernet with fewer candidate ops (P-DARTS)
``epoch_metrics``          the strategy's columns in metrics.jsonl (τ, stage, ...)
``derive``/``derive_cell``  the genotype; ``derive_cell`` per cell type (default: the space's rule)
``make_genotype``          the genotype of derived cells (the space's type, with the strategy's meta)
``state_dict``             everything a checkpoint must restore (``extra_state`` for a strategy's own)
=========================  ==========================================================================
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Mapping, Optional, Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from nasbench import registry
from nasbench.spaces.base import CellWeights, SearchSpace, SupernetSpec, Topology, create_space
from nasbench.spaces.edges import MixedOp

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ArchStepContext:
    """What an architecture step may use.

    ``train``/``valid`` are (images, labels) batches from the weight half and the architecture half of
    the search split; ``lr`` is the weights' current learning rate (ξ of the unrolled step). ``reduce``
    averages gradients over distributed ranks (the identity in one process): every gradient a strategy
    computes for its architecture step goes through it, so that every rank takes the same step.
    """

    net: nn.Module
    train: tuple[torch.Tensor, torch.Tensor]
    valid: tuple[torch.Tensor, torch.Tensor]
    w_optim: torch.optim.Optimizer
    lr: float
    criterion: LossFn
    reduce: Callable[[Sequence[Optional[torch.Tensor]]], list] = list
    weights: Optional[Sequence[nn.Parameter]] = None
    """``list(net.parameters())`` when the caller has it (the trainer lists them once per stage: a walk of a
    supernet's module tree takes ~3 ms, twice a step, about 1% of a GDAS step on a CPU); else each step walks it."""
    logits: Optional[torch.Tensor] = None
    """Set by ``arch_backward``: the logits of the architecture batch whose loss it returns (the
    architecture step's accuracy, which the official GDAS script ranks epochs by)."""


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
    imagenet_defaults: ClassVar[Mapping[str, Any]] = {}
    """Config keys (dotted) this algorithm's official ImageNet search sets, merged after ``paper_defaults`` when
    the dataset is ImageNet-like (``imagenet``, or ``imagefolder`` images of 64 px or more) on a space that has
    ImageNet stems (the darts space)."""
    paper_epochs: ClassVar[int] = 50
    """Epochs of the paper's search; epoch-counted schedules scale with ``epochs / paper_epochs``."""
    step_order: ClassVar[str] = "arch_first"
    """``arch_first`` (DARTS: architecture step, then weight step) or ``weights_first`` (GDAS)."""
    unused_weights: ClassVar[bool] = False
    """Whether a forward may leave some of the supernet's weights out (GDAS runs one sampled op per edge,
    SGAS's decided and pruned edges one op or none): distributed data parallelism must then look for the
    parameters without gradient at every step, which costs a graph traversal the others are spared."""

    spaces: ClassVar[Optional[tuple[str, ...]]] = None
    """The spaces this algorithm runs on (None: every space)."""

    def __init__(self, cfg: DictConfig, space: Optional[SearchSpace] = None):
        self.cfg = cfg
        self.section = cfg.get(self.name.replace("-", "_"), DictConfig({}))
        self.space = space if space is not None else create_space(cfg.model.space, cfg)
        self.arch: dict[str, torch.Tensor] = {}
        self.stage = 0

    @property
    def topology(self) -> Topology:
        return self.space.topology

    def topology_of(self, cell_type: str) -> Topology:
        return self.space.topology_of(cell_type)

    def is_binary(self, cell_type: str) -> bool:
        """Whether ``cell_type``'s edges are on/off choices the space derives (see ``binary_cell_types``)."""
        return cell_type in self.space.binary_cell_types

    # ----------------------------------------------------------------- configuration
    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """Raise ConfigError for settings this algorithm cannot run with."""

    depth_key = "model.layers"
    """The setting that sizes the supernet; ``--layers`` sets it (P-DARTS: its first stage's cells)."""

    @classmethod
    def stage_depths(cls, cfg: DictConfig) -> list[tuple[str, int]]:
        """(setting, cells) of each stage's supernet, for the space's depth check (P-DARTS: one per stage)."""
        return [("model.layers", int(cfg.model.layers))]

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
        """Every primitive on every edge of every cell type of the space."""
        return self.space.supernet_spec(num_classes, in_channels, self.space.all_ops())

    def build_supernet(self, spec: SupernetSpec, execution: str = "reference", memory_efficient: bool = False
                       ) -> nn.Module:
        return self.space.build_supernet(spec, self.make_edge, execution=execution,
                                         memory_efficient=memory_efficient)

    def make_edge(self, C: int, stride: int, ops: Sequence[str]) -> nn.Module:
        return MixedOp(C, stride, ops, self.space.search_op)

    # ----------------------------------------------------------------- architecture parameters
    def uses_input_weights(self) -> bool:
        """Whether the architecture has an input weight β per edge, normalised over each node's incoming
        edges (``edge_normalization``): PC-DARTS's edge normalization in every space, and every algorithm in
        a space whose nodes choose their inputs (``input_choice``: ENAS micro), where β is that choice."""
        return bool(getattr(self.space, "input_choice", False))

    def init_arch_params(self, spec: SupernetSpec, device: torch.device) -> None:
        """α_t = 1e-3·N(0, 1) of shape [edges, ops] per searched cell type t (the DARTS code); with input
        weights then β_t = 1e-3·N(0, 1) [edges] per cell type (PC-DARTS's order: α_n, α_r, β_n, β_r)."""
        self.spec = spec
        self.arch = {}
        for t in spec.cell_types:
            n_ops = len(spec.ops(t)[0])
            self.arch[f"alpha_{t}"] = (1e-3 * torch.randn(len(spec.ops(t)), n_ops)).to(device).requires_grad_()
        if self.uses_input_weights():
            for t in spec.cell_types:
                self.arch[f"beta_{t}"] = (1e-3 * torch.randn(len(spec.ops(t)))).to(device).requires_grad_()

    def arch_parameters(self) -> list[torch.Tensor]:
        return list(self.arch.values())

    def alpha(self, cell_type: str) -> torch.Tensor:
        return self.arch[f"alpha_{cell_type}"]

    def beta(self, cell_type: str) -> torch.Tensor:
        return self.arch[f"beta_{cell_type}"]

    def input_weights(self, cell_type: str) -> Optional[torch.Tensor]:
        """softmax(β) within each node's incoming edges [edges] (with gradient), or None without β."""
        if f"beta_{cell_type}" not in self.arch:
            return None
        return edge_normalization(self.beta(cell_type), self.topology_of(cell_type))

    def edge_scale(self, cell_type: str) -> Optional[torch.Tensor]:
        """Normalised input weights [edges] (no gradient), as displayed and derived from; None without β."""
        if f"beta_{cell_type}" not in self.arch:
            return None
        return edge_normalization(self.beta(cell_type).detach(), self.topology_of(cell_type))

    def frozen_rows(self) -> dict[str, torch.Tensor]:
        """name → bool [rows] of architecture parameters that must stay bitwise unchanged."""
        return {}

    # ----------------------------------------------------------------- forward
    def edge_weights(self, cell_type: str) -> CellWeights:
        """DARTS: softmax over each edge's ops, p = softmax(α_t) row-wise; each edge's output scaled by its
        normalised input weight where there is β."""
        return CellWeights(torch.softmax(self.alpha(cell_type), dim=-1), edges=self.input_weights(cell_type))

    def weights(self) -> dict[str, CellWeights]:
        """Every searched cell type's edge weights, in fp32 also under autocast (``amp``)."""
        device_type = next(iter(self.arch.values())).device.type if self.arch else "cpu"
        with torch.autocast(device_type, enabled=False):
            return {t: self.edge_weights(t) for t in self.spec.cell_types}

    def forward(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net(x, self.weights())

    def op_probabilities(self, cell_type: str) -> torch.Tensor:
        """Op weights [edges, ops] as displayed, plotted and derived from (no noise)."""
        return torch.softmax(self.alpha(cell_type).detach(), dim=-1)

    # ----------------------------------------------------------------- optimisation
    def arch_backward(self, ctx: ArchStepContext) -> torch.Tensor:
        """First order: ∇_α L_val(w, α) at the current weights; second order (an ``unrolled`` key of the
        algorithm's section set: DARTS, PC-DARTS, SGAS) through one virtual weight step
        (:mod:`nasbench.algorithms.second_order`). Fills ``.grad``; returns the loss."""
        if self.section.get("unrolled", False):
            from nasbench.algorithms.second_order import unrolled_backward

            return unrolled_backward(self, ctx, float(self.section.hvp_r))
        x, y = ctx.valid
        params = self.trainable_arch_parameters()
        with weights_frozen(ctx.net, ctx.weights):
            logits = self.forward(ctx.net, x)
            ctx.logits = logits.detach()
            loss = ctx.criterion(logits, y)
            grads = ctx.reduce(torch.autograd.grad(loss, params, allow_unused=True))
        for p, g in zip(params, grads):
            p.grad = g  # None for a cell type the supernet does not use (e.g. 2 layers: no normal cell)
        return loss.detach()

    def order(self) -> str:
        """The step order of this run: ``step_order`` from the config, or (``auto``) the official code's order
        on this space (NAS-Bench-201's first-order DARTS steps the weights first), else the algorithm's own."""
        asked = self.cfg.get("step_order", "auto")
        if asked != "auto":
            return str(asked)
        return self.space.step_order(self.name, self.cfg) or self.step_order

    def trainable_arch_parameters(self) -> list[torch.Tensor]:
        return [p for p in self.arch_parameters() if p.requires_grad]

    def updates_arch(self, epoch: int) -> bool:
        """Whether stage-local ``epoch`` updates the architecture."""
        return True

    max_batch: Optional[int] = None
    """The largest global batch the data holds (set by the trainer from the search split): a batch that
    grows (SGAS) stops there."""

    def batch_size(self, epoch: int) -> int:
        return int(self.cfg.batch_size)

    def limit_batch(self, n: int) -> None:
        """The data holds global batches of at most ``n`` images (see ``max_batch``)."""
        self.max_batch = int(n)

    # ----------------------------------------------------------------- schedule hooks
    def on_epoch_start(self, epoch: int, net: nn.Module) -> None:
        """Called before stage-local ``epoch`` trains."""

    def leaves_weights_unused(self) -> bool:
        """Whether the next weight steps may leave weights without gradient (by default :attr:`unused_weights`);
        a strategy whose forward uses every weight until some event (SGAS: its first decision) says so until
        then, and the distributed trainer spares DDP the search for unused parameters meanwhile."""
        return self.unused_weights

    def on_epoch_end(self, epoch: int, net: nn.Module) -> list[Decision]:
        """Called after ``epoch`` trained and validated; returns events worth logging."""
        return []

    def next_stage(self) -> bool:
        """Advance to the next stage at the end of one; False when the search is over."""
        return False

    def epoch_metrics(self) -> dict[str, Any]:
        """Strategy values worth a column in ``metrics.jsonl`` (temperature, stage, ...)."""
        return {}

    # ----------------------------------------------------------------- result
    def derive(self) -> Any:
        """The genotype: each searched cell type by :meth:`derive_cell`, fixed ones None."""
        cells = {t: self.derive_cell(t) if t in self.spec.cell_types else None for t in self.space.cell_types}
        return self.make_genotype(cells)

    def derive_cell(self, cell_type: str) -> Any:
        """One cell type's derived cell: the space's rule on softmax(α) (each edge's row times its normalised
        input weight where there is β)."""
        return self.space.derive_cell(self.op_probabilities(cell_type), self.spec.ops(cell_type),
                                      edge_scale=self.edge_scale(cell_type), cell_type=cell_type)

    def make_genotype(self, cells: Mapping[str, Any]) -> Any:
        return self.space.make_genotype(cells, meta={"algo": self.name})

    def genotype_variants(self) -> dict[str, Any]:
        """Other genotypes a finished search offers beside the derived one, by file name (written into the
        run's genotypes/ folder at the end; P-DARTS: one per cap on skip_connects)."""
        return {}

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


def edge_normalization(beta: torch.Tensor, topology: Topology) -> torch.Tensor:
    """softmax of β [edges] within each node's incoming edges, concatenated [edges]."""
    return torch.cat([torch.softmax(beta[r.start:r.stop], dim=-1) for r in topology.node_slices()])


def create_strategy(name: str, cfg: DictConfig, space: Optional[SearchSpace] = None) -> Strategy:
    return registry.get("algorithm", name)(cfg, space)


@contextlib.contextmanager
def weights_frozen(net: nn.Module, weights: Optional[Sequence[nn.Parameter]] = None) -> Iterator[None]:
    """The supernet's weights without grad, for a first-order architecture step: its backward need not form
    their gradients. Autograd's own nodes leave them out anyway once ``torch.autograd.grad`` asks for α alone;
    a custom autograd step (the fast supernet's fused ops) sees only whether its inputs require grad.
    ``weights``: ``list(net.parameters())``, when the caller has it."""
    params = [p for p in (net.parameters() if weights is None else weights) if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
