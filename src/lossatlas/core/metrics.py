"""Ready-made metrics: functions `metric(outputs, targets)` returning a per-batch mean."""

from __future__ import annotations

import torch


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy of class scores `outputs` (N, C) against integer labels `targets` (N,)."""
    return (outputs.argmax(dim=-1) == targets).to(outputs.dtype).mean()


def error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Top-1 error, `1 - accuracy`."""
    return 1.0 - accuracy(outputs, targets)
