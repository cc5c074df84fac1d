"""The ENAS micro space's operations, as NNI's search-space zoo builds them (``enas_ops.py``, NNI 2.x).

Five candidate ops per edge, in the order of NNI's ``LayerChoice`` and of the ENAS TensorFlow code's op ids
(0–4): ``sep_conv_3x3`` and ``sep_conv_5x5`` (ReLU → depthwise k×k conv → pointwise 1×1 conv → BN, NNI's
``SepConvBN``, with an affine BN in both networks), ``avg_pool_3x3`` (padding not counted) and
``max_pool_3x3`` (bare pools, no BN), and ``skip_connect`` (NNI's ``nn.Identity``; named as in the DARTS
space so that P-DARTS's skip dropout and cap apply to it). There is no zero op: a node always takes two
inputs. Every op keeps the resolution and the channels (the reduction cell halves its inputs first).

Also here: :class:`StdConv` (1×1 conv → non-affine BN → ReLU, the channel calibration of a cell's inputs)
and :class:`FactorizedReduce` (two offset stride-2 1×1 convs concatenated → non-affine BN; unlike the DARTS
space's it has no ReLU first), as NNI defines them.
"""

from __future__ import annotations

import torch
from torch import nn

PRIMITIVES: tuple[str, ...] = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "skip_connect")
"""Candidate ops of one edge, in NNI's and the TF code's order (α columns follow it)."""

PARAMETER_FREE: frozenset[str] = frozenset({"avg_pool_3x3", "max_pool_3x3", "skip_connect"})

NODES = 5
"""Intermediate nodes per cell (NNI's ``num_nodes``, the TF code's ``child_num_cells``)."""

TF_OP_IDS = {name: k for k, name in enumerate(PRIMITIVES)}
"""The op ids of the ENAS TensorFlow code's architecture strings (0 sep 3×3, ..., 4 identity)."""


class StdConv(nn.Sequential):
    """1×1 conv (no bias) → BN (not affine) → ReLU."""

    def __init__(self, C_in: int, C_out: int):
        super().__init__(nn.Conv2d(C_in, C_out, 1, bias=False), nn.BatchNorm2d(C_out, affine=False), nn.ReLU())


class Calibration(nn.Module):
    """A cell input's channel calibration: :class:`StdConv` when the channels differ, else the identity."""

    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        self.process = StdConv(C_in, C_out) if C_in != C_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.process is None else self.process(x)


class FactorizedReduce(nn.Module):
    """Halve the resolution: two stride-2 1×1 convs (the second on the input shifted by one pixel), each to
    ``C_out/2`` channels, concatenated, then BN (NNI: not affine in the micro cell)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = False):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {C_out}")
        self.conv1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1))


class SepConvBN(nn.Sequential):
    """ReLU → depthwise k×k conv (padding k//2) → pointwise 1×1 conv (both bias-free) → affine BN."""

    def __init__(self, C: int, kernel_size: int):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(C, C, kernel_size, padding=kernel_size // 2, groups=C, bias=False),
            nn.Conv2d(C, C, 1, bias=False),
            nn.BatchNorm2d(C, affine=True),
        )


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def build_op(name: str, C: int, stride: int = 1) -> nn.Module:
    """Op ``name`` on ``C`` channels (the same module in the search and the evaluation network)."""
    if stride != 1:
        raise ValueError(f"the ENAS micro cell's edges have stride 1 (its reduction cell reduces its inputs "
                         f"first), got stride {stride}")
    if name == "sep_conv_3x3":
        return SepConvBN(C, 3)
    if name == "sep_conv_5x5":
        return SepConvBN(C, 5)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=1, padding=1)
    if name == "skip_connect":
        return Identity()
    raise ValueError(f"unknown ENAS micro op {name!r}; ops: {', '.join(PRIMITIVES)}")
