"""Ready-made metrics: functions `metric(outputs, targets)` returning a per-batch mean.

Structured outputs (tuples, dicts, Hugging Face `ModelOutput`s) are read for their logits.
"""

from __future__ import annotations

from typing import Any

import torch

from lossatlas.core.batches import logits_of


def accuracy(outputs: Any, targets: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy of class scores `outputs` (N, C) against integer labels `targets` (N,)."""
    logits = logits_of(outputs)
    return (logits.argmax(dim=-1) == targets).to(logits.dtype).mean()


def error(outputs: Any, targets: torch.Tensor) -> torch.Tensor:
    """Top-1 error, `1 - accuracy`."""
    return 1.0 - accuracy(outputs, targets)
