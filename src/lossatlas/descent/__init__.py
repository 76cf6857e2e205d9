"""Optimizers on surfaces: analytic test functions, single runs, sweeps and fair comparisons.

Example:
    Gradient descent on the bowl `(x - 2)^2 + (y + 3)^2` with learning rate `lr` multiplies the
    distance to the minimum by `1 - 2 lr` per step, so the loss by `(1 - 2 lr)^2 = 0.36` at
    `lr = 0.2`:

    >>> import lossatlas as la
    >>> run = la.descend(la.get_function("bowl"), [0.0, 0.0], optimizer="sgd", lr=0.2, steps=3)
    >>> [round(float(v / run.loss[0]), 6) for v in run.loss]
    [1.0, 0.36, 0.1296, 0.046656]
"""

from __future__ import annotations

from lossatlas.descent.comparison import Comparison, compare
from lossatlas.descent.functions import (
    FUNCTIONS,
    TestFunction,
    get_function,
    list_functions,
    register_function,
)
from lossatlas.descent.optimizers import OPTIMIZERS, SCHEDULES
from lossatlas.descent.run import Trajectory, descend
from lossatlas.descent.sweeps import Run, Sweep, sweep

__all__ = [
    "FUNCTIONS",
    "OPTIMIZERS",
    "SCHEDULES",
    "Comparison",
    "Run",
    "Sweep",
    "TestFunction",
    "Trajectory",
    "compare",
    "descend",
    "get_function",
    "list_functions",
    "register_function",
    "sweep",
]
