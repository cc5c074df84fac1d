"""GDAS: Searching for A Robust Neural Architecture in Four GPU Hours (Dong and Yang, CVPR 2019).

Each forward pass samples one op per edge with the Gumbel-max trick and computes only that op. The
sample is differentiable through a straight-through estimator: the edge's weights are
``one_hot(argmax) − p.detach() + p`` with ``p = softmax((log_softmax(α) + g) / τ)``, equal in value to
the one-hot choice, with the gradient of the soft ``p``. τ decays linearly over the search.

Where the paper's text and the official reimplementation (AutoDL-Projects, ``search_model_gdas_nasnet``,
``exps/algos/GDAS.py``, ``configs/search-opts/GDAS-NASNet-CIFAR.config``) differ, this follows the code:

* τ goes from ``tau_max``=10 to ``tau_min``=0.1 (the paper says to 1: ``gdas.tau_min=1``);
* 6 cells with a BatchNorm-ReLU before the global pooling (the paper says 8 cells: ``--layers 8``);
* derive keeps, per node, the two strongest (op, input) pairs over all incoming edges, so one input
  may feed a node twice (``gdas.distinct_inputs=true`` gives the DARTS rule);
* one Gumbel sample per edge per forward pass per cell type, shared by all cells of that type;
* an edge returns the sampled op's output times its hard weight and nothing else (``MixedOp.forward_gdas``
  of the NASNet-space search model), so α gets no gradient through an edge that drew 'none'; on
  NAS-Bench-201 the official cell also adds the other ops' hard weights (``gdas.hard_weight_sum``);
* the pools have no BatchNorm after them (AutoDL-Projects' ``POOLING``; ``model.pool_bn=false``, set by
  GDAS's defaults; DARTS's search supernet has a non-affine BN there);
* the official script has no separate validation pass (its per-epoch accuracy is the architecture step's,
  in training mode); nasbench's per-epoch validation in eval mode, which samples an architecture per
  batch from its own noise stream, is an addition for the log and changes nothing the search does.

The official search model's convolutions before a non-affine BatchNorm have a bias (``bias=not affine``);
a per-channel constant before a batch-normalising BN cancels out of every output, so nasbench leaves it
out (the comparison in the README confirms equal outputs and gradients).

In a space whose nodes choose their inputs (ENAS micro) each node also samples its two inputs per forward
pass (Gumbel top-2 on its β, straight-through; :func:`gumbel_top_inputs`), and derive ranks the (op, input)
pairs by op weight × normalised β.

``gdas.fixed_reduction=true`` is GDAS-FRC: only the normal cell is searched, the reduction cells are the
paper's hand-designed cell (with non-affine BN in the search supernet, as the official search model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from nasbench.algorithms.base import Strategy
from nasbench.errors import ConfigError
from nasbench import registry
from nasbench.registry import register_algorithm
from nasbench.spaces.base import CellWeights, SupernetSpec, Topology
from nasbench.spaces.edges import MixedOp, NodeSum, SourceCache


def gumbel_straight_through(alpha: torch.Tensor, tau: float,
                            generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One hard Gumbel-softmax sample per row of ``alpha`` [edges, ops].

    Returns ``(weights, index)``: ``weights`` [edges, ops] is one-hot in value (the row's argmax of
    ``softmax((log_softmax(α) + g) / τ)``, g = −log(Exponential(1))) and carries the gradient of the soft
    probabilities (straight-through); ``index`` [edges] is the sampled op. Resamples on non-finite noise.
    The noise comes from ``generator`` (a CPU generator) when given, else from torch's global generator.
    """
    probs = gumbel_softmax_probs(alpha, tau, generator)
    index = probs.argmax(dim=-1)
    one_hot = torch.zeros_like(probs).scatter_(-1, index.unsqueeze(-1), 1.0)
    return one_hot - probs.detach() + probs, index


def gumbel_softmax_probs(logits: torch.Tensor, tau: float, generator: Optional[torch.Generator] = None
                         ) -> torch.Tensor:
    """``softmax((log_softmax(logits) + g) / τ)`` over the last dimension, g = −log(Exponential(1)) noise
    from ``generator`` (a CPU generator) or torch's global one; drawn again until noise and result are finite."""
    log_p = logits.log_softmax(dim=-1)
    while True:
        if generator is None:
            noise = torch.empty_like(logits).exponential_()
        else:
            noise = torch.empty(logits.shape, dtype=logits.dtype).exponential_(generator=generator).to(logits.device)
        gumbels = -noise.log()
        probs = torch.softmax((log_p + gumbels) / tau, dim=-1)
        if torch.isfinite(gumbels).all() and torch.isfinite(probs).all():
            return probs


class GumbelEdge(MixedOp):
    """A GDAS edge: of its candidate ops only the sampled one runs.

    ``forward(x, w)`` with ``w = (weights [ops], index)`` returns ``w_index·o_index(x)``, the sampled op's
    output times its (unit) hard weight, as the official NASNet-space search model
    (``MixedOp.forward_gdas``): α gets gradient through the sampled op alone, none when 'none' was drawn.
    With ``hard_weight_sum`` it returns ``Σ_k (w_k·o_k(x) if k == index else w_k)``, the official
    NAS-Bench-201 cell's formula: the other hard weights enter as scalars, zero in value but passing their
    straight-through gradient to α. ``w`` may also be an ``int`` (that op, unweighted) or ``None``
    (nothing), as for :class:`~nasbench.spaces.edges.MixedOp`.
    """

    def __init__(self, C: int, stride: int, ops: Sequence[str], build: Any, hard_weight_sum: bool = False):
        super().__init__(C, stride, ops, build)
        self.hard_weight_sum = hard_weight_sum

    def forward(self, x: torch.Tensor, w: Any) -> Optional[torch.Tensor]:
        if w is None or isinstance(w, int):
            return super().forward(x, w)
        weights, index = w
        out = self.ops[index](x) * weights[index]
        if self.hard_weight_sum:
            for k in range(len(self.ops)):
                if k != index:
                    out = out + weights[k]
        return out

    def contribute(self, node: NodeSum, src: SourceCache, w: Any,
                   scale: Optional[torch.Tensor], part: str = "out") -> None:
        """Fast execution: the sampled op (nothing for 'none'), and with ``hard_weight_sum`` the other
        weights as one scalar term."""
        if w is None or isinstance(w, int):
            return super().contribute(node, src, w, scale, part)
        weights, index = w
        if scale is not None:
            weights = weights * scale
        src.add_to(node, self.ops[index], weights[index], part)
        if self.hard_weight_sum:
            node.add_scalar(weights.sum() - weights[index])  # zero in value; the straight-through gradient


@register_algorithm("gdas")
class Gdas(Strategy):
    name = "gdas"
    paper = ("Dong, Yang. Searching for A Robust Neural Architecture in Four GPU Hours. CVPR 2019.")
    summary = "one Gumbel-sampled op per edge per forward (straight-through); τ 10 → 0.1; weight step first"

    @dataclass
    class Config:
        tau_max: float = 10.0  # Gumbel-softmax temperature of the first epoch
        tau_min: float = 0.1  # ... of the last epoch (official code; the paper's text says 1)
        distinct_inputs: bool = False  # derive by the DARTS rule (two different inputs per node)
        fixed_reduction: bool = False  # GDAS-FRC: search the normal cell only, hand-designed reduction cell
        # the edge adds the unsampled ops' hard weights (zero in value, gradient to their α): the official
        # NAS-Bench-201 cell does (set there); the official NASNet-space model (the darts space) does not
        hard_weight_sum: bool = False

    paper_defaults = {
        "epochs": 250,
        "batch_size": 256,
        "model.channels": 16,
        "model.layers": 6,
        "model.final_bn_relu": True,
        "model.pool_bn": False,  # AutoDL-Projects' POOLING: no BatchNorm after the pool
        "optim.lr": 0.025,
        "optim.lr_min": 0.001,
        "optim.momentum": 0.9,
        "optim.nesterov": True,
        "optim.weight_decay": 5e-4,
        "optim.grad_clip": 5.0,
        "arch_optim.lr": 3e-4,
        "arch_optim.betas": [0.5, 0.999],
        "arch_optim.weight_decay": 1e-3,
        # get_nas_search_loaders: a fixed random split (configs/nas-benchmark/cifar-split.txt) and SearchDataset's
        # architecture image random.choice(valid_split), drawn independently of the weight batch
        "data.split": "random",
        "data.arch_batches": "draw",
    }
    paper_epochs = 250
    step_order = "weights_first"
    unused_weights = True  # only the sampled op of an edge runs

    def __init__(self, cfg, space=None):
        super().__init__(cfg, space)
        self.tau = float(self.section.tau_max)
        # the noise has its own generator, seeded alike in every process of a distributed run: ranks that
        # sampled different ops would train different parameters. Training draws from ``train_generator``
        # (the same number of samples on every rank: one per forward of a step); the validation pass, whose
        # number of batches may differ between ranks, from ``eval_generator``, reseeded every epoch
        self.train_generator = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + 17)
        self.eval_generator = torch.Generator()
        self.generator = self.train_generator

    @classmethod
    def check_config(cls, cfg) -> None:
        s = cfg.gdas
        if not 0 < s.tau_min <= s.tau_max:
            raise ConfigError(f"gdas needs 0 < tau_min <= tau_max, got tau_min={s.tau_min}, tau_max={s.tau_max}")
        if s.fixed_reduction and "reduce" not in registry.get("space", cfg.model.space).fixed_cell_types:
            raise ConfigError(f"gdas.fixed_reduction needs a space with a hand-designed reduction cell; the "
                              f"{cfg.model.space} space has none")
        if s.fixed_reduction and (2 * cfg.model.channels) % 8:
            raise ConfigError("gdas.fixed_reduction needs model.channels divisible by 4 (the fixed reduction cell's "
                              f"grouped convs take 2·C channels in 8 groups), got {cfg.model.channels}")

    # ----------------------------------------------------------------- supernet
    def supernet_spec(self, num_classes: int, in_channels: int) -> SupernetSpec:
        """With ``fixed_reduction`` the reduction cell is not searched: the space puts its fixed cell there."""
        ops = self.space.all_ops()
        if self.section.fixed_reduction:
            ops.pop("reduce")
        return self.space.supernet_spec(num_classes, in_channels, ops)

    def make_edge(self, C: int, stride: int, ops: Sequence[str]) -> nn.Module:
        return GumbelEdge(C, stride, ops, self.space.search_op, bool(self.section.hard_weight_sum))

    # ----------------------------------------------------------------- forward
    def edge_weights(self, cell_type: str) -> CellWeights:
        """A fresh hard Gumbel sample per edge; every cell of this type shares it for this forward pass.

        With input weights (a space whose nodes choose their inputs: ENAS micro) each node also samples its
        ``topology.keep`` inputs (:func:`gumbel_top_inputs`): the other edges compute nothing, the sampled
        ones are scaled by their straight-through weight (1 in value)."""
        weights, index = gumbel_straight_through(self.alpha(cell_type), self.tau, self.generator)
        ops: list[Any] = [(weights[e], k) for e, k in enumerate(index.tolist())]
        if f"beta_{cell_type}" not in self.arch:
            return CellWeights(ops)
        scale, chosen = gumbel_top_inputs(self.beta(cell_type), self.topology_of(cell_type), self.tau,
                                          self.generator)
        return CellWeights([o if c else None for o, c in zip(ops, chosen)], edges=scale)

    # ----------------------------------------------------------------- schedule
    def tau_at(self, epoch: int) -> float:
        """τ of stage-local ``epoch``: linear from tau_max (first epoch) to tau_min (last epoch)."""
        hi, lo = float(self.section.tau_max), float(self.section.tau_min)
        n = self.stage_epochs()
        if n <= 1:
            return hi
        return hi - (hi - lo) * epoch / (n - 1)

    def on_epoch_start(self, epoch: int, net: nn.Module) -> None:
        self.tau = self.tau_at(epoch)
        self.eval_generator.manual_seed(int(self.cfg.seed) * 1_000_003 + 7_919 * (self.stage * 10_007 + epoch + 1))

    def forward(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Samples from the training noise in training mode, from the validation noise in eval mode."""
        self.generator = self.train_generator if net.training else self.eval_generator
        try:
            return super().forward(net, x)
        finally:
            self.generator = self.train_generator

    def epoch_metrics(self) -> dict[str, Any]:
        return {"tau": self.tau}

    def extra_state(self) -> dict[str, Any]:
        return {"tau": self.tau, "gumbel_rng": self.train_generator.get_state()}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.tau = float(state.get("tau", self.section.tau_max))
        if "gumbel_rng" in state:
            self.train_generator.set_state(state["gumbel_rng"])

    # ----------------------------------------------------------------- result
    def derive_cell(self, cell_type: str) -> Any:
        """Per node the strongest pairs over all incoming edges; in a space whose nodes keep every edge
        (NAS-Bench-201), the space's rule, as the official GDAS does there."""
        topology = self.topology_of(cell_type)
        if self.section.distinct_inputs or topology.keep is None or self.is_binary(cell_type):
            return super().derive_cell(cell_type)
        return derive_cell_pairs(self.op_probabilities(cell_type), self.spec.ops(cell_type), topology,
                                 self.space.zero_op, edge_scale=self.edge_scale(cell_type))


def gumbel_top_inputs(beta: torch.Tensor, topology: Topology, tau: float,
                      generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, list[bool]]:
    """GDAS's sampling carried over to a node's choice of its inputs: per node, the ``topology.keep``
    largest of ``softmax((log_softmax(β_node) + g) / τ)`` (Gumbel top-k: a sample of that many distinct inputs
    without replacement) with straight-through weights.

    Returns ``(scale [edges], chosen)``: ``scale`` is ``khot − p.detach() + p`` (1 in value on the chosen
    edges, carrying the gradient of the soft ``p``), ``chosen[e]`` whether edge e was drawn. A node with at
    most ``keep`` incoming edges takes them all.
    """
    parts, chosen = [], []
    for r in topology.node_slices():
        b = beta[r.start:r.stop]
        probs = gumbel_softmax_probs(b, tau, generator)
        k = len(b) if topology.keep is None else min(topology.keep, len(b))
        top = probs.topk(k).indices
        khot = torch.zeros_like(probs).scatter_(-1, top, 1.0)
        parts.append(khot - probs.detach() + probs)
        picked = set(top.tolist())
        chosen.extend(j in picked for j in range(len(b)))
    return torch.cat(parts), chosen


def derive_cell_pairs(weights: torch.Tensor, edge_ops: Sequence[Sequence[str]], topology: Topology,
                      exclude: Optional[str] = "none",
                      edge_scale: Optional[torch.Tensor] = None) -> list[tuple[str, int]]:
    """GDAS's derive rule: per node, the ``topology.keep`` strongest (op, input) pairs over all its incoming
    edges.

    Candidates are every op other than ``exclude`` (the zero op) of every incoming edge; the same input may
    be chosen twice (two different ops on one edge). Ties keep the lower input, then the lower op index (a
    stable sort). ``edge_scale`` [edges] multiplies each edge's weights first (input weights: ENAS micro).
    """
    W = weights.detach().double().cpu()
    if edge_scale is not None:  # each pair's weight times its edge's normalised input weight
        W = W * edge_scale.detach().double().cpu()[:, None]
    gene: list[tuple[str, int]] = []
    for node in range(topology.nodes):
        candidates = []
        for e in topology.node_edges(node):
            src = topology.edges[e][1]
            for k, name in enumerate(edge_ops[e]):
                if name != exclude:
                    candidates.append((float(W[e, k]), name, src))
        keep = topology.keep if topology.keep is not None else len(topology.node_edges(node))
        if len(candidates) < keep:
            raise ValueError(f"node {node} has fewer than {keep} candidate (op, input) pairs other than {exclude!r}")
        candidates.sort(key=lambda c: -c[0])
        gene.extend((name, src) for _, name, src in candidates[:keep])
    return gene
