"""Edges of a search cell and the contract between an edge and a supernet's execution.

An edge module (a strategy's ``make_edge``) has ``forward(x, w)``: its output for input state ``x`` given
what the strategy's ``edge_weights`` produced for it (``None`` when it computes nothing). A space's fast
execution may instead call ``contribute(node, src, w, scale, part)``, which adds ``scale · forward(x, w)``
to the node's :class:`NodeSum` reusing the source's shared work (:class:`SourceCache`). It does so only for
an edge that opts in: one whose class defines ``contribute`` at or below the class that defines its
``forward`` (:func:`uses_contribute`). An edge that overrides only ``forward`` is always run through its
``forward``, so a new edge type can never silently compute its parent's output.

:class:`MixedOp` is the weighted sum of candidate ops that DARTS, PC-DARTS, P-DARTS and SGAS put on an
edge; its ops come from the space (``build_op``), so it works in every space.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

OpBuilder = Callable[[str, int, int], nn.Module]
"""(op name, C, stride) → the op module (a space's ``search_op``)."""


def format_of(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


NARROW_BN = 16
"""On CPU, PyTorch's channels_last BatchNorm kernels vectorise over channels: with fewer than this many
channels (PC-DARTS's C/K slices) they run 2–5× slower than the NCHW kernels, more than the two layout
copies cost (the README's PC-DARTS profile: 3.4 ms against 0.96 ms forward+backward at 64×4×32×32)."""


def narrow_detour(x: torch.Tensor, channels: int) -> bool:
    """Whether a BatchNorm of ``channels`` channels on ``x`` (or on a tensor of ``x``'s device and layout) runs
    in NCHW: a narrow channels_last tensor on CPU (see :data:`NARROW_BN`)."""
    return (x.device.type == "cpu" and x.dim() == 4 and channels < NARROW_BN
            and format_of(x) == torch.channels_last)


def batch_norm(bn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``bn(x)`` for a BatchNorm module or a function that batch-normalises its one argument; a narrow
    channels_last ``x`` on CPU is normalised in NCHW (the same ``bn`` runs: same statistics, same
    running-statistics update) and handed back in channels_last."""
    if x.dim() == 4 and narrow_detour(x, x.shape[1]):
        return bn(x.contiguous()).contiguous(memory_format=torch.channels_last)
    return bn(x)


def layout_slice(x: torch.Tensor, index: tuple) -> torch.Tensor:
    """``x[index]`` (basic indexing that keeps the 4 dims: channel ranges, strided pixels) materialised in
    ``x``'s memory format, and its gradient too (:class:`_LayoutSlice`)."""
    if x.dim() != 4 or not torch.is_grad_enabled() or not x.requires_grad:
        return x[index].contiguous(memory_format=format_of(x))
    return _LayoutSlice.apply(x, index)


def channel_slice(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """``x[:, start:stop]`` in ``x``'s memory format, forward and backward (:func:`layout_slice`)."""
    return layout_slice(x, (slice(None), slice(start, stop)))


class _LayoutSlice(torch.autograd.Function):
    """Autograd's slice backward zero-fills an NCHW tensor whatever the layout; a channels_last state whose
    gradient arrives in NCHW sends every gradient op before it (gradient sums, BatchNorm, ReLU and conv
    backwards) to mixed layouts, several times slower on CPU. This backward writes into a zero tensor of the
    input's layout (PC-DARTS's channel slices of every state, a stride-2 dilated conv's subsampling)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, index: tuple) -> torch.Tensor:
        fmt = format_of(x)
        ctx.shape, ctx.fmt, ctx.index = x.shape, fmt, index
        return x[index].contiguous(memory_format=fmt)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = torch.empty(ctx.shape, dtype=g.dtype, device=g.device, memory_format=ctx.fmt).zero_()
        grad[ctx.index] = g
        return grad, None


def global_pool(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``pool(x)`` for an ``nn.AdaptiveAvgPool2d(1)`` (a search network's head), its input gradient in ``x``'s
    memory format: autograd's backward of the mean expands into NCHW, which sends the last cell's whole
    backward onto mixed layouts."""
    if type(pool) is nn.AdaptiveAvgPool2d and pool.output_size in (1, (1, 1)) and x.dim() == 4:
        return _GlobalPool.apply(x)
    return pool(x)


class _GlobalPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.shape, ctx.fmt = x.shape, format_of(x)
        return F.adaptive_avg_pool2d(x, 1)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        N, C, H, W = ctx.shape
        grad = torch.empty(ctx.shape, dtype=g.dtype, device=g.device, memory_format=ctx.fmt)
        return grad.copy_((g / (H * W)).expand(N, C, H, W))


def nchw(x: torch.Tensor) -> torch.Tensor:
    """``x`` in NCHW memory, its gradient handed back in ``x``'s own layout. Autograd's copy would hand a
    channels_last ``x`` the NCHW gradient, and some backward kernels of the op before it are several times
    slower with mixed layouts than one copy (the pools': 11 against 2.5 ms at 64×16×32×32 on CPU)."""
    if not torch.is_grad_enabled() or not x.requires_grad or format_of(x) == torch.contiguous_format:
        return x.contiguous()
    return _NCHW.apply(x)


class _NCHW(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.fmt = format_of(x)
        return x.contiguous()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g.contiguous(memory_format=ctx.fmt)


def dense_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself, whose gradient is handed back materialised in ``x``'s memory format. For a tensor whose
    gradient arrives as a strided view (a piece of a stack's or a concatenation's gradient) and is read by
    many ops: each would otherwise copy it, or run its slow strided kernel, on its own (PC-DARTS's node sums
    of the mixed channels, read by every op of every edge into the node)."""
    if not torch.is_grad_enabled() or not x.requires_grad:
        return x
    return _DenseGrad.apply(x)


class _DenseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.fmt = format_of(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g.contiguous(memory_format=ctx.fmt)


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

    def run(self, op: nn.Module) -> Optional[torch.Tensor]:
        """``op(x)``, reusing this source's shared work where the space knows how; None for an op that adds
        nothing (the zero op). Spaces with a fast execution override this for their op types."""
        return op(self.x)

    def add_to(self, node: "NodeSum", op: nn.Module, w: Optional[torch.Tensor], part: str = "out") -> None:
        """``node[part] += w · op(x)`` (``w`` None: unweighted), through :meth:`run`; a space may fuse the
        weighting into the op's last step (the DARTS space's conv ops: :mod:`nasbench.spaces.recompute`)."""
        out = self.run(op)
        if out is not None:
            node.add(out, w, part)

    def relu(self) -> torch.Tensor:
        if self._relu is None:
            self._relu = F.relu(self.x)
        return self._relu

    def dropped(self, dropout: nn.Dropout) -> torch.Tensor:
        """``dropout(x)`` with the mask drawn in NCHW order whatever ``x``'s layout, so that it is the mask the
        reference (NCHW) draws from the same generator state; ``x`` itself outside training or at p = 0 (where
        ``F.dropout`` draws nothing)."""
        if not (dropout.training and dropout.p > 0):
            return self.x
        return dropout(self.x.contiguous()).contiguous(memory_format=format_of(self.x))

    def channels(self, start: int, stop: int) -> "SourceCache":
        """The cache of ``x[:, start:stop]`` (materialised once, in ``x``'s memory format)."""
        key = (start, stop)
        if key not in self._slices:
            self._slices[key] = type(self)(channel_slice(self.x, start, stop))
        return self._slices[key]

    def op_channels(self, start: int, stop: int) -> "SourceCache":
        """The slice ``x[:, start:stop]`` for ops whose outputs a node sums into a part it finishes with
        :func:`unfolded` (PC-DARTS's mixed channels): :meth:`channels`, or, where a space's fast execution
        folds images into the channels of narrow slices, that folded slice."""
        return self.channels(start, stop)

    def pool(self, pool: nn.Module) -> torch.Tensor:
        key = repr(pool)  # the type and every setting (kernel, stride, padding, count_include_pad, ...)
        if key not in self._pools:
            self._pools[key] = pool(self.x)
        return self._pools[key]

    def pool_bn(self, pool: nn.Module, bn: nn.BatchNorm2d) -> torch.Tensor:
        """``bn(pool(x))`` with ``bn`` non-affine: the pool and, in training, the normalisation are shared.

        In training the output depends on the batch alone, so one normalisation serves every edge; each
        ``bn`` still gets its running-statistics update as if it had run (from the shared batch mean and
        unbiased variance). The normalisation yields those statistics itself (its batch mean and 1/std), so
        no separate variance pass runs (``var_mean`` serves where it cannot: autocast, other dtypes, a second
        ``eps``). A narrow channels_last batch normalises in NCHW as :func:`batch_norm` does, through
        :func:`nchw`, so the pool's backward gets its gradient in its own layout. In eval mode each ``bn``
        normalises with its own running statistics.
        """
        p = self.pool(pool)
        if bn.affine or not bn.track_running_stats:
            return bn(p)
        if not bn.training:
            return F.batch_norm(p, bn.running_mean, bn.running_var, None, None, False, 0.0, bn.eps)
        key = repr(pool)
        nkey = (key, bn.eps)
        if nkey not in self._normalized:
            self._normalized[nkey], stats = self._normalize_pool(p, bn.eps, key not in self._stats)
            if stats is not None:
                self._stats[key] = stats
        if key not in self._stats:
            with torch.no_grad():
                x = p if p.dtype in (torch.float32, torch.float64) else p.float()
                var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=True)
            self._stats[key] = (mean, var)
        update_running_stats(bn, *self._stats[key])
        return self._normalized[nkey]

    def _normalize_pool(self, p: torch.Tensor, eps: float, want_stats: bool
                        ) -> tuple[torch.Tensor, Optional[tuple[torch.Tensor, torch.Tensor]]]:
        """The training-mode non-affine normalisation of a pool's output ``p`` for :meth:`pool_bn`, and, when
        ``want_stats`` and it can give them, its batch mean and unbiased variance (else None)."""
        detour = narrow_detour(p, p.shape[1])
        q = nchw(p) if detour else p
        stats = None
        if want_stats and _stats_from_norm(p):
            # the normalisation's own batch statistics give the running-statistics update
            out, mean, invstd = torch.native_batch_norm(q, None, None, None, None, True, 0.0, eps)
            n = p.numel() // p.shape[1]
            with torch.no_grad():  # the unbiased variance, from invstd = 1/sqrt(biased variance + eps)
                biased = invstd.double().pow(-2) - eps  # ≥ 0 up to rounding (0 for a constant channel)
                var = biased.maximum(torch.zeros_like(biased)) * (n / max(n - 1, 1))
            stats = (mean.detach(), var.to(mean.dtype))
        else:
            out = F.batch_norm(q, None, None, None, None, True, 0.0, eps)
        return (out.contiguous(memory_format=torch.channels_last) if detour else out), stats


def _stats_from_norm(p: torch.Tensor) -> bool:
    """Whether :meth:`SourceCache.pool_bn` can take the batch statistics from the normalisation itself: a
    float32/float64 batch of more than one value per channel, no autocast (which would pick the dtype)."""
    return (p.dtype in (torch.float32, torch.float64) and p.dim() == 4 and p.numel() > p.shape[1]
            and not torch.is_autocast_enabled(p.device.type))


def update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor) -> None:
    """What a training-mode forward of ``bn`` does to its buffers, given the batch ``mean`` and unbiased ``var``."""
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.mul_(1.0 - m).add_(mean.to(bn.running_mean.dtype), alpha=m)
        bn.running_var.mul_(1.0 - m).add_(var.to(bn.running_var.dtype), alpha=m)


def unfolded(part: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A node part summed from :meth:`SourceCache.op_channels` slices, with ``like``'s batch again: a part of
    [N/G, G·c, H, W] (channel g·c + i holding channel i of image n·G + g) becomes [N, c, H, W] in
    channels_last; any other part is returned as it is."""
    if part.shape[0] == like.shape[0]:
        return part
    G = like.shape[0] // part.shape[0]
    B, Gc, H, W = part.shape
    c = Gc // G
    nhwc = part.permute(0, 2, 3, 1).reshape(B, H, W, G, c).permute(0, 3, 1, 2, 4).reshape(B * G, H, W, c)
    return nhwc.permute(0, 3, 1, 2)


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

    def add(self, t: torch.Tensor, w: Optional[torch.Tensor] = None, part: str = "out", owned: bool = False) -> None:
        """parts[part] += w·t (or t). ``owned``: ``t`` is a fresh tensor nothing else reads, which the sum may
        take over and accumulate into."""
        cur = self.parts.get(part)
        if cur is None:
            if w is None:
                self.parts[part] = t  # unless owned, not ours to modify: the next term adds out of place
                if owned:
                    self._owned.add(part)
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
            out = torch.zeros(shape, dtype=like.dtype, device=like.device).contiguous(memory_format=format_of(like))
        if self.scalar is not None:
            out = out + self.scalar
        return out


def _accumulates(cur: torch.Tensor, t: torch.Tensor) -> bool:
    """Whether ``cur += t`` in place keeps ``cur``'s dtype (mixed precision may need a wider result)."""
    return torch.result_type(cur, t) == cur.dtype


# ---------------------------------------------------------------------------------------------- the contract
def _defined_in(cls: type, attr: str) -> Optional[type]:
    for klass in cls.__mro__:
        if attr in vars(klass):
            return klass
    return None


@functools.lru_cache(maxsize=None)
def _contributes(cls: type) -> bool:
    c, f = _defined_in(cls, "contribute"), _defined_in(cls, "forward")
    return c is not None and f is not None and issubclass(c, f)


def uses_contribute(edge: nn.Module) -> bool:
    """Whether a fast execution may call ``edge.contribute`` instead of ``edge(x, w)``: only when the class
    that defines ``contribute`` is the one that defines ``forward`` or a subclass of it."""
    return _contributes(type(edge))


def add_edge(node: "NodeSum", edge: nn.Module, src: SourceCache, w: Any, scale: Optional[torch.Tensor]) -> None:
    """``node += scale · edge(src.x, w)``, through ``contribute`` when the edge opts in."""
    if uses_contribute(edge):
        edge.contribute(node, src, w, scale)
        return
    out = edge(src.x, w)
    if out is not None:
        node.add(out, scale)


# ---------------------------------------------------------------------------------------------- mixed op
class MixedOp(nn.Module):
    """A DARTS edge: ō(x) = Σ_k w_k · o_k(x) over the edge's candidate ops.

    ``w`` may also be an ``int`` (compute only that op, unweighted: a decided edge) or ``None`` (the
    edge is pruned and contributes nothing).
    """

    def __init__(self, C: int, stride: int, ops: Sequence[str], build_op: OpBuilder):
        super().__init__()
        self.ops = nn.ModuleList(build_op(name, C, stride) for name in ops)

    def forward(self, x: torch.Tensor, w: Any) -> Optional[torch.Tensor]:
        if w is None:
            return None
        if isinstance(w, int):
            return self.ops[w](x)
        return sum(wk * op(x) for wk, op in zip(w, self.ops))

    def contribute(self, node: NodeSum, src: SourceCache, w: Any, scale: Optional[torch.Tensor],
                   part: str = "out") -> None:
        """``node[part] += scale · forward(src.x, w)``, each op through the source's shared work."""
        if w is None:
            return
        if isinstance(w, int):
            src.add_to(node, self.ops[w], scale, part)
            return
        weights = (w * scale if scale is not None else w).unbind(0)
        for op, wk in zip(self.ops, weights):
            src.add_to(node, op, wk, part)
