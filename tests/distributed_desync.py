"""Fault injection for tests/test_distributed.py: `nas` with rank 1's α nudged after its first step.

Started by torchrun like the real command; the per-epoch check across ranks must stop the run.
"""

import os

import torch

from nasbench.search import trainer
from nasbench.cli.app import main

_arch_step = trainer.SearchTrainer._arch_step


def _desynchronized_arch_step(self, *args, **kwargs):
    _arch_step(self, *args, **kwargs)
    if int(os.environ.get("RANK", "0")) == 1:
        with torch.no_grad():
            next(iter(self.strategy.arch.values())).add_(1e-3)


trainer.SearchTrainer._arch_step = _desynchronized_arch_step

if __name__ == "__main__":
    main()
