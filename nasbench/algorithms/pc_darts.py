"""PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture Search (Xu et al., ICLR 2020).

Two changes to DARTS, following the official code (yuhuixu1993/PC-DARTS, ``model_search.py``,
``train_search.py``):

* partial channels: an edge sends only the first C/K of its input channels through the mixed op (whose
  ops are built for C/K channels; pools get a non-affine BN as in DARTS); the other channels bypass it,
  through a 2×2 max pool on stride-2 edges; the two parts are concatenated and channel-shuffled with K
  groups;
* edge normalization: one β per edge; node i's input is Σ_j softmax(β over node i's incoming edges)_j ·
  edge_j. β is initialised as 1e-3·N(0, 1) and optimised by the same Adam as α; derive multiplies each
  edge's op weights by its normalised β, then applies the DARTS rule.

No architecture step runs during the first ``warmup_epochs`` (15 of 50, scaled with the run's epochs).

On ImageNet-like data (``imagenet``, ``imagefolder`` of 64 px or more) the defaults are those of the official
ImageNet search (``train_search_imagenet.py``, ``model_search_imagenet.py``): ``imagenet_defaults`` below, with
the space's ImageNet-style stems.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Optional, Sequence

import torch
from torch import nn

from nasbench.algorithms.base import Strategy, edge_normalization  # noqa: F401  (its home before)
from nasbench.errors import ConfigError
from nasbench.registry import register_algorithm

from nasbench.spaces.edges import MixedOp, NodeSum, OpBuilder, SourceCache, dense_grad, format_of, unfolded


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle of [N, C, H, W]: output channel ``i·groups + g`` is input channel
    ``g·(C/groups) + i``, so each group of the input is spread evenly over the output."""
    if groups == 1:
        return x
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class PartialChannelEdge(MixedOp):
    """A PC-DARTS edge: a DARTS mixed op on the first C/K channels, the rest bypass it.

    Output: channel_shuffle(cat[mixed(x[:, :C/K]), bypass(x[:, C/K:])], K), with bypass the identity,
    or a 2×2/2 max pool on a stride-2 edge. The mixed op's weights have the same names as a
    :class:`MixedOp`'s (``ops.*``), so K=1 loads a DARTS edge's state as is.
    """

    def __init__(self, C: int, stride: int, ops: Sequence[str], build_op: OpBuilder, k: int):
        if C % k:
            raise ConfigError(f"PC-DARTS needs the channels of every cell ({C}) divisible by pc_darts.k={k}")
        super().__init__(C // k, stride, ops, build_op)
        self.k = k
        self.stride = stride
        self.bypass_pool = nn.MaxPool2d(2, 2) if stride == 2 else None

    def forward(self, x: torch.Tensor, w: Any) -> Optional[torch.Tensor]:
        if w is None:
            return None
        if self.k == 1:
            return super().forward(x, w)
        c = x.shape[1] // self.k
        part, rest = x[:, :c], x[:, c:]
        part = super().forward(part, w)
        if self.bypass_pool is not None:
            rest = self.bypass_pool(rest)
        return channel_shuffle(torch.cat([part, rest], dim=1), self.k)

    def contribute(self, node: NodeSum, src: SourceCache, w: Any,
                   scale: Optional[torch.Tensor], part: str = "out") -> None:
        """Fast execution. Shuffling is a fixed channel permutation, so a node sums its edges' mixed parts
        and their bypassed channels separately and shuffles once: Σ_e shuffle(cat(m_e, r_e)) =
        shuffle(cat(Σ_e m_e, Σ_e r_e)). The slices and the bypass pool are shared by a source's edges."""
        if w is None:
            return
        if self.k == 1:
            return super().contribute(node, src, w, scale, part)
        C = src.x.shape[1]
        c = C // self.k
        super().contribute(node, src.op_channels(0, c), w, scale, "pc_mixed")
        rest = src.channels(c, C)
        node.add(rest.x if self.bypass_pool is None else rest.pool(self.bypass_pool), scale, "pc_rest")
        node.finish = partial(_shuffle_parts, groups=self.k)


def shuffled_cat(mixed: torch.Tensor, rest: torch.Tensor, groups: int) -> torch.Tensor:
    """``channel_shuffle(cat([mixed, rest], 1), groups)`` in one copy, in ``rest``'s memory format.

    ``mixed`` has c channels and ``rest`` (groups−1)·c; output channel ``i·groups + g`` is channel i of
    ``mixed`` for g = 0 and channel ``(g−1)·c + i`` of ``rest`` otherwise: a stack of the ``groups`` c-channel
    pieces along a new innermost channel axis. (The reshape-transpose-reshape of :func:`channel_shuffle`
    copies twice with the cat, and hands a channels_last input back in NCHW.)
    """
    n, c, h, w = mixed.shape
    # the stack's backward hands each piece a strided view of its gradient; the mixed piece's is read by every
    # op of every edge into the node, so it is materialised once here
    pieces = [dense_grad(mixed), *rest.split(c, dim=1)]
    if format_of(rest) == torch.channels_last:
        nhwc = torch.stack([p.permute(0, 2, 3, 1) for p in pieces], dim=4)  # [n, h, w, c, groups]
        return nhwc.reshape(n, h, w, c * groups).permute(0, 3, 1, 2)
    return torch.stack(pieces, dim=2).reshape(n, c * groups, h, w)


def _shuffle_parts(parts: dict[str, torch.Tensor], groups: int) -> torch.Tensor:
    rest = parts["pc_rest"]
    mixed = parts.get("pc_mixed")
    if mixed is None:  # every mixed op of the node's edges was 'none'
        n, c, h, w = rest.shape
        mixed = rest.new_zeros(n, c // (groups - 1), h, w)
    mixed = unfolded(mixed, rest)  # the fast DARTS space's edges run with images folded into the channels
    return shuffled_cat(mixed, rest, groups)


@register_algorithm("pc-darts")
class PcDarts(Strategy):
    name = "pc-darts"
    paper = ("Xu, Xie, Zhang, Chen, Qi, Tian, Xiong. PC-DARTS: Partial Channel Connections for "
             "Memory-Efficient Architecture Search. ICLR 2020.")
    summary = "1/K of the channels through each mixed op (shuffled back), β edge normalization, α warm-up"

    @dataclass
    class Config:
        k: int = 4  # K: 1/K of an edge's channels go through its mixed op
        warmup_epochs: int = 15  # epochs (of paper_epochs, scaled) without architecture updates
        unrolled: bool = False  # second order (the official --unrolled): through one virtual weight step
        hvp_r: float = 0.01  # ε = hvp_r / ‖∇_w' L_val‖ of the finite-difference Hessian-vector product

    paper_defaults = {
        "epochs": 50,
        "batch_size": 256,
        "model.channels": 16,
        "model.layers": 8,
        "optim.lr": 0.1,
        "optim.lr_min": 0.0,  # the official master branch's learning_rate_min (0.001 only in its V100 branch)
        "optim.momentum": 0.9,
        "optim.weight_decay": 3e-4,
        "optim.grad_clip": 5.0,
        "arch_optim.lr": 6e-4,
        "arch_optim.betas": [0.5, 0.999],
        "arch_optim.weight_decay": 1e-3,
    }
    paper_epochs = 50

    imagenet_defaults = {
        # train_search_imagenet.py's argparse defaults (official master branch), for the search directly on ImageNet
        "epochs": 50,
        "batch_size": 1024,
        "model.channels": 16,
        "model.layers": 8,
        "optim.lr": 0.5,
        "optim.lr_min": 0.0,
        "optim.momentum": 0.9,
        "optim.weight_decay": 3e-4,
        "optim.grad_clip": 5.0,
        "optim.warmup_epochs": 5,  # lr·(epoch+1)/5 for the first 5 epochs (the script: when batch_size > 256)
        "arch_optim.lr": 6e-3,
        "arch_optim.betas": [0.5, 0.999],
        "arch_optim.weight_decay": 1e-3,
        "arch_optim.grad_clip": 5.0,  # the script clips the architecture gradient with --grad_clip too
        "pc_darts.warmup_epochs": 35,  # --begin
        "pc_darts.k": 2,  # model_search_imagenet.py: C//2 channels through the ops, channel_shuffle(ans, 2)
        "data.balanced_split": [0.1, 0.025],  # 10% / 2.5% of each class (the README's data preparation)
        "data.color_jitter": False,  # RandomResizedCrop(224) + RandomHorizontalFlip only
        "data.workers": 4,  # --workers 4
    }

    @classmethod
    def check_config(cls, cfg) -> None:
        k = cfg.pc_darts.k
        if k < 1:
            raise ConfigError(f"pc_darts.k must be at least 1, got {k}")
        if cfg.model.channels % k:
            raise ConfigError(f"model.channels ({cfg.model.channels}) must be divisible by pc_darts.k ({k})")
        if cfg.pc_darts.warmup_epochs < 0:
            raise ConfigError(f"pc_darts.warmup_epochs must be >= 0, got {cfg.pc_darts.warmup_epochs}")

    def make_edge(self, C: int, stride: int, ops: Sequence[str]) -> nn.Module:
        """A partial-channel edge; an edge whose candidates are all parameter-free (ENAS macro's on/off skip
        connections) has no memory to save and stays whole: sending 1/K of it through an off switch would let
        the rest through."""
        if all(op in self.space.parameter_free for op in ops):
            return MixedOp(C, stride, ops, self.space.search_op)
        return PartialChannelEdge(C, stride, ops, self.space.search_op, int(self.section.k))

    def uses_input_weights(self) -> bool:
        """β per edge in every space (edge normalization; the base class keeps, applies and derives from it)."""
        return True

    def updates_arch(self, epoch: int) -> bool:
        return epoch >= self.scaled(self.section.warmup_epochs)
