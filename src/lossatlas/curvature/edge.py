"""Edge of stability: `lambda_max` tracked during training against the stability bound `2 / lr`.

Cohen et al. 2021 ("Gradient descent on neural networks typically occurs at the edge of
stability") observed that full-batch gradient descent drives the sharpness `lambda_max` up to
`2 / lr` and then hovers there. `EdgeOfStability` is a hook for a plain training loop: every
`every` calls it estimates `lambda_max` at the model's current weights by Lanczos, warm-started
from the previous top eigenvector (so later estimates take few Hessian-vector products), and
logs it beside `(2 + 2 beta) / lr` read from the optimizer (heavy-ball `beta`, 0 for plain SGD).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lossatlas.core.problem import Problem
from lossatlas.curvature.eigen import hessian_eigen
from lossatlas.curvature.operator import HessianOperator
from lossatlas.errors import LossatlasError

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class EdgeHistory:
    """What an `EdgeOfStability` tracker logged, one entry per estimate.

    Attributes:
        steps: the training step of each estimate.
        lambda_max: the top Hessian eigenvalue there.
        lr, momentum: the optimizer's learning rate and heavy-ball coefficient then.
        threshold: `(2 + 2 momentum) / lr`, the largest `lambda_max` stable at that lr.
        hvps: Hessian-vector products each estimate took.
        converged: whether each Lanczos run met its tolerance.
        settings: tolerance, data and parameters used.
    """

    steps: np.ndarray
    lambda_max: np.ndarray
    lr: np.ndarray
    momentum: np.ndarray
    threshold: np.ndarray
    hvps: np.ndarray
    converged: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> np.ndarray:
        """`lambda_max / threshold`: 1 is the edge of stability."""
        return self.lambda_max / self.threshold

    def headline(self) -> dict[str, Any]:
        """Headline numbers: how many estimates, the last one's step, `lambda_max`, threshold
        and ratio, the peaks of `lambda_max` and of the ratio (over finite values), how many
        estimates reached the edge (ratio at least 1), and the HVPs in all. Values of an empty
        history are None."""
        n = len(self.steps)
        ratio = self.ratio
        lam = self.lambda_max[np.isfinite(self.lambda_max)]
        finite = ratio[np.isfinite(ratio)]
        return {
            "estimates": n,
            "last_step": int(self.steps[-1]) if n else None,
            "lambda_max_last": float(self.lambda_max[-1]) if n else None,
            "threshold_last": float(self.threshold[-1]) if n else None,
            "ratio_last": float(ratio[-1]) if n else None,
            "lambda_max_peak": float(lam.max()) if lam.size else None,
            "ratio_peak": float(finite.max()) if finite.size else None,
            "at_edge": int((finite >= 1).sum()),
            "hvps": int(np.sum(self.hvps)),
        }


def lr_and_momentum(optimizer: torch.optim.Optimizer) -> tuple[float, float]:
    """The first parameter group's learning rate and heavy-ball momentum (0 for Adam-like
    optimizers, whose stability bound is Cohen et al.'s `2 / lr` line)."""
    group = optimizer.param_groups[0]
    beta = group.get("momentum", 0.0) or 0.0
    if "betas" in group:
        beta = 0.0
    return float(group["lr"]), float(beta)


class EdgeOfStability:
    """A training-loop hook estimating `lambda_max` every `every` calls of `record()`.

    Args:
        problem: the loss and data the Hessian is taken over (its model is only a template:
            the weights come from `model` at each estimate).
        model: the model being trained (read, never modified).
        every: estimate on every `every`-th call of `record()` (the first call included).
        optimizer: where `lr` and `momentum` are read at each estimate (schedules included).
        lr, momentum: fixed values instead of an optimizer.
        tol: relative tolerance of each Lanczos run.
        data, params: as for `HessianOperator` (e.g. `data=1024` for a fixed subset).

    BatchNorm running statistics are the problem's, not the live model's (eval mode).
    """

    def __init__(
        self,
        problem: Problem,
        model: nn.Module,
        *,
        every: int = 10,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float | None = None,
        momentum: float = 0.0,
        tol: float = 1e-3,
        data: str | int = "all",
        params: Any = None,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise LossatlasError(f"every must be a positive integer, got {every!r}")
        if (optimizer is None) == (lr is None):
            raise LossatlasError("give either optimizer= (lr read from it) or lr=, not both")
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise LossatlasError(f"lr must be a positive number, got {lr!r}")
        if not 0.0 <= momentum < 1.0:
            raise LossatlasError(f"momentum must be in [0, 1), got {momentum!r}")
        self.problem, self.model, self.every = problem, model, every
        self.optimizer, self.lr, self.momentum, self.tol = optimizer, lr, momentum, tol
        self.options = {"data": data, "params": params}
        HessianOperator(problem, at=model, **self.options)  # bad options fail here, not later
        self.calls = 0
        self._rows: list[tuple] = []
        self._v0: np.ndarray | None = None

    def _lr_momentum(self) -> tuple[float, float]:
        if self.optimizer is None:
            return float(self.lr), float(self.momentum)  # type: ignore[arg-type]
        return lr_and_momentum(self.optimizer)

    def record(self, step: int | None = None) -> float | None:
        """Call once per training step; returns `lambda_max` when this call estimated it."""
        self.calls += 1
        if (self.calls - 1) % self.every:
            return None
        began = time.perf_counter()
        op = HessianOperator(self.problem, at=self.model, **self.options)
        eig = hessian_eigen(op, k=1, which="top", tol=self.tol, v0=self._v0)
        self._v0 = eig.eigenvectors[:, 0]
        lam = float(eig.eigenvalues[0])
        lr, beta = self._lr_momentum()
        bound = (2.0 + 2.0 * beta) / lr  # the largest lambda_max stable at this lr
        at = self.calls - 1 if step is None else int(step)
        seconds = time.perf_counter() - began
        self._rows.append((at, lam, lr, beta, bound, eig.hvps, bool(eig.converged[0]), seconds))
        return lam

    @property
    def history(self) -> EdgeHistory:
        cols = list(zip(*self._rows)) if self._rows else [()] * 8
        arrays = [np.asarray(c) for c in cols]
        settings = {"every": self.every, "tol": self.tol, **self.options}
        settings["seconds"] = float(arrays[7].sum()) if self._rows else 0.0
        return EdgeHistory(
            steps=arrays[0].astype(np.int64),
            lambda_max=arrays[1].astype(float),
            lr=arrays[2].astype(float),
            momentum=arrays[3].astype(float),
            threshold=arrays[4].astype(float),
            hvps=arrays[5].astype(np.int64),
            converged=arrays[6].astype(bool),
            settings=settings,
        )
