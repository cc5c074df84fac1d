"""The ENAS macro space's branches, as NNI's search-space zoo builds them (``enas_ops.py``, NNI 2.x).

Six branches per layer, in NNI's and the TF code's order: ``conv_3x3``, ``sep_conv_3x3``, ``conv_5x5``,
``sep_conv_5x5`` (NNI's ``ConvBranch``: a 1×1 conv → non-affine BN → ReLU, then the k×k conv — a plain
conv *with* a bias, or a bias-free depthwise + pointwise pair — then non-affine BN → ReLU), ``avg_pool_3x3``
and ``max_pool_3x3`` (``PoolBranch``: the same 1×1 conv-BN-ReLU, the pool, a non-affine BN). A skip
connection is an on/off choice: ``skip_connect`` (the identity, added to the layer's output) or ``none``.
"""

from __future__ import annotations

import torch
from torch import nn

from nasbench.spaces.enas_micro.ops import StdConv

BRANCHES: tuple[str, ...] = ("conv_3x3", "sep_conv_3x3", "conv_5x5", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")
"""A layer's candidate branches, in NNI's and the TF code's order (α columns follow it)."""

SKIP_OPS: tuple[str, ...] = ("none", "skip_connect")
"""A skip connection's two choices: off, on."""

LAYERS = 12
"""Layers of NNI's ``ENASMacroGeneralModel`` (and the TF search)."""


class ConvBranch(nn.Module):
    def __init__(self, C: int, kernel_size: int, separable: bool):
        super().__init__()
        self.preproc = StdConv(C, C)
        pad = kernel_size // 2
        if separable:
            self.conv: nn.Module = nn.Sequential(nn.Conv2d(C, C, kernel_size, padding=pad, groups=C, bias=False),
                                                 nn.Conv2d(C, C, 1, bias=False))
        else:
            self.conv = nn.Conv2d(C, C, kernel_size, padding=pad)  # with a bias, as NNI's
        self.postproc = nn.Sequential(nn.BatchNorm2d(C, affine=False), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.postproc(self.conv(self.preproc(x)))


class PoolBranch(nn.Module):
    def __init__(self, C: int, kind: str):
        super().__init__()
        self.preproc = StdConv(C, C)
        self.pool = (nn.MaxPool2d(3, 1, 1) if kind == "max" else nn.AvgPool2d(3, 1, 1, count_include_pad=False))
        self.bn = nn.BatchNorm2d(C, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pool(self.preproc(x)))


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The 'none' choice of a skip connection: zeros shaped like its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def build_op(name: str, C: int, stride: int = 1) -> nn.Module:
    if stride != 1:
        raise ValueError(f"the ENAS macro space's branches have stride 1, got {stride}")
    if name in ("conv_3x3", "sep_conv_3x3", "conv_5x5", "sep_conv_5x5"):
        return ConvBranch(C, 3 if "3x3" in name else 5, name.startswith("sep"))
    if name in ("avg_pool_3x3", "max_pool_3x3"):
        return PoolBranch(C, name[:3])
    if name == "skip_connect":
        return Identity()
    if name == "none":
        return Zero()
    raise ValueError(f"unknown ENAS macro op {name!r}; branches: {', '.join(BRANCHES)}; skips: none, skip_connect")
