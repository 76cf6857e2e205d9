"""Many minima: comparisons, interpolations and barriers, planes through models, low-loss curves,
and flat against sharp minima."""

from __future__ import annotations

from lossatlas.minima.comparison import MinimaComparison, compare_minima
from lossatlas.minima.curves import Curve, CurveLosses, curve_losses, fit_curve
from lossatlas.minima.flat_sharp import FlatSharpStudy, flat_vs_sharp
from lossatlas.minima.interpolation import BarrierMatrix, Interpolation, barrier_matrix, interpolate
from lossatlas.minima.plane import plane_through

__all__ = [
    "BarrierMatrix",
    "Curve",
    "CurveLosses",
    "FlatSharpStudy",
    "Interpolation",
    "MinimaComparison",
    "barrier_matrix",
    "compare_minima",
    "curve_losses",
    "fit_curve",
    "flat_vs_sharp",
    "interpolate",
    "plane_through",
]
