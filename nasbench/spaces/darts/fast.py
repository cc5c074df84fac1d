"""The fast execution of a search cell: the same modules and parameters as the reference, less work.

The reference forward (:meth:`nasbench.spaces.darts.supernet.SearchCell.forward`) runs every op of every edge on its
own, as the DARTS code does. This forward computes the same sums with these savings:

* what depends only on a source state is computed once per state, not once per edge: the ReLU that
  opens every convolution op (and, across cells, the preprocessing's ReLU of a cell's input: :class:`ReluMemo`), the max/avg pools with their non-affine BatchNorm (each edge's BN module
  still gets its own running-statistics update, from the one shared batch statistic), the identity, and
  for PC-DARTS the channel slices and the bypass pool;
* 'none' is neither computed nor summed (its weight still counts in the softmax that made the others);
* a node's weighted sum accumulates in place (``addcmul_``) instead of one temporary per op and edge, and a
  conv op's weight folds into its last BatchNorm (:func:`~nasbench.spaces.recompute.scaled_bn`), so the op's
  output is not kept for the weight's gradient;
* on CPU, a depthwise convolution with dilation d and stride 1 runs as an undilated convolution over the
  d×d pixel phases of its input (exact: every output pixel sums the same products; in channels_last the
  column phases fold into channels, a view, and the row phases into the batch), and one with stride
  d runs undilated on the stride-d subsampled input (:func:`~nasbench.spaces.darts.depthwise.dilated`);
  PyTorch's CPU kernels for dilated depthwise convolutions are several times slower than for undilated ones;
* on CPU, a BatchNorm of a narrow channels_last tensor (fewer than ``edges.NARROW_BN`` channels: PC-DARTS's slices)
  normalises in NCHW, where PyTorch's kernel is several times faster for so few channels;
* on CPU in channels_last, PC-DARTS's mixed ops run on their narrow slice with G images folded into the
  channels ([N/G, G·c, H, W], G·c ≤ 16: :mod:`nasbench.spaces.darts.folded`, :class:`FoldedSource`), whose
  convolutions and BatchNorms fill the CPU's vectors; a node unfolds its sum once, in the channel shuffle.

The ops keep less for the backward pass than the modules would: a separable or dilated conv op is one
autograd step that keeps the state it reads, and a separable one also its first BatchNorm's output, and
recomputes its depthwise convs and its last pointwise conv (:mod:`nasbench.spaces.darts.lean`; on CPU a dilated
one by pixel phases, forward and backward); a state's shared ReLU keeps the state, not its output
(:func:`~nasbench.spaces.darts.lean.relu_keeping_input`), and so do the next cells' preprocessings of a cell's
output, which keep its node states instead of the ReLU of their concatenation
(:func:`~nasbench.spaces.darts.lean.conv_bn_parts`; a factorized reduce keeps the ReLU of the two pixel phases it
reads). A bare pool times its op weight (GDAS: no BN after the pools) keeps only its input, recomputing the pool
(:func:`~nasbench.spaces.recompute.scaled_pool`: no max-pool indices, no pooled output for the weight's
gradient). With ``recompute_ops`` (off by default) each pointwise conv with the BatchNorm after it is one
autograd step that recomputes its output in the backward instead (:mod:`nasbench.spaces.recompute`).

Edges take part through ``contribute(node, source, w, scale, part)`` when they opt in (see
:mod:`nasbench.spaces.edges`); :class:`~nasbench.spaces.edges.MixedOp` implements it for every edge that is a weighted
sum of ops, and an algorithm whose edge does something else implements it in its own file.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nasbench.spaces import recompute
from nasbench.spaces.darts import depthwise, folded, lean
from nasbench.spaces.darts.ops import DilConv, FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero
from nasbench.spaces.edges import NodeSum, SourceCache, add_edge, batch_norm, channel_slice, format_of


# ---------------------------------------------------------------------------------------------- convolutions
def conv(m: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``m(x)``, computed the fastest exact way this module knows for ``x``'s device and layout."""
    if depthwise.phased(m, x):
        return depthwise.dilated(m, x)
    if type(m) is nn.Conv2d and m.bias is None and m.padding_mode == "zeros":
        return depthwise.conv2d(x, m.weight, m.stride, m.padding, m.dilation, m.groups)
    return m(x)


def run_module(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``m(x)`` for the DARTS space's building blocks, with every convolution through :func:`conv`."""
    if isinstance(m, nn.Conv2d):
        return conv(m, x)
    if isinstance(m, FactorizedReduce):
        return _factorized_reduce(m, F.relu(x))
    if isinstance(m, nn.BatchNorm2d):
        return batch_norm(m, x)
    if type(m) in (nn.Sequential, ReLUConvBN, SepConv, DilConv):
        for child in m:
            x = run_module(child, x)
        return x
    return m(x)


def _factorized_reduce(m: FactorizedReduce, relu_x: torch.Tensor) -> torch.Tensor:
    """:class:`FactorizedReduce` on an input that went through its ReLU already.

    Its two 1×1 stride-2 convs read the pixels (2i, 2j) and (2i+1, 2j+1) alone: they run at stride 1 on those
    two pixel phases (:class:`_Phases`), a quarter of the input each, instead of on the input and on its
    one-pixel shift ``x[:, :, 1:, 1:]``, which the reference copies whole and whose gradient it zero-fills
    whole, in NCHW whatever the layout.
    """
    if not _phases_apply(m, relu_x):
        return m.bn(torch.cat([conv(m.conv_1, relu_x), conv(m.conv_2, relu_x[:, :, 1:, 1:])], dim=1))
    return _reduce_phases(m, *_Phases.apply(relu_x))


def _reduce_phases(m: FactorizedReduce, even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    """:class:`FactorizedReduce`'s convs (at stride 1) and BN on the ReLU of its input's two pixel phases."""
    return m.bn(torch.cat([F.conv2d(even, m.conv_1.weight), F.conv2d(odd, m.conv_2.weight)], dim=1))


class _ReluPhases(torch.autograd.Function):
    """The ReLU of :class:`_Phases`'s two phases, computed on the phases alone and kept for the backward (the
    convs that read them keep them anyway) instead of a ReLU of the whole input."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmt = format_of(x)
        even = x[:, :, ::2, ::2].contiguous(memory_format=fmt).relu_()
        odd = x[:, :, 1::2, 1::2].contiguous(memory_format=fmt).relu_()
        ctx.shape, ctx.fmt = x.shape, fmt
        ctx.save_for_backward(even, odd)
        return even, odd

    @staticmethod
    def backward(ctx: Any, g_even: Optional[torch.Tensor], g_odd: Optional[torch.Tensor]) -> torch.Tensor:
        even, odd = ctx.saved_tensors
        return _phases_grad(ctx.shape, ctx.fmt, g_even, g_odd, relu_of=(even, odd))


def _phases_apply(m: FactorizedReduce, x: torch.Tensor) -> bool:
    return all(c.kernel_size == (1, 1) and c.stride == (2, 2) and c.padding == (0, 0) and c.dilation == (1, 1)
               and c.groups == 1 and c.bias is None for c in (m.conv_1, m.conv_2)) and x.dim() == 4


class _Phases(torch.autograd.Function):
    """``(x[:, :, ::2, ::2], x[:, :, 1::2, 1::2])``, each materialised in ``x``'s memory format; the backward
    writes both gradients into one zero tensor in that format (two slices' backwards would zero-fill two
    NCHW tensors of ``x``'s size and add them)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmt = format_of(x)
        ctx.shape, ctx.fmt = x.shape, fmt
        return (x[:, :, ::2, ::2].contiguous(memory_format=fmt), x[:, :, 1::2, 1::2].contiguous(memory_format=fmt))

    @staticmethod
    def backward(ctx: Any, g_even: Optional[torch.Tensor], g_odd: Optional[torch.Tensor]) -> torch.Tensor:
        return _phases_grad(ctx.shape, ctx.fmt, g_even, g_odd)


def _phases_grad(shape: torch.Size, fmt: torch.memory_format, g_even: Optional[torch.Tensor],
                 g_odd: Optional[torch.Tensor], relu_of: Optional[tuple[torch.Tensor, torch.Tensor]] = None
                 ) -> torch.Tensor:
    """The input gradient of the two pixel phases, in ``fmt``: each phase's gradient written into its pixels
    (with ``relu_of``, the phases' ReLU outputs, the ReLU's gradient of it, written there directly) and zeros
    into the other two phases, so that every element is written once."""
    like = g_even if g_even is not None else g_odd
    grad = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)
    grad[:, :, ::2, 1::2].zero_()
    grad[:, :, 1::2, ::2].zero_()
    for k, (g, at) in enumerate(((g_even, grad[:, :, ::2, ::2]), (g_odd, grad[:, :, 1::2, 1::2]))):
        if g is None:
            at.zero_()
        elif relu_of is None:
            at.copy_(g)
        else:
            torch.ops.aten.threshold_backward.grad_input(g, relu_of[k], 0, grad_input=at)
    return grad


class DartsSource(SourceCache):
    """A source state whose edges run the DARTS space's ops, sharing the ReLU, the pools with their BN, the
    identity and the channel slices. ``recompute``: the ops keep less for the backward
    (:mod:`nasbench.spaces.recompute`; the ``recompute_ops`` setting)."""

    keeps_input_relu = True  # the ReLU's backward reads the state (see relu); not for folded slices

    def __init__(self, x: torch.Tensor, recompute: bool = False):
        super().__init__(x)
        self.recompute = recompute
        self._pre: Optional[torch.Tensor] = None

    def relu(self) -> torch.Tensor:
        """The state's ReLU, shared by its edges' conv ops. Where they run as :func:`~nasbench.spaces.darts.lean.lean_chain`
        steps, its backward reads the state instead of its output and the steps keep the state too
        (:func:`~nasbench.spaces.darts.lean.relu_keeping_input`), so the ReLU's output is not kept for the backward."""
        if self._relu is None:
            if self.keeps_input_relu and lean.relu_applies(self.x):
                self._relu, self._pre = lean.relu_keeping_input(self.x), self.x
            else:
                self._relu = F.relu(self.x)
        return self._relu

    def _chain(self, op: nn.Module, w: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, bool]:
        """:func:`run_chain` of a conv op's modules after its ReLU, on this state's shared ReLU."""
        h = self.relu()  # first: it sets _pre
        return run_chain(list(op)[1:], h, w, fuse=self.recompute, pre=self._pre)

    def channels(self, start: int, stop: int) -> "DartsSource":
        part = super().channels(start, stop)
        part.recompute = self.recompute
        return part

    def op_channels(self, start: int, stop: int) -> "DartsSource":
        """The slice with images folded into its channels where that pays (:mod:`nasbench.spaces.darts.folded`;
        not with ``recompute``, whose fused steps take the plain slice)."""
        G = 1 if self.recompute else folded.groups(self.x, stop - start)
        if G == 1:
            return self.channels(start, stop)
        key = (start, stop, G)
        if key not in self._slices:
            self._slices[key] = FoldedSource(self.x, start, stop, G)
        return self._slices[key]

    def run(self, op: nn.Module) -> Optional[torch.Tensor]:
        """One candidate op on this source, reusing its shared work; None for 'none'."""
        if isinstance(op, Zero):
            return None
        if isinstance(op, Identity):
            return self.x
        if isinstance(op, (nn.MaxPool2d, nn.AvgPool2d)):  # a bare pool (model.pool_bn=false): shared too
            return self.pool(op)
        if _pool_then_bn(op):
            return self.pool_bn(op[0], op[1])
        if type(op) is nn.Sequential and len(op) == 2 and isinstance(op[0], Identity) \
                and isinstance(op[1], nn.Dropout):  # P-DARTS's skip dropout
            return self.dropped(op[1])
        if _relu_first(op):
            return self._chain(op)[0]
        if isinstance(op, FactorizedReduce):
            return _factorized_reduce(op, self.relu())
        return run_module(op, self.x)


    def add_to(self, node: NodeSum, op: nn.Module, w: Optional[torch.Tensor], part: str = "out") -> None:
        """A conv op's weight joins its last BN (:func:`run_chain`: the op's output is not kept for the
        weight's gradient); a bare pool's weight (GDAS: no BN after the pools) joins a pool that keeps only its
        input. Everything else as :meth:`SourceCache.add_to`."""
        if w is None:
            return super().add_to(node, op, w, part)
        if isinstance(op, (nn.MaxPool2d, nn.AvgPool2d)) and recompute.pool_applies(op, self.x):
            return node.add(recompute.scaled_pool(op, self.x, w), None, part, owned=True)
        if not _relu_first(op):
            return super().add_to(node, op, w, part)
        out, weighted = self._chain(op, w)
        if weighted:
            node.add(out, None, part, owned=True)
        else:
            node.add(out, w, part)


class FoldedSource(DartsSource):
    """Channels ``start:stop`` of a source ``whole`` with ``G`` images folded into them
    (:mod:`nasbench.spaces.darts.folded`): its ops return folded outputs. What folding does not cover runs on
    the plain slice (built on first use) and is folded afterwards. It holds ``whole``'s tensor, not its
    cache: a cache that held its slices and they it would outlive the step until the garbage collector ran."""

    keeps_input_relu = False  # its conv chains (folded.run_chain) keep the ReLU's output

    def __init__(self, whole: torch.Tensor, start: int, stop: int, G: int):
        super().__init__(folded.fold(whole, start, stop, G))
        self.G = G
        self._whole, self._range = whole, (start, stop)
        self._plain: Optional[DartsSource] = None

    def _on_plain(self, op: nn.Module) -> Optional[torch.Tensor]:
        if self._plain is None:
            self._plain = DartsSource(channel_slice(self._whole, *self._range))
        out = self._plain.run(op)
        return None if out is None else folded.fold(out, 0, out.shape[1], self.G)

    def op_channels(self, start: int, stop: int) -> "DartsSource":
        raise TypeError("a folded slice is not sliced again")

    def pool_bn(self, pool: nn.Module, bn: nn.BatchNorm2d) -> torch.Tensor:
        """As :meth:`SourceCache.pool_bn` (one normalisation per pool and eps for every edge), with the
        statistics pooled over the folded images; a BN folding does not cover runs on the plain slice."""
        if not (folded.bn_applies(bn) and bn.track_running_stats):
            return self._on_plain(nn.Sequential(pool, bn))
        if not bn.training:
            return folded.batch_norm(bn, self.pool(pool), self.G)
        return super().pool_bn(pool, bn)

    def _normalize_pool(self, p: torch.Tensor, eps: float, want_stats: bool
                        ) -> tuple[torch.Tensor, Optional[tuple[torch.Tensor, torch.Tensor]]]:
        y, mean, var = folded.normalize(p, self.G, eps)
        return y, (mean, folded.unbiased(var, p.numel() * self.G // p.shape[1]))

    def run(self, op: nn.Module) -> Optional[torch.Tensor]:
        """'none', the identity and the pools (with their BN: :meth:`pool_bn`) as :meth:`DartsSource.run` takes
        them; the conv chains folded; anything else (FactorizedReduce, a skip dropout, whose mask must be
        drawn on the plain images) on the plain slice."""
        if _relu_first(op):
            out = folded.run_chain(list(op)[1:], self.relu(), self.G)
            if out is not None:
                return out[0]
        elif isinstance(op, (Zero, Identity, nn.MaxPool2d, nn.AvgPool2d)) or _pool_then_bn(op):
            return super().run(op)
        return self._on_plain(op)

    def add_to(self, node: NodeSum, op: nn.Module, w: Optional[torch.Tensor], part: str = "out") -> None:
        """A conv op's weight joins its last BatchNorm, as :meth:`DartsSource.add_to` does."""
        if w is not None and _relu_first(op):
            out = folded.run_chain(list(op)[1:], self.relu(), self.G, w)
            if out is not None:
                node.add(out[0], None if out[1] else w, part, owned=out[1])
                return
        out = self.run(op)
        if out is not None:
            node.add(out, w, part)


def _pool_then_bn(op: nn.Module) -> bool:
    """A pool followed by its BatchNorm (the search space's pools, model.pool_bn)."""
    return (type(op) is nn.Sequential and len(op) == 2 and isinstance(op[0], (nn.MaxPool2d, nn.AvgPool2d))
            and isinstance(op[1], nn.BatchNorm2d))


def _relu_first(op: nn.Module) -> bool:
    return isinstance(op, (SepConv, DilConv, ReLUConvBN)) and isinstance(op[0], nn.ReLU)


def run_chain(children: list[nn.Module], h: torch.Tensor, scale: Optional[torch.Tensor] = None,
              fuse: bool = False, pre: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, bool]:
    """The modules ``children`` one after another on ``h``: a separable or dilated conv's blocks as one
    :func:`~nasbench.spaces.darts.lean.lean_chain` step where that applies (with ``fuse`` too: it keeps less than
    the fused steps). Otherwise, with ``fuse``, each pointwise conv with the BatchNorm (and ReLU) after it runs
    as one :func:`~nasbench.spaces.recompute.conv_bn` step where that applies, the last one also multiplying by
    ``scale``; otherwise a last BatchNorm multiplies by ``scale`` (:func:`~nasbench.spaces.recompute.scaled_bn`)
    where that applies. Returns the output and whether it is multiplied by ``scale`` already. ``pre``: the
    tensor ``h`` is the ReLU of, kept by a lean step instead of ``h``."""
    if lean.applies(children, h):
        return lean.lean_chain(children, h, scale, pre), scale is not None
    i, n, scaled = 0, len(children), False
    while i < n:
        if fuse and i + 1 < n and recompute.applies(children[i], children[i + 1], h):
            relu = i + 2 < n and type(children[i + 2]) is nn.ReLU
            last = i + 2 + relu == n
            scaled = last and not relu and scale is not None
            h = recompute.conv_bn(children[i], children[i + 1], h, relu, scale if scaled else None)
            i += 2 + relu
        elif scale is not None and i == n - 1 and recompute.bn_applies(children[i], h):
            h = recompute.scaled_bn(children[i], h, scale)
            scaled = True
            i += 1
        else:
            h = run_module(children[i], h)
            i += 1
    return h, scaled


# ---------------------------------------------------------------------------------------------- the cell
class ReluMemo:
    """``F.relu(x)`` once per tensor ``x`` across cells: every state of the supernet (the stem's output, each
    cell's concatenated output) is preprocessed by the next two cells, each opening with a ReLU of it (the
    stem's, by three preprocessings). Remembers the last few states by identity, holding them; for a cell's
    output also the node states it concatenates (:meth:`note_parts`), from which the preprocessings take it
    instead where they can (:func:`_preprocess`)."""

    KEEP = 3  # the stem and the two inputs of the cell being run

    def __init__(self) -> None:
        self._entries: list[dict[str, Any]] = []

    def _find(self, x: torch.Tensor) -> Optional[dict[str, Any]]:
        return next((e for e in self._entries if e["x"] is x), None)

    def _entry(self, x: torch.Tensor) -> dict[str, Any]:
        e = self._find(x)
        if e is None:
            e = {"x": x}
            self._entries = [*self._entries[-(self.KEEP - 1):], e]
        return e

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        e = self._entry(x)
        if "relu" not in e:
            e["relu"] = F.relu(x)
        return e["relu"]

    def note_parts(self, x: torch.Tensor, parts: list[torch.Tensor]) -> None:
        """``x`` is ``torch.cat(parts, dim=1)``."""
        self._entry(x)["parts"] = parts

    def parts(self, x: torch.Tensor) -> Optional[list[torch.Tensor]]:
        e = self._find(x)
        return None if e is None else e.get("parts")

    def detached(self, x: torch.Tensor) -> torch.Tensor:
        """``F.relu(x)`` without autograd, taken once for the preprocessings that keep a cell output's parts
        (:func:`~nasbench.spaces.darts.lean.conv_bn_parts`) and held until :meth:`let_go`."""
        e = self._entry(x)
        if "detached" not in e:
            with torch.no_grad():
                e["detached"] = F.relu(x)
        return e["detached"]

    def let_go(self, x: torch.Tensor) -> None:
        """Forget :meth:`detached`'s ReLU of ``x``: called once the last preprocessing that reads ``x`` has run."""
        e = self._find(x)
        if e is not None:
            e.pop("detached", None)


def _preprocess(m: nn.Module, x: torch.Tensor, relus: Optional[ReluMemo], fuse: bool = False) -> torch.Tensor:
    """A cell's input preprocessing (ReLU-conv1×1-BN or a factorized reduce), its ReLU from ``relus``; its
    conv and BN as one step that keeps the BN's output instead of its input (:func:`~nasbench.spaces.darts.lean.conv_bn`),
    or with ``fuse`` as one recomputing step (:func:`run_chain`). With ``relus``, the ReLU of a previous cell's
    output is kept by nothing: the conv-BN keeps the cell's node states instead
    (:func:`~nasbench.spaces.darts.lean.conv_bn_parts`), a factorized reduce the ReLU of the two pixel phases it
    reads (:class:`_ReluPhases`), which its convs keep anyway."""
    if isinstance(m, FactorizedReduce):
        if relus is not None and relus.parts(x) is not None and _phases_apply(m, x):
            return _reduce_phases(m, *_ReluPhases.apply(x))
        return _factorized_reduce(m, relus(x) if relus is not None else F.relu(x))
    if type(m) is ReLUConvBN and isinstance(m[0], nn.ReLU):
        parts = relus.parts(x) if relus is not None and not fuse else None
        if parts is not None and len(m) == 3 and lean.conv_bn_applies(m[1], m[2], x):
            return lean.conv_bn_parts(m[1], m[2], parts, relus.detached(x))
        h = relus(x) if relus is not None else F.relu(x)
        if not fuse and len(m) == 3 and lean.conv_bn_applies(m[1], m[2], h):
            return lean.conv_bn(m[1], m[2], h)
        return run_chain(list(m)[1:], h, fuse=fuse)[0]
    return run_module(m, x)


def cell_forward(cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor, w: Any,
                 relus: Optional[ReluMemo] = None) -> torch.Tensor:
    """The fast forward of a :class:`~nasbench.spaces.darts.supernet.SearchCell` (same result as its reference forward).

    Nodes are computed in the reference's order (node by node, inputs in order, ops in order), so ops that
    draw random numbers (P-DARTS's skip dropout) draw the same ones. ``relus`` shares the preprocessing's
    ReLUs with the other cells that read the same inputs.
    """
    fuse = bool(getattr(cell, "recompute_ops", False))
    states = [_preprocess(cell.preprocess0, s0, relus, fuse), _preprocess(cell.preprocess1, s1, relus, fuse)]
    if relus is not None:  # a cell output is preprocessed by the next cell (preprocess1) and this one (preprocess0)
        relus.let_go(s0)
    sources = [DartsSource(s, fuse) for s in states]
    scales = w.edges.unbind(0) if w.edges is not None else None
    N, C, H, W = states[0].shape
    shape = (N, C, -(-H // 2), -(-W // 2)) if cell.reduction else (N, C, H, W)
    topology = cell.topology
    for i in range(topology.nodes):
        node = NodeSum()
        for e in topology.node_edges(i):
            add_edge(node, cell.edges[e], sources[topology.edges[e][1]], w.ops[e],
                     None if scales is None else scales[e])
        out = node.result(shape, states[0])
        states.append(out)
        sources.append(DartsSource(out, fuse))
    parts = [states[k] for k in topology.output]
    out = torch.cat(parts, dim=1)
    if relus is not None:
        relus.note_parts(out, parts)
    return out
