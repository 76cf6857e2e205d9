"""Seeded training of private copies: one run, or a grid of runs over seeds and settings."""

from __future__ import annotations

from lossatlas.training.runs import train_runs
from lossatlas.training.trainer import TrainedModel, train

__all__ = [
    "TrainedModel",
    "train",
    "train_runs",
]
