"""The evaluation network: a searched (discrete) cell stacked into the DARTS train-from-scratch model.

The layout follows the DARTS code's ``cnn/model.py`` weight for weight, so that parameter counts
reproduce the published figures (DARTS_V2 at C=36, 20 layers, 10 classes: 3,349,342 parameters
without the auxiliary head):

* :class:`EvalCell` — one discrete cell: two preprocessed inputs, ``len(genotype.normal) // 2``
  intermediate nodes, each the sum of two ops; output the channel concat of the ``concat`` states.
* :class:`FixedReductionCell` — GDAS-FRC's hand-designed reduction cell (AutoDL-Projects'
  ``GDAS_Reduction_Cell``), used wherever a genotype has ``reduce is None``.
* :class:`NetworkCIFAR` / :class:`NetworkImageNet` — stems, cells with reductions at ``layers // 3``
  and ``2 * layers // 3``, optional auxiliary head after cell ``2 * layers // 3``, global pooling and
  a linear classifier. ``forward`` returns ``(logits, logits_aux)``; ``logits_aux`` is ``None``
  unless the model is in training mode and was built with ``auxiliary=True``.

Genotypes are duck-typed: anything with ``normal``, ``normal_concat``, ``reduce`` and
``reduce_concat`` attributes (``normal``/``reduce`` sequences of ``(op_name, input_index)`` pairs,
two per node) works.

Tensor shapes below use N = batch, C = channels, H×W = spatial size.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nasbench.errors import ConfigError, GenotypeError
from nasbench.spaces.darts.genotype import check_cell, check_concat
from nasbench.spaces.darts.ops import OPS, PRIMITIVES, FactorizedReduce, Identity, ReLUConvBN

__all__ = [
    "drop_path",
    "layer_drop_prob",
    "classifier_dropout",
    "EvalCell",
    "FixedReductionCell",
    "AuxiliaryHeadCIFAR",
    "AuxiliaryHeadImageNet",
    "NetworkCIFAR",
    "NetworkImageNet",
    "build_eval_network",
]


# --------------------------------------------------------------------------------------------------
# drop path


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Drop whole samples of an op's output [N, C, H, W] with probability ``drop_prob``.

    Each sample is kept with probability ``keep = 1 - drop_prob`` and then scaled by ``1 / keep`` so
    the expectation is unchanged; a dropped sample becomes all zeros. Returns ``x`` itself when
    ``drop_prob <= 0``. Never modifies ``x`` in place (it may be needed by autograd).
    """
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.size(0), 1, 1, 1)).bernoulli_(keep)
    return x.div(keep).mul(mask)


# --------------------------------------------------------------------------------------------------
# cells


def _check_cell(ops: Sequence[Any], concat: Sequence[int], which: str) -> tuple[list[str], list[int], list[int]]:
    """Validate one cell description (the genotype's own rules, for as many nodes as it has pairs); returns
    (op names, input indices, concat) as lists."""
    try:
        pairs = tuple((name, index) for name, index in ops)
        concat_t = tuple(concat)
    except (TypeError, ValueError) as exc:
        raise GenotypeError(f"{which} cell: expected (op_name, input_index) pairs, got {ops!r}") from exc
    if not pairs or len(pairs) % 2:
        raise GenotypeError(f"{which} cell: need two (op, input) pairs per node, got {len(pairs)} pairs")
    steps = len(pairs) // 2
    check_cell(pairs, which, PRIMITIVES, steps)
    check_concat(concat_t, f"{which}_concat", steps)
    names, indices = zip(*pairs)
    return list(names), list(indices), list(concat_t)


class EvalCell(nn.Module):
    """One discrete cell of the evaluation network (affine BatchNorm throughout).

    Inputs ``s0`` [N, C_pp, H0, W0] (output of the cell before the previous one) and ``s1``
    [N, C_p, H, W] (previous cell). After a reduction cell ``s0`` has twice the resolution of ``s1``
    and is brought down by a :class:`FactorizedReduce`. Output: [N, multiplier·C, H', W'] with
    H' = H/2 in a reduction cell, else H.
    """

    def __init__(self, genotype: Any, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_pp, C, affine=True)
        else:
            self.preprocess0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=True)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=True)

        if reduction:
            names, indices, concat = _check_cell(genotype.reduce, genotype.reduce_concat, "reduce")
        else:
            names, indices, concat = _check_cell(genotype.normal, genotype.normal_concat, "normal")
        self._steps = len(names) // 2
        self._indices = indices
        self._concat = concat
        self.multiplier = len(concat)
        self._ops = nn.ModuleList(
            OPS[name](C, 2 if reduction and index < 2 else 1, True) for name, index in zip(names, indices)
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        """Cell output from the two previous states; drop-path (training only) on non-identity ops."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        use_drop = self.training and drop_prob > 0.0
        for i in range(self._steps):
            node = None
            for k in (2 * i, 2 * i + 1):
                op = self._ops[k]
                h = op(states[self._indices[k]])
                if use_drop and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                node = h if node is None else node + h
            states.append(node)
        return torch.cat([states[i] for i in self._concat], dim=1)


def _frc_conv_branch(C: int, affine: bool = True) -> nn.Sequential:
    """ReLU → grouped 1×3 conv (stride 1,2) → grouped 3×1 conv (stride 2,1) → BN → ReLU → 1×1 conv → BN.

    As in AutoDL-Projects, the convs carry a bias exactly when the BNs are not affine (search version).
    """
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(C, C, (1, 3), stride=(1, 2), padding=(0, 1), groups=8, bias=not affine),
        nn.Conv2d(C, C, (3, 1), stride=(2, 1), padding=(1, 0), groups=8, bias=not affine),
        nn.BatchNorm2d(C, affine=affine),
        nn.ReLU(inplace=False),
        nn.Conv2d(C, C, 1, stride=1, padding=0, bias=not affine),
        nn.BatchNorm2d(C, affine=affine),
    )


def _frc_pool_branch(C: int, affine: bool = True) -> nn.Sequential:
    """3×3 max pool, stride 2 → BN."""
    return nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), nn.BatchNorm2d(C, affine=affine))


class FixedReductionCell(nn.Module):
    """GDAS-FRC's hand-designed reduction cell (Dong & Yang, CVPR 2019; AutoDL-Projects).

    Both inputs are preprocessed as in :class:`EvalCell` to [N, C, H, W]. Four branches, each
    halving the resolution: a factorized grouped-conv branch on each preprocessed input and a
    3×3/2 max-pool + BN branch on each preprocessed input. Output [N, 4·C, H/2, W/2], the four
    branches concatenated; in training each branch gets drop-path. ``C`` must be a multiple of 8
    (grouped convs with 8 groups).
    """

    multiplier = 4

    def __init__(self, C_pp: int, C_p: int, C: int, reduction_prev: bool, affine: bool = True):
        super().__init__()
        if C % 8:
            raise ConfigError(f"the GDAS fixed reduction cell needs channels divisible by 8, got {C}")
        self.reduction = True
        # affine=False: the search supernet's version (GDAS-FRC search), non-affine BN throughout
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_pp, C, affine=affine)
        else:
            self.preprocess0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=affine)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=affine)
        self.ops1 = nn.ModuleList([_frc_conv_branch(C, affine), _frc_conv_branch(C, affine)])
        self.ops2 = nn.ModuleList([_frc_pool_branch(C, affine), _frc_pool_branch(C, affine)])

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        """Concat of conv(s0), conv(s1), pool(s0), pool(s1) (all preprocessed), drop-path in training."""
        s0 = self.preprocess0(s0)
        s1 = self.preprocess1(s1)
        outs = [self.ops1[0](s0), self.ops1[1](s1), self.ops2[0](s0), self.ops2[1](s1)]
        if self.training and drop_prob > 0.0:
            outs = [drop_path(o, drop_prob) for o in outs]
        return torch.cat(outs, dim=1)


# --------------------------------------------------------------------------------------------------
# auxiliary heads


def _aux_pool(x: torch.Tensor, pool: nn.AvgPool2d) -> torch.Tensor:
    """Apply a head's 5×5 no-padding average ``pool`` to [N, C, H, W]; when it would not give the
    2×2 map that the following 2×2 conv expects, use an adaptive average pool to 2×2 instead."""
    k, stride = 5, int(pool.stride if isinstance(pool.stride, int) else pool.stride[0])
    H, W = x.shape[-2:]
    if H >= k and W >= k and (H - k) // stride + 1 == 2 and (W - k) // stride + 1 == 2:
        return pool(x)
    return F.adaptive_avg_pool2d(x, 2)


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier on the [N, C, 8, 8] output of cell ``2·layers//3`` → logits [N, classes].

    ReLU → 5×5 avg pool stride 3 (→ 2×2) → 1×1 conv to 128 → BN → ReLU → 2×2 conv to 768 → BN →
    ReLU → linear. Weights are exactly the DARTS code's. Deviation for other input sizes: the DARTS
    pool only yields 2×2 for 8–10 pixel maps; on anything else (e.g. 7×7 for 28×28 MNIST-like
    images, where the fixed pool gives 1×1 and the 2×2 conv cannot run) an adaptive average pool to
    2×2 replaces it. Pooling has no weights, so the parameter count is unchanged, and at 8×8 the
    computation is the original one.
    """

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        # same layout (and state-dict keys) as the DARTS head; index 1 is bypassed by _aux_pool
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Cell output [N, C, H, W] → auxiliary logits [N, classes]."""
        x = _aux_pool(self.features[0](x), self.features[1])
        x = self.features[2:](x)
        return self.classifier(x.flatten(1))


class AuxiliaryHeadImageNet(nn.Module):
    """Auxiliary classifier for the ImageNet network → logits [N, classes].

    ReLU → 5×5 avg pool stride 2 → 1×1 conv to 128 → BN → ReLU → 2×2 conv to 768 → ReLU → linear;
    as in the DARTS code there is *no* BN after the 768-channel conv. (The DARTS docstring says
    14×14 input, but at 224×224 the head actually sees the 7×7 output of the second reduction cell,
    which the stride-2 pool brings to 2×2.) Other sizes use an adaptive 2×2 pool, as in
    :class:`AuxiliaryHeadCIFAR`.
    """

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Cell output [N, C, H, W] → auxiliary logits [N, classes]."""
        x = _aux_pool(self.features[0](x), self.features[1])
        x = self.features[2:](x)
        return self.classifier(x.flatten(1))


# --------------------------------------------------------------------------------------------------
# networks


def _make_cell(genotype: Any, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool) -> nn.Module:
    if reduction and genotype.reduce is None:
        return FixedReductionCell(C_pp, C_p, C, reduction_prev)
    return EvalCell(genotype, C_pp, C_p, C, reduction, reduction_prev)


def _check_sizes(C: int, layers: int, num_classes: int) -> None:
    if C < 1 or layers < 1 or num_classes < 1:
        raise ConfigError(f"need C, layers and num_classes >= 1, got C={C}, layers={layers}, classes={num_classes}")


def layer_drop_prob(drop_prob: float, i: int, cells: int, by_layer: bool) -> float:
    """Cell ``i``'s drop-path probability out of ``cells``: ``drop_prob`` for every cell, or with ``by_layer``
    ``drop_prob·(i + 1)/cells``, rising with depth to ``drop_prob`` at the last cell (the ENAS TF code's layer
    ratio, as in NASNet's ScheduledDropPath)."""
    return drop_prob * (i + 1) / cells if by_layer else drop_prob


def classifier_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout of the pooled features before the classifier (the ENAS TF code's ``1 − keep_prob``); at ``p = 0``
    the features pass unchanged and no random number is drawn."""
    return F.dropout(x, p, training) if p > 0 else x


class _Network(nn.Module):
    """Shared cell stack: builds ``self.cells`` and the optional auxiliary head."""

    drop_path_prob: float
    drop_path_by_layer: bool = False
    dropout: float = 0.0

    def _build_cells(self, genotype: Any, C_pp: int, C_p: int, C_curr: int, layers: int,
                     reduction_prev: bool) -> tuple[int, int]:
        """Append the cells; returns (channels out of the last cell, channels into the aux head)."""
        self.cells = nn.ModuleList()
        self._aux_index = 2 * layers // 3
        C_aux = C_p
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = _make_cell(genotype, C_pp, C_p, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_curr
            if i == self._aux_index:
                C_aux = C_p
        return C_p, C_aux

    def _run_cells(self, s0: torch.Tensor, s1: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        logits_aux = None
        n = len(self.cells)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, layer_drop_prob(self.drop_path_prob, i, n, self.drop_path_by_layer))
            if i == self._aux_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        return s1, logits_aux


class NetworkCIFAR(_Network):
    """The DARTS CIFAR evaluation network.

    Input images [N, in_channels, H, W] (32×32 CIFAR; also 28×28 MNIST-like or 16×16). Output
    ``(logits [N, classes], logits_aux [N, classes] or None)``. ``drop_path_prob`` is set by the
    trainer each epoch (0 disables drop-path).
    """

    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool, genotype: Any,
                 in_channels: int = 3, dropout: float = 0.0, drop_path_by_layer: bool = False):
        super().__init__()
        _check_sizes(C, layers, num_classes)
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = 0.0
        self.dropout, self.drop_path_by_layer = dropout, drop_path_by_layer
        C_stem = 3 * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_stem),
        )
        C_last, C_aux = self._build_cells(genotype, C_stem, C_stem, C, layers, reduction_prev=False)
        self.auxiliary_head: Optional[nn.Module] = AuxiliaryHeadCIFAR(C_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_last, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Images [N, in_channels, H, W] → (logits, auxiliary logits in training else None)."""
        s = self.stem(x)
        out, logits_aux = self._run_cells(s, s)
        logits = self.classifier(classifier_dropout(self.global_pooling(out).flatten(1), self.dropout, self.training))
        return logits, logits_aux


class ImageNetStem(nn.Module):
    """The ImageNet stems of DARTS's ``NetworkImageNet`` (``C_stem = C``) and of PC-DARTS's ImageNet search
    (``model_search_imagenet.Network``, ``C_stem = stem_multiplier·C``):

    * ``stem0``: conv3×3 stride 2 (in → C_stem/2) + BN + ReLU + conv3×3 stride 2 (C_stem/2 → C_stem) + BN;
    * ``stem1``: ReLU + conv3×3 stride 2 (C_stem → C_stem) + BN (affine BNs, convs without bias, padding 1).

    ``forward(x)`` returns ``(s0, s1)`` = (stem0(x), stem1(stem0(x))): 224×224 → 56×56 and 28×28. The first cell
    takes s0 at twice s1's resolution, so it reduces s0 (factorized reduce) as a cell after a reduction does.
    (DARTS's evaluation stem0 runs its ReLU in place; the result is the same.)
    """

    def __init__(self, in_channels: int, C_stem: int):
        super().__init__()
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C_stem // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C_stem // 2),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_stem // 2, C_stem, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C_stem),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_stem, C_stem, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C_stem),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


class NetworkImageNet(_Network):
    """The DARTS ImageNet (mobile setting) evaluation network.

    Input images [N, 3, 224, 224]: stem0 (two stride-2 convs) → 56×56, stem1 (stride-2 conv) →
    28×28, cells (first one treats its s0 as coming from a reduction), two reductions → 7×7, 7×7
    average pool, linear. For inputs other than 224 the final pool is adaptive (same result at 7×7).
    Output ``(logits, logits_aux or None)``.
    """

    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool, genotype: Any,
                 dropout: float = 0.0, drop_path_by_layer: bool = False):
        super().__init__()
        _check_sizes(C, layers, num_classes)
        if C % 2:
            raise ConfigError(f"the ImageNet network needs an even C, got {C}")
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = 0.0
        self.dropout, self.drop_path_by_layer = dropout, drop_path_by_layer
        stem = ImageNetStem(3, C)  # DARTS's NetworkImageNet stems, the same as PC-DARTS's ImageNet search
        self.stem0, self.stem1 = stem.stem0, stem.stem1
        C_last, C_aux = self._build_cells(genotype, C, C, C, layers, reduction_prev=True)
        self.auxiliary_head: Optional[nn.Module] = (
            AuxiliaryHeadImageNet(C_aux, num_classes) if auxiliary else None
        )
        self.classifier = nn.Linear(C_last, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Images [N, 3, H, W] → (logits, auxiliary logits in training else None)."""
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        out, logits_aux = self._run_cells(s0, s1)
        if out.shape[-2:] == (7, 7):
            out = F.avg_pool2d(out, 7)
        else:
            out = F.adaptive_avg_pool2d(out, 1)
        logits = self.classifier(classifier_dropout(out.flatten(1), self.dropout, self.training))
        return logits, logits_aux


def build_eval_network(genotype: Any, *, C: int, layers: int, num_classes: int, auxiliary: bool,
                       in_channels: int = 3, imagenet: bool = False, dropout: float = 0.0,
                       drop_path_by_layer: bool = False) -> nn.Module:
    """The evaluation network for ``genotype``: :class:`NetworkImageNet` if ``imagenet`` else
    :class:`NetworkCIFAR` (the ImageNet stems take 3 channels only)."""
    extra = {"dropout": dropout, "drop_path_by_layer": drop_path_by_layer}
    if imagenet:
        if in_channels != 3:
            raise ConfigError(f"the ImageNet network takes 3-channel images, got in_channels={in_channels}")
        return NetworkImageNet(C, num_classes, layers, auxiliary, genotype, **extra)
    return NetworkCIFAR(C, num_classes, layers, auxiliary, genotype, in_channels=in_channels, **extra)
