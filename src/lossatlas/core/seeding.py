"""Seeded initialisation of a model's layers, drawing from a private generator only."""

from __future__ import annotations

import math

import torch
from torch import nn


def init_layers(model: nn.Module, gen: torch.Generator) -> None:
    """PyTorch's default initialisation of every layer, random draws from `gen` only.

    For `Linear` and `Conv2d` the default (Kaiming-uniform with `a = sqrt(5)`) is uniform on
    `+-1/sqrt(fan_in)` for the weight and the bias alike; BatchNorm is reset to scale 1, shift 0
    and fresh running statistics (no random draw). Models are built with `nn.utils.skip_init`
    so that their construction does not draw from the global RNG either.
    """
    for layer in model.modules():
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            layer.reset_parameters()  # whatever a failed cache load may have left there
        elif isinstance(layer, (nn.Linear, nn.Conv2d)):
            bound = 1.0 / math.sqrt(layer.weight[0].numel())  # fan_in, whatever the layer
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=gen)
                if layer.bias is not None:
                    layer.bias.uniform_(-bound, bound, generator=gen)
