"""The NAS-Bench-201 evaluation network (the official ``TinyNetwork`` with ``InferCell``).

Stem (3×3 conv, bias-free, + BN) to C channels; three stages of N cells at C, 2C and 4C channels, with a
stride-2 :class:`~nasbench.spaces.nas_bench_201.ops.ResNetBasicblock` between two stages; BN-ReLU, global
average pooling and a linear classifier. Every edge of the genotype is built, ``none`` edges too (zeros
that stay in the autograd graph, as in the official code): all BatchNorms are affine and track running
statistics. There is no auxiliary head and no drop-path (``drop_path_prob``, which train-final sets on
every network, is accepted and ignored).
"""

from __future__ import annotations

import torch
from torch import nn

from nasbench.spaces.darts.network import classifier_dropout
from nasbench.spaces.nas_bench_201.genotype import Nb201Genotype
from nasbench.spaces.nas_bench_201.ops import ResNetBasicblock, eval_op


class InferCell(nn.Module):
    """One cell of a genotype: node ``i`` sums its ops on states ``0 .. i-1``; the output is the last node."""

    def __init__(self, genotype: Nb201Genotype, C: int):
        super().__init__()
        self.inputs = [j for _, j, _ in genotype.edges]
        self.node_of = [i for _, _, i in genotype.edges]
        self.nodes = len(genotype.nodes)
        self.layers = nn.ModuleList(eval_op(op, C) for op, _, _ in genotype.edges)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        terms: list[torch.Tensor] = []
        for layer, j, i in zip(self.layers, self.inputs, self.node_of):
            terms.append(layer(states[j]))
            if len(terms) == i:  # node i has i incoming edges, consecutive in edge order
                states.append(sum(terms[1:], terms[0]))
                terms = []
        return states[-1]


def stage_layout(C: int, N: int) -> list[tuple[int, bool]]:
    """(channels, is the residual block) of each position: N cells, block, N cells, block, N cells."""
    return ([(C, False)] * N + [(2 * C, True)] + [(2 * C, False)] * N + [(4 * C, True)]
            + [(4 * C, False)] * N)


class TinyNetwork(nn.Module):
    """The evaluation network; ``forward(x)`` → ``(logits, None)``."""

    def __init__(self, genotype: Nb201Genotype, C: int, N: int, num_classes: int, in_channels: int = 3,
                 dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout  # before the classifier (the benchmark trains without)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        C_prev = C
        for C_curr, block in stage_layout(C, N):
            self.cells.append(ResNetBasicblock(C_prev, C_curr, 2) if block else InferCell(genotype, C_curr))
            C_prev = C_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self.drop_path_prob = 0.0  # set by train-final; NAS-Bench-201 networks have no drop-path

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        h = self.stem(x)
        for cell in self.cells:
            h = cell(h)
        h = self.global_pooling(self.lastact(h))
        return self.classifier(classifier_dropout(h.flatten(1), self.dropout, self.training)), None
