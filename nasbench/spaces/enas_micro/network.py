"""The ENAS micro networks' shared layout and the evaluation network, after NNI's ``MicroNetwork``
(``examples/nas/search_space_zoo/enas_micro_example.py``) and ``ENASMicroLayer`` (``enas_cell.py``).

Layout (:func:`cell_layout`): a stem (3×3 conv, bias-free, + BN) to 3C channels, then N + 2 cells
(``model.layers`` is N, NNI's ``num_layers``: the normal cells) with the two reduction cells at positions
N//3 and 2·(N//3) + 1 (the TF code's ``pool_layers``). A cell's channels are C, and twice its previous
cell's at a reduction cell. A cell takes the outputs of the two cells before it (the stem's output twice
for the first): a reduction cell first halves both with a :class:`~.ops.FactorizedReduce` (non-affine BN)
to its channels; then each input whose channels differ from the cell's is calibrated by a
:class:`~.ops.StdConv`. The cell passes on, as the next cell's first input, its second input as it received
it (after the factorized reduce in a reduction cell), as NNI's layer does.

A cell's output combines its loose ends (:class:`OutputConv`): ReLU on their concatenation, a 1×1 conv
back to the cell's channels, a non-affine BN. After the last cell: ReLU, global average pooling and a linear
classifier. The optional auxiliary head (the TF code's ``aux_head_indices``: after the cell that follows the
second reduction cell) is the DARTS space's CIFAR head, which is the TF code's head (ReLU, 5×5/3 average
pool, 1×1 conv 128 + BN + ReLU, 2×2 conv 768 + BN + ReLU, linear). Every Conv2d starts from Kaiming-normal
weights (NNI's ``reset_parameters``).
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nasbench.spaces.enas_micro.genotype import INPUTS, EnasMicroGenotype, Node, loose_ends
from nasbench.spaces.enas_micro.ops import Calibration, FactorizedReduce, Identity, build_op


def reduction_positions(N: int) -> tuple[int, int]:
    """Indices of the two reduction cells among the N + 2 cells."""
    d = N // 3
    return d, 2 * d + 1


def cell_layout(C: int, N: int) -> Iterator[tuple[int, int, int, bool]]:
    """(C_pp, C_p, C_cur, reduction) of each of the N + 2 cells (NNI's channel bookkeeping: the stem has 3C,
    a reduction cell doubles its previous cell's channels, and its first output is its reduced second input)."""
    c_pp = c_p = 3 * C
    c_cur = C
    pools = reduction_positions(N)
    for i in range(N + 2):
        reduction = i in pools
        if reduction:
            c_cur = 2 * c_p
        yield c_pp, c_p, c_cur, reduction
        if reduction:
            c_pp = c_p = c_cur
        c_pp, c_p = c_p, c_cur


def aux_position(N: int) -> int:
    """The cell after which the auxiliary head sits (the TF code: the one after the second reduction)."""
    return reduction_positions(N)[1] + 1


class CellInputs(nn.Module):
    """A cell's input processing: (factorized reduce at a reduction cell, then) calibration of each input."""

    def __init__(self, C_pp: int, C_p: int, C: int, reduction: bool):
        super().__init__()
        self.reduce0 = FactorizedReduce(C_pp, C, affine=False) if reduction else None
        self.reduce1 = FactorizedReduce(C_p, C, affine=False) if reduction else None
        if reduction:
            C_pp = C_p = C
        self.preproc0 = Calibration(C_pp, C)
        self.preproc1 = Calibration(C_p, C)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """→ (state 0, state 1, what the next cell receives as its first input)."""
        if self.reduce0 is not None:
            s0, s1 = self.reduce0(s0), self.reduce1(s1)
        return self.preproc0(s0), self.preproc1(s1), s1


class OutputConv(nn.Module):
    """ReLU → 1×1 conv from ``n_states``·C to C channels (no bias) → non-affine BN.

    The weight [C, n_states·C, 1, 1] is NNI's ``final_conv_w`` [C, n_states, C, 1, 1] with its state axis
    folded into the input channels (the same numbers, and the same Kaiming fan-in n_states·C): input channels
    ``k·C .. (k+1)·C`` read state ``k``. Kept 4-D so the network converts to channels_last.
    """

    def __init__(self, C: int, n_states: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(C, n_states * C, 1, 1))
        nn.init.kaiming_normal_(self.weight)
        self.bn = nn.BatchNorm2d(C, affine=False)

    def state_weight(self, states: Sequence[int]) -> torch.Tensor:
        """The weight slices of ``states`` (what NNI's ``final_conv_w[:, states]`` holds), [C, len·C, 1, 1]."""
        C = self.weight.shape[0]
        return torch.cat([self.weight[:, k * C:(k + 1) * C] for k in states], dim=1)

    def forward(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.bn(F.conv2d(F.relu(torch.cat(list(states), dim=1)), self.weight))


def kaiming_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)


# ---------------------------------------------------------------------------------------------- evaluation
class EvalCell(nn.Module):
    """One cell of a genotype: node i = op_a(state a) + op_b(state b); the output combines the loose ends.
    Drop-path (the trainer's ``drop_prob``) applies to every op but ``skip_connect``, as in the TF code."""

    def __init__(self, cell: Sequence[Node], C_pp: int, C_p: int, C: int, reduction: bool):
        super().__init__()
        self.inputs = CellInputs(C_pp, C_p, C, reduction)
        self.pairs = [j for node in cell for _, j in node]
        self.ops = nn.ModuleList(build_op(op, C) for node in cell for op, _ in node)
        self.loose = loose_ends(cell)
        self.output = OutputConv(C, len(self.loose))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        from nasbench.spaces.darts.network import drop_path

        a, b, passed = self.inputs(s0, s1)
        states = [a, b]
        for k in range(0, len(self.ops), 2):
            terms = []
            for op, j in ((self.ops[k], self.pairs[k]), (self.ops[k + 1], self.pairs[k + 1])):
                h = op(states[j])
                if self.training and drop_prob > 0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                terms.append(h)
            states.append(terms[0] + terms[1])
        return passed, self.output([states[k] for k in self.loose])


class EnasMicroNetwork(nn.Module):
    """The evaluation network of a genotype; ``forward(x)`` → ``(logits, auxiliary logits or None)``."""

    def __init__(self, genotype: EnasMicroGenotype, C: int, N: int, num_classes: int, auxiliary: bool,
                 in_channels: int = 3, dropout: float = 0.0, drop_path_by_layer: bool = False):
        super().__init__()
        from nasbench.spaces.darts.network import AuxiliaryHeadCIFAR

        self.drop_path_prob = 0.0
        self.dropout, self.drop_path_by_layer = dropout, drop_path_by_layer
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
        self.cells = nn.ModuleList()
        self._aux_index = aux_position(N)
        C_aux = C_last = 3 * C
        for i, (C_pp, C_p, C_cur, reduction) in enumerate(cell_layout(C, N)):
            self.cells.append(EvalCell(genotype.reduce if reduction else genotype.normal, C_pp, C_p, C_cur, reduction))
            C_last = C_cur
            if i == self._aux_index:
                C_aux = C_cur
        self.auxiliary_head: Optional[nn.Module] = AuxiliaryHeadCIFAR(C_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_last, num_classes)
        kaiming_init(self.stem)
        kaiming_init(self.cells)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        from nasbench.spaces.darts.network import classifier_dropout, layer_drop_prob

        s0 = s1 = self.stem(x)
        logits_aux = None
        n = len(self.cells)
        for i, cell in enumerate(self.cells):
            s0, s1 = cell(s0, s1, layer_drop_prob(self.drop_path_prob, i, n, self.drop_path_by_layer))
            if i == self._aux_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        out = self.global_pooling(F.relu(s1))
        return self.classifier(classifier_dropout(out.flatten(1), self.dropout, self.training)), logits_aux


__all__ = ["INPUTS", "CellInputs", "EnasMicroNetwork", "EvalCell", "OutputConv", "aux_position", "cell_layout",
           "reduction_positions"]
