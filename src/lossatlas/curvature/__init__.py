"""Curvature and sharpness: Hessian-vector products, eigenpairs, trace, spectral density,
sharpness measures, the largest stable learning rate and the edge of stability.

Example:
    For linear regression with the mean squared error the Hessian is `2/n X^T X` with
    `X = [x, 1]`, whatever the weights, so Lanczos can be checked against the closed form, and
    gradient descent is stable below `2 / lambda_max` (`(2 + 2 beta) / lambda_max` with
    heavy-ball momentum `beta`):

    >>> import torch
    >>> import lossatlas as la
    >>> x = torch.linspace(0, 1, 100, dtype=torch.float64)[:, None]
    >>> X = torch.cat([x, torch.ones_like(x)], 1)
    >>> closed_form = torch.linalg.eigvalsh(2 / 100 * X.T @ X).max().item()
    >>> eig = la.hessian_eigen(la.linreg(n=100), k=1)
    >>> bool(abs(eig.eigenvalues[0] - closed_form) < 1e-9 * closed_form)
    True
    >>> round(la.max_stable_lr(closed_form), 4), round(la.max_stable_lr(4.0, momentum=0.5), 4)
    (0.7887, 0.75)
"""

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
