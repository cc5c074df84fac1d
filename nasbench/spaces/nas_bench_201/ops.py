"""The NAS-Bench-201 space's operations (Dong and Yang, ICLR 2020; the official ``cell_operations.py``).

Five candidate ops per edge, in α column order: ``none`` (zeros), ``skip_connect`` (identity),
``nor_conv_1x1`` and ``nor_conv_3x3`` (ReLU → conv → BN) and ``avg_pool_3x3`` (3×3, stride 1, padding 1,
padding not counted, no BN). Every cell edge keeps its channels and resolution, so the ops here are built
at stride 1 with ``C_in == C_out``; only :class:`Pooling` and :class:`ReLUConvBN` take different channel
counts (a pool then first maps the channels with a 1×1 ReLU-conv-BN, as the official ``POOLING`` does).

As in the official code, a convolution has a bias exactly when its BatchNorm is not affine
(``bias=not affine``): the search network's ops (non-affine BN) carry conv biases, the evaluation
network's (affine BN) do not. The residual blocks between the stages (:class:`ResNetBasicblock`) are
the same in both networks.
"""

from __future__ import annotations

import torch
from torch import nn

PRIMITIVES: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""Candidate ops of one edge, in the official order (α columns follow it)."""

PARAMETER_FREE: frozenset[str] = frozenset({"none", "skip_connect", "avg_pool_3x3"})
"""Ops without weights."""

NODES = 3
"""Intermediate nodes per cell (the official ``max_nodes`` is 4: the input and these three)."""


class ReLUConvBN(nn.Sequential):
    """ReLU → conv(k, stride, padding) → BN; the conv has a bias when the BN is not affine."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool,
                 track_running_stats: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=not affine),
            nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats),
        )


class Pooling(nn.Module):
    """3×3 average pooling (padding not counted); a 1×1 ReLU-conv-BN first when the channels change."""

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool, track_running_stats: bool = True):
        super().__init__()
        self.preprocess = (None if C_in == C_out
                           else ReLUConvBN(C_in, C_out, 1, 1, 0, affine, track_running_stats))
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocess is not None:
            x = self.preprocess(x)
        return self.pool(x)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The 'none' op: zeros shaped like its input (every cell edge keeps shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class ResNetBasicblock(nn.Module):
    """The block between two stages: two 3×3 ReLU-conv-BN (the first with the stride) plus a shortcut (at
    stride 2: 2×2 average pooling and a bias-free 1×1 conv; else a 1×1 ReLU-conv-BN if the channels change).
    All BatchNorms affine, as in both official networks."""

    def __init__(self, C_in: int, C_out: int, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ResNetBasicblock takes stride 1 or 2, got {stride}")
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1, affine=True)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine=True)
        if stride == 2:
            self.downsample: nn.Module | None = nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                nn.Conv2d(C_in, C_out, kernel_size=1, stride=1, padding=0, bias=False),
            )
        elif C_in != C_out:
            self.downsample = ReLUConvBN(C_in, C_out, 1, 1, 0, affine=True)
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return residual + self.conv_b(self.conv_a(x))


def build_op(name: str, C_in: int, C_out: int, stride: int, affine: bool, track_running_stats: bool = True
             ) -> nn.Module:
    """Op ``name`` from ``C_in`` to ``C_out`` channels (stride 1 only: the cell has no reduction edges)."""
    if stride != 1:
        raise ValueError(f"the NAS-Bench-201 cell has no strided edges, got stride {stride}")
    if name == "none":
        if C_in != C_out:
            raise ValueError(f"'none' keeps the channels; got {C_in} → {C_out}")
        return Zero()
    if name == "skip_connect":
        if C_in != C_out:
            raise ValueError(f"'skip_connect' keeps the channels; got {C_in} → {C_out}")
        return Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(C_in, C_out, 1, 1, 0, affine, track_running_stats)
    if name == "nor_conv_3x3":
        return ReLUConvBN(C_in, C_out, 3, 1, 1, affine, track_running_stats)
    if name == "avg_pool_3x3":
        return Pooling(C_in, C_out, 1, affine, track_running_stats)
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}; ops: {', '.join(PRIMITIVES)}")


def search_op(name: str, C: int, stride: int) -> nn.Module:
    """An op as the search network uses it: non-affine BN (so biased convs), running statistics tracked
    (the search network turns tracking off afterwards where the run asks for it)."""
    return build_op(name, C, C, stride, affine=False)


def eval_op(name: str, C: int) -> nn.Module:
    """An op as the evaluation network uses it: affine BN tracking running statistics, bias-free convs."""
    return build_op(name, C, C, 1, affine=True)


def untrack_running_stats(module: nn.Module) -> None:
    """Make every BatchNorm in ``module`` normalise with batch statistics always (the official
    ``track_running_stats=False``): no running buffers, as the BatchNorm constructor leaves them."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
            m.num_batches_tracked = None
