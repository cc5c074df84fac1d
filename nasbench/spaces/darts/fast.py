"""The fast execution of a search cell: the same modules and parameters as the reference, less work.

The reference forward (:meth:`nasbench.spaces.darts.supernet.SearchCell.forward`) runs every op of every edge on its
own, as the DARTS code does. This forward computes the same sums with these savings:

* what depends only on a source state is computed once per state, not once per edge: the ReLU that
  opens every convolution op, the max/avg pools with their non-affine BatchNorm (each edge's BN module
  still gets its own running-statistics update, from the one shared batch statistic), the identity, and
  for PC-DARTS the channel slices and the bypass pool;
* 'none' is neither computed nor summed (its weight still counts in the softmax that made the others);
* a node's weighted sum accumulates in place (``addcmul_``) instead of one temporary per op and edge;
* on CPU, a depthwise convolution with dilation d and stride 1 runs as an undilated convolution over the
  d×d pixel phases of its input (exact: every output pixel sums the same products), and one with stride
  d runs undilated on the stride-d subsampled input; PyTorch's CPU kernels for dilated depthwise
  convolutions are several times slower than for undilated ones;

Edges take part through ``contribute(node, source, w, scale, part)`` (see :class:`NodeSum` and
:class:`SourceCache`); :class:`~nasbench.spaces.darts.supernet.MixedOp` implements it for every edge that is a weighted
sum of ops, and an algorithm whose edge does something else implements it in its own file.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nasbench.spaces.darts.ops import DilConv, FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero


def _format_of(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


# ---------------------------------------------------------------------------------------------- convolutions
def conv(m: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``m(x)``, computed the fastest exact way this module knows for ``x``'s device and layout."""
    if x.device.type == "cpu" and m.dilation != (1, 1) and _phase_conv_applies(m):
        return _dilated_depthwise(m, x)
    return m(x)


def _phase_conv_applies(m: nn.Conv2d) -> bool:
    d, s, k, p = m.dilation[0], m.stride[0], m.kernel_size[0], m.padding
    return (m.groups == m.in_channels == m.out_channels and m.bias is None and m.dilation == (d, d)
            and m.stride == (s, s) and m.kernel_size == (k, k) and k % 2 == 1
            and p == (d * (k - 1) // 2,) * 2 and s in (1, d) and m.padding_mode == "zeros")


def _dilated_depthwise(m: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A same-padded depthwise conv with dilation d as an undilated conv (padding (k−1)/2).

    Output pixel (i, j) sums w[a, b]·x[i + d(a − r), j + d(b − r)] (r = (k−1)/2): only input pixels of the
    same phase (i mod d, j mod d) meet, so each of the d² phase images convolves undilated, and the results
    interleave back. With stride d only phase (0, 0) is needed: the conv runs on x[::d, ::d].
    """
    d, k = m.dilation[0], m.kernel_size[0]
    pad = (k - 1) // 2
    if m.stride[0] == d:
        return F.conv2d(x[:, :, ::d, ::d], m.weight, None, 1, pad, 1, m.groups)
    N, C, H, W = x.shape
    Hp, Wp = -(-H // d) * d, -(-W // d) * d
    if (Hp, Wp) != (H, W):  # zero rows/columns at the end change nothing: the conv pads with zeros anyway
        x = F.pad(x, (0, Wp - W, 0, Hp - H))
    h, w = Hp // d, Wp // d
    # [N, C, h, d, w, d] → [d, d, N, h, w, C] → a channels_last batch of d² phase images
    phases = x.reshape(N, C, h, d, w, d).permute(3, 5, 0, 2, 4, 1).reshape(d * d * N, h, w, C).permute(0, 3, 1, 2)
    y = F.conv2d(phases, m.weight, None, 1, pad, 1, m.groups)
    y = y.permute(0, 2, 3, 1).reshape(d, d, N, h, w, C).permute(2, 3, 0, 4, 1, 5).reshape(N, Hp, Wp, C)
    y = y.permute(0, 3, 1, 2)
    if (Hp, Wp) != (H, W):
        y = y[:, :, :H, :W]
    return y


def run_module(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``m(x)`` for the DARTS space's building blocks, with every convolution through :func:`conv`."""
    if isinstance(m, nn.Conv2d):
        return conv(m, x)
    if isinstance(m, FactorizedReduce):
        return _factorized_reduce(m, F.relu(x))
    if type(m) in (nn.Sequential, ReLUConvBN, SepConv, DilConv):
        for child in m:
            x = run_module(child, x)
        return x
    return m(x)


def _factorized_reduce(m: FactorizedReduce, relu_x: torch.Tensor) -> torch.Tensor:
    """:class:`FactorizedReduce` on an input that went through its ReLU already."""
    return m.bn(torch.cat([conv(m.conv_1, relu_x), conv(m.conv_2, relu_x[:, :, 1:, 1:])], dim=1))


# ---------------------------------------------------------------------------------------------- shared work
class SourceCache:
    """What the edges leaving one state share: the state ``x``, its ReLU, its pools and channel slices."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self._relu: Optional[torch.Tensor] = None
        self._pools: dict[str, torch.Tensor] = {}
        self._normalized: dict[tuple[str, float], torch.Tensor] = {}
        self._stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._slices: dict[tuple[int, int], SourceCache] = {}

    def relu(self) -> torch.Tensor:
        if self._relu is None:
            self._relu = F.relu(self.x)
        return self._relu

    def channels(self, start: int, stop: int) -> "SourceCache":
        """The cache of ``x[:, start:stop]`` (materialised once, in ``x``'s memory format)."""
        key = (start, stop)
        if key not in self._slices:
            self._slices[key] = SourceCache(self.x[:, start:stop].contiguous(memory_format=_format_of(self.x)))
        return self._slices[key]

    def pool(self, pool: nn.Module) -> torch.Tensor:
        key = repr(pool)  # the type and every setting (kernel, stride, padding, count_include_pad, ...)
        if key not in self._pools:
            self._pools[key] = pool(self.x)
        return self._pools[key]

    def pool_bn(self, pool: nn.Module, bn: nn.BatchNorm2d) -> torch.Tensor:
        """``bn(pool(x))`` with ``bn`` non-affine: the pool and, in training, the normalisation are shared.

        In training the output depends on the batch alone, so one normalisation serves every edge; each
        ``bn`` still gets its running-statistics update as if it had run (from the shared batch mean and
        unbiased variance). In eval mode each ``bn`` normalises with its own running statistics.
        """
        p = self.pool(pool)
        if bn.affine or not bn.track_running_stats:
            return bn(p)
        if not bn.training:
            return F.batch_norm(p, bn.running_mean, bn.running_var, None, None, False, 0.0, bn.eps)
        key = repr(pool)
        if key not in self._stats:
            with torch.no_grad():
                q = p if p.dtype in (torch.float32, torch.float64) else p.float()
                var, mean = torch.var_mean(q, dim=(0, 2, 3), unbiased=True)
            self._stats[key] = (mean, var)
        update_running_stats(bn, *self._stats[key])
        nkey = (key, bn.eps)
        if nkey not in self._normalized:
            self._normalized[nkey] = F.batch_norm(p, None, None, None, None, True, 0.0, bn.eps)
        return self._normalized[nkey]


def update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor) -> None:
    """What a training-mode forward of ``bn`` does to its buffers, given the batch ``mean`` and unbiased ``var``."""
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.mul_(1.0 - m).add_(mean.to(bn.running_mean.dtype), alpha=m)
        bn.running_var.mul_(1.0 - m).add_(var.to(bn.running_var.dtype), alpha=m)


def run_op(op: nn.Module, src: SourceCache) -> Optional[torch.Tensor]:
    """One candidate op on a source, reusing the source's shared work; None for 'none'."""
    if isinstance(op, Zero):
        return None
    if isinstance(op, Identity):
        return src.x
    if type(op) is nn.Sequential and len(op) == 2:
        first, second = op[0], op[1]
        if isinstance(first, (nn.MaxPool2d, nn.AvgPool2d)) and isinstance(second, nn.BatchNorm2d):
            return src.pool_bn(first, second)
        if isinstance(first, Identity) and isinstance(second, nn.Dropout):
            # F.dropout returns its input unchanged (and draws nothing) outside training or at p = 0
            if not (second.training and second.p > 0):
                return src.x
            # the mask is drawn in NCHW order whatever the layout, so it is the reference's mask
            return second(src.x.contiguous()).contiguous(memory_format=_format_of(src.x))
    if isinstance(op, (SepConv, DilConv, ReLUConvBN)) and isinstance(op[0], nn.ReLU):
        h = src.relu()
        for child in list(op)[1:]:
            h = run_module(child, h)
        return h
    if isinstance(op, FactorizedReduce):
        return _factorized_reduce(op, src.relu())
    return run_module(op, src.x)


# ---------------------------------------------------------------------------------------------- node sums
class NodeSum:
    """An intermediate node's sum, accumulated in place.

    Terms go to named ``parts`` (just ``"out"`` for a plain sum); an edge whose output is assembled from
    parts (PC-DARTS: the mixed channels and the bypassed ones) sets ``finish`` to combine them. Scalar
    terms (GDAS's straight-through weights of the ops it did not run) are added to the result.
    """

    def __init__(self) -> None:
        self.parts: dict[str, torch.Tensor] = {}
        self._owned: set[str] = set()
        self.scalar: Optional[torch.Tensor] = None
        self.finish: Optional[Callable[[dict[str, torch.Tensor]], Optional[torch.Tensor]]] = None

    def add(self, t: torch.Tensor, w: Optional[torch.Tensor] = None, part: str = "out") -> None:
        """parts[part] += w·t (or t)."""
        cur = self.parts.get(part)
        if cur is None:
            if w is None:
                self.parts[part] = t  # not ours to modify: the next term adds out of place
            else:
                self.parts[part] = t * w
                self._owned.add(part)
        elif part in self._owned and _accumulates(cur, t):
            if w is None:
                cur.add_(t)
            else:
                cur.addcmul_(t, w)
        else:
            self.parts[part] = cur + t if w is None else torch.addcmul(cur, t, w)
            self._owned.add(part)

    def add_scalar(self, s: torch.Tensor) -> None:
        self.scalar = s if self.scalar is None else self.scalar + s

    def result(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        out = self.finish(self.parts) if self.finish is not None else self.parts.get("out")
        if out is None:  # every incoming edge computed nothing
            out = torch.zeros(shape, dtype=like.dtype, device=like.device).contiguous(memory_format=_format_of(like))
        if self.scalar is not None:
            out = out + self.scalar
        return out


def _accumulates(cur: torch.Tensor, t: torch.Tensor) -> bool:
    """Whether ``cur += t`` in place keeps ``cur``'s dtype (mixed precision may need a wider result)."""
    return torch.result_type(cur, t) == cur.dtype


# ---------------------------------------------------------------------------------------------- the cell
def cell_forward(cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor, w: Any) -> torch.Tensor:
    """The fast forward of a :class:`~nasbench.spaces.darts.supernet.SearchCell` (same result as its reference forward).

    Nodes are computed in the reference's order (node by node, inputs in order, ops in order), so ops that
    draw random numbers (P-DARTS's skip dropout) draw the same ones.
    """
    states = [run_module(cell.preprocess0, s0), run_module(cell.preprocess1, s1)]
    sources = [SourceCache(s) for s in states]
    scales = w.edges.unbind(0) if w.edges is not None else None
    N, C, H, W = states[0].shape
    shape = (N, C, -(-H // 2), -(-W // 2)) if cell.reduction else (N, C, H, W)
    offset = 0
    for _ in range(cell.steps):
        node = NodeSum()
        for j, src in enumerate(sources):
            e = offset + j
            cell.edges[e].contribute(node, src, w.ops[e], None if scales is None else scales[e])
        offset += len(sources)
        out = node.result(shape, states[0])
        states.append(out)
        sources.append(SourceCache(out))
    return torch.cat(states[-cell.multiplier:], dim=1)
