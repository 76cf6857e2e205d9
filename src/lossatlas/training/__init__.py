"""Seeded training of private copies: one run, a grid of runs over seeds and settings,
or models trained elsewhere read from checkpoints (weights only)."""

from __future__ import annotations

from lossatlas.training.checkpoints import from_checkpoints, read_state_dict
from lossatlas.training.runs import train_runs
from lossatlas.training.trainer import TrainedModel, train

__all__ = [
    "TrainedModel",
    "from_checkpoints",
    "read_state_dict",
    "train",
    "train_runs",
]
