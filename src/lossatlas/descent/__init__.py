"""Optimizers on surfaces: analytic test functions, single runs, sweeps and fair comparisons."""

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
