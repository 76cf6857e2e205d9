"""Curvature and sharpness: Hessian-vector products, eigenpairs, trace, spectral density,
sharpness measures, the largest stable learning rate and the edge of stability."""

from __future__ import annotations

from lossatlas.curvature.average import AverageSharpness, average_sharpness
from lossatlas.curvature.density import Density, spectral_density
from lossatlas.curvature.edge import EdgeHistory, EdgeOfStability
from lossatlas.curvature.eigen import Eigen, hessian_directions, hessian_eigen, power_iteration
from lossatlas.curvature.operator import HessianOperator
from lossatlas.curvature.sharpness import (
    AdaptiveSharpness,
    EpsilonSharpness,
    adaptive_sharpness,
    epsilon_sharpness,
)
from lossatlas.curvature.stability import StableLR, max_stable_lr, stable_lr
from lossatlas.curvature.summary import SharpnessReport, sharpness_report
from lossatlas.curvature.trace import Trace, hessian_trace

__all__ = [
    "AdaptiveSharpness",
    "AverageSharpness",
    "Density",
    "EdgeHistory",
    "EdgeOfStability",
    "Eigen",
    "EpsilonSharpness",
    "HessianOperator",
    "SharpnessReport",
    "StableLR",
    "Trace",
    "adaptive_sharpness",
    "average_sharpness",
    "epsilon_sharpness",
    "hessian_directions",
    "hessian_eigen",
    "hessian_trace",
    "max_stable_lr",
    "power_iteration",
    "sharpness_report",
    "spectral_density",
    "stable_lr",
]
