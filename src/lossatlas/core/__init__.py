"""The problem and its evaluation: a model with its loss and data, directions in weight space,
and the engine that evaluates many points of weight space per pass over the data."""

from __future__ import annotations

from lossatlas.core.batches import token_count
from lossatlas.core.cluster import RayOptions
from lossatlas.core.directions import (
    Directions,
    as_directions,
    axis_directions,
    direction_between,
    random_directions,
)
from lossatlas.core.engine import Evaluator
from lossatlas.core.metrics import accuracy, error
from lossatlas.core.planning import Plan
from lossatlas.core.problem import Problem

__all__ = [
    "Directions",
    "Evaluator",
    "Plan",
    "Problem",
    "RayOptions",
    "accuracy",
    "as_directions",
    "axis_directions",
    "direction_between",
    "error",
    "random_directions",
    "token_count",
]
