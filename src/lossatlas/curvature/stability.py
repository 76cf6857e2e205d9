"""The largest learning rate at which (heavy-ball) gradient descent is stable on a quadratic.

Near a minimum the loss is `L(w*) + 0.5 d^T H d`. Gradient descent multiplies the error along
an eigenvector of `H` with eigenvalue `lambda` by `1 - lr * lambda` per step, so it converges
exactly when `lr < 2 / lambda_max`. Heavy-ball momentum `beta` (PyTorch's SGD with `momentum`
and no dampening is the same iteration) has the characteristic polynomial
`z^2 - (1 + beta - lr lambda) z + beta`, whose roots stay inside the unit circle exactly when
`lr < (2 + 2 beta) / lambda_max` for `0 <= beta < 1` (Polyak 1964; Goh 2017, "Why momentum
really works"). On a network these are local statements about the current point: training
whose `lambda_max` sits at `2 / lr` is at the edge of stability (Cohen et al. 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lossatlas.errors import LossatlasError


def max_stable_lr(lambda_max: float, *, momentum: float = 0.0) -> float:
    """`(2 + 2 momentum) / lambda_max`; infinite when `lambda_max <= 0` (no unstable direction).

    Args:
        lambda_max: the largest Hessian eigenvalue.
        momentum: heavy-ball coefficient `beta`, `0 <= beta < 1`.
    """
    if not math.isfinite(lambda_max):
        raise LossatlasError(f"lambda_max must be finite, got {lambda_max}")
    if isinstance(momentum, bool) or not 0.0 <= momentum < 1.0:
        raise LossatlasError(f"momentum must be in [0, 1), got {momentum!r}")
    return math.inf if lambda_max <= 0 else (2.0 + 2.0 * momentum) / lambda_max


@dataclass(frozen=True)
class StableLR:
    """A learning rate next to the largest stable one.

    Attributes:
        lambda_max: largest Hessian eigenvalue at the point.
        momentum: heavy-ball coefficient used in the bound.
        max_lr: `(2 + 2 momentum) / lambda_max`.
        lr: the learning rate asked about (None if none was given).
        ratio: `lr / max_lr` (below 1: stable near this point).
    """

    lambda_max: float
    momentum: float
    max_lr: float
    lr: float | None = None

    @property
    def ratio(self) -> float | None:
        return None if self.lr is None else self.lr / self.max_lr

    @property
    def stable(self) -> bool | None:
        return None if self.lr is None else self.lr < self.max_lr

    def headline(self) -> dict[str, Any]:
        """Headline numbers: `lambda_max`, the momentum, the largest stable lr and, when an lr
        was given, the lr, its share of the bound and whether it is stable (else None)."""
        ratio, stable = self.ratio, self.stable
        return {
            "lambda_max": float(self.lambda_max),
            "momentum": float(self.momentum),
            "max_lr": float(self.max_lr),
            "lr": None if self.lr is None else float(self.lr),
            "ratio": None if ratio is None else float(ratio),
            "stable": None if stable is None else bool(stable),
        }

    def describe(self) -> str:
        text = f"largest stable lr {self.max_lr:.4g} (lambda_max {self.lambda_max:.4g}"
        text += f", momentum {self.momentum:g})" if self.momentum else ")"
        if self.lr is not None:
            verdict = "stable" if self.stable else "unstable"
            text += f"; lr {self.lr:g} is {self.ratio:.2f} of it: {verdict}"
        return text


def stable_lr(lambda_max: float, *, lr: float | None = None, momentum: float = 0.0) -> StableLR:
    """The largest stable learning rate for `lambda_max`, compared with `lr` when given."""
    if lr is not None and (isinstance(lr, bool) or not (math.isfinite(lr) and lr > 0)):
        raise LossatlasError(f"lr must be a positive number, got {lr!r}")
    bound = max_stable_lr(lambda_max, momentum=momentum)
    return StableLR(float(lambda_max), float(momentum), bound, None if lr is None else float(lr))
