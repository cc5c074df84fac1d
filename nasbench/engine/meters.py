"""Running loss and accuracy of an epoch, and their sum over the ranks of a distributed run."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nasbench.engine import distributed


@dataclass
class Meter:
    loss: float = 0.0
    correct: int = 0
    n: int = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        b = y.shape[0]
        self.loss += float(loss) * b
        self.correct += int((logits.argmax(1) == y).sum())
        self.n += b

    @property
    def avg_loss(self) -> float:
        return self.loss / max(self.n, 1)

    @property
    def acc(self) -> float:
        return 100.0 * self.correct / max(self.n, 1)

    def state(self) -> dict[str, float]:
        return {"loss": self.loss, "correct": self.correct, "n": self.n}


def sum_meter(meter: Meter, d: distributed.Dist) -> Meter:
    """``meter`` summed over the ranks of a distributed run (each rank saw its shard); itself otherwise."""
    if not d.enabled:
        return meter
    loss, correct, n = d.sum([meter.loss, meter.correct, meter.n])
    return Meter(loss, int(correct), int(n))
