"""Parameter and multiply-add counts of a model, by forward hooks on one dummy input.

Counted: ``nn.Conv2d`` (``out_h * out_w * out_channels * in_channels / groups * kh * kw``
multiply-adds per image) and ``nn.Linear`` (``in * out``). Pools, ReLUs, dropout and biases
are left out (under 1% for the AlexNet family). FLOPs are reported as 2 x MACs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelCost:
    """Size and per-image cost of a model at one input size."""

    params: int
    macs: int
    per_layer: dict[str, int]

    @property
    def flops(self) -> int:
        """Returns floating-point operations per image, counted as 2 x multiply-adds."""
        return 2 * self.macs


def count_params(model: nn.Module) -> int:
    """Returns the number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def model_cost(
    model: nn.Module, input_size: int | tuple[int, int], in_channels: int = 3
) -> ModelCost:
    """Returns the parameters and multiply-adds per image of ``model`` at ``input_size``.

    A model on the ``meta`` device works (shapes only), which keeps big models cheap to count.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    per_layer: dict[str, int] = {}

    def hook(name: str):
        def count(module: nn.Module, inputs, output) -> None:
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                per_out = module.in_channels // module.groups * kh * kw
                per_layer[name] = output[0].numel() * per_out
            else:
                per_layer[name] = module.in_features * module.out_features

        return count

    handles = [
        m.register_forward_hook(hook(name))
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, h, w, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return ModelCost(params=count_params(model), macs=sum(per_layer.values()), per_layer=per_layer)
