"""Sizes of a network: parameters, multiply-accumulates, supernet weights (no space or algorithm knowledge)."""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module, exclude_auxiliary: bool = True) -> int:
    """Number of parameters; by default without those of the auxiliary head (names containing
    "auxiliary"), as the DARTS code reports them."""
    return sum(p.numel() for name, p in model.named_parameters()
               if not (exclude_auxiliary and "auxiliary" in name))


def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on a single [1, C, H, W] image (the papers' "FLOPs").

    Runs the model once in eval mode (so no auxiliary head, no drop-path) on zeros under
    :class:`torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs per MAC of convolutions
    and matrix products (not BN, activations or pooling), and halves its total. The model's
    training flag is restored afterwards.
    """
    # imported here: torch.utils.flop_counter imports triton (0.1 s), which a search or a mistake on the
    # command line does not need
    from torch.utils.flop_counter import FlopCounterMode

    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    x = torch.zeros((1, *input_size), device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def count_weights(net: nn.Module) -> int:
    """Number of supernet weights (architecture parameters live in the strategy, not here)."""
    return sum(p.numel() for p in net.parameters())
