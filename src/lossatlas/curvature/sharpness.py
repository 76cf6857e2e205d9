"""Worst-case sharpness: how much the loss can rise within a small region around the weights.

- `epsilon_sharpness` (Keskar et al. 2017, metric 2.1 with `A = I`): the largest loss in the box
  `|z_i| <= epsilon (|x_i| + 1)` around the weights `x`, found by L-BFGS-B (SciPy) on the
  negated loss from `z = 0`, reported as `100 (max L(x + z) - L(x)) / (1 + L(x))`.
- `adaptive_sharpness` (Kwon et al. 2021, ASAM): `max_{||T_w^{-1} delta||_p <= rho}
  L(w + delta) - L(w)` with the elementwise scale `T_w = |w| + eta`, found by projected
  gradient ascent in `epsilon = T_w^{-1} delta`.
- `lossatlas.curvature.average.average_sharpness`: the average-case counterpart.

Re-parametrisation invariance. A ReLU network computes the same function after `W1 -> a W1,
b1 -> a b1, W2 -> W2 / a` for any `a > 0`, yet its Hessian, and so `lambda_max`, changes with
`a`: Dinh et al. (2017) use such rescalings to make any flat minimum look arbitrarily sharp, so
unnormalised sharpness cannot by itself predict generalisation. With `eta = 0` the adaptive
measures are invariant: `T_w` scales like `w` layer by layer, the perturbed weights
`w + |w| * epsilon` are the rescaled images of the original ones for the same `epsilon`, so the
losses along the whole ascent (and for every Monte Carlo sample of the average) are the same.
`tests/test_sharpness.py` checks this on a two-layer ReLU MLP: `lambda_max` moves with `a` while
both adaptive sharpnesses agree to rounding.

References:
    N. S. Keskar, D. Mudigere, J. Nocedal, M. Smelyanskiy, P. T. P. Tang, "On Large-Batch
    Training for Deep Learning: Generalization Gap and Sharp Minima", ICLR 2017.
    J. Kwon, J. Kim, H. Park, I. K. Choi, "ASAM: Adaptive Sharpness-Aware Minimization for
    Scale-Invariant Learning of Deep Neural Networks", ICML 2021.
    L. Dinh, R. Pascanu, S. Bengio, Y. Bengio, "Sharp Minima Can Generalize For Deep Nets",
    ICML 2017.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossatlas.core.problem import Problem
from lossatlas.core.provenance import versions
from lossatlas.curvature.operator import HessianOperator, as_operator
from lossatlas.errors import LossatlasError, check_count, check_positive

FLAT = 1e-12  # a first-order gain below FLAT * (1 + |L|) counts as a vanishing gradient


def changes(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Metric changes `after - before` (the loss left out)."""
    return {k: after[k] - before[k] for k in before if k != "loss"}


@dataclass(frozen=True, eq=False)
class EpsilonSharpness:
    """Keskar et al.'s epsilon-sharpness and what the loss and metrics did at the maximiser.

    Attributes:
        value: `100 (max L - L) / (1 + L)`, Keskar's percentage.
        loss_increase: `max L - L`.
        loss: `L` at the weights; `metrics` the problem's metrics there.
        metric_change: each metric at the maximiser minus at the weights (an `"error"` rise is
            positive, an `"accuracy"` drop negative).
        z_norm: the maximiser's Euclidean norm `||z||`.
        iterations: L-BFGS-B iterations; `evaluations` loss(-and-gradient) evaluations in all.
        random_start: whether the search started at a random point (vanishing gradient at 0).
        seconds, settings, versions: provenance.
    """

    value: float
    loss_increase: float
    loss: float
    metrics: dict[str, float]
    metric_change: dict[str, float]
    z_norm: float
    iterations: int
    evaluations: int
    random_start: bool
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the sharpness (%), the loss increase, the loss at the weights,
        the metric changes at the maximiser, its norm, and the search's effort."""
        return {
            "value": float(self.value),
            "loss_increase": float(self.loss_increase),
            "loss": float(self.loss),
            "metric_change": {k: float(v) for k, v in self.metric_change.items()},
            "z_norm": float(self.z_norm),
            "random_start": bool(self.random_start),
            "iterations": int(self.iterations),
            "evaluations": int(self.evaluations),
            "seconds": float(self.seconds),
        }


@dataclass(frozen=True, eq=False)
class AdaptiveSharpness:
    """ASAM's worst-case adaptive sharpness and what the loss and metrics did at the maximiser.

    Attributes:
        value: the largest loss increase found, `L(w + delta) - L(w)` (at least 0: `delta = 0`).
        loss: `L(w)`; `metrics` the problem's metrics there.
        metric_change: each metric at the best point minus at the weights.
        epsilon_norm: `||T_w^{-1} delta||_p` at the best point (at most `rho`).
        delta_norm: `||delta||_2` at the best point.
        steps: ascent steps taken; `evaluations` loss(-and-gradient) evaluations in all.
        random_start: whether the ascent started at a random point (vanishing gradient at 0).
        seconds, settings, versions: provenance.
    """

    value: float
    loss: float
    metrics: dict[str, float]
    metric_change: dict[str, float]
    epsilon_norm: float
    delta_norm: float
    steps: int
    evaluations: int
    random_start: bool
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the largest loss increase, the loss at the weights, the metric
        changes at the best point, the perturbation's norms, and the ascent's effort."""
        return {
            "value": float(self.value),
            "loss": float(self.loss),
            "metric_change": {k: float(v) for k, v in self.metric_change.items()},
            "epsilon_norm": float(self.epsilon_norm),
            "delta_norm": float(self.delta_norm),
            "random_start": bool(self.random_start),
            "steps": int(self.steps),
            "evaluations": int(self.evaluations),
            "seconds": float(self.seconds),
        }


def epsilon_sharpness(
    source: Problem | HessianOperator,
    *,
    epsilon: float = 1e-3,
    max_iter: int = 10,
    seed: int = 0,
    **operator_options: Any,
) -> EpsilonSharpness:
    """Keskar et al.'s epsilon-sharpness: the worst loss in a box scaled by the weights.

    Solves `max_z L(x + z)` subject to `|z_i| <= epsilon (|x_i| + 1)` with SciPy's L-BFGS-B on
    `-L` and its autograd gradient, in float64, starting (as Keskar et al.) from `z = 0` with
    `max_iter` iterations (their setting is 10). Maximising over the box is a non-convex
    problem, so this is a lower bound on the true maximum (exact for separable convex losses,
    whose maximum is at a vertex). If the gradient at 0 vanishes (`sum_i |g_i| r_i <= 1e-12 (1 +
    |L|)`, as at an exact minimum of a quadratic), it starts instead at a seeded random point
    `z_i ~ U(-r_i, r_i) / 10`. The best point seen by any evaluation is kept.

    Args:
        source: a Problem (an operator is made with `operator_options`) or a `HessianOperator`
            (its chosen parameters are perturbed; the others stay fixed).
        epsilon: the box's relative size.
        max_iter: L-BFGS-B iterations.
        seed: seed of the random start (used only when the gradient vanishes).
        **operator_options: `HessianOperator` options (`params`, `data`, `at`, ...).

    Returns:
        An `EpsilonSharpness`.

    Raises:
        LossatlasError: `epsilon <= 0`, `max_iter < 1`, or a bad operator option.
    """
    from scipy.optimize import Bounds, minimize

    epsilon, max_iter = check_positive("epsilon", epsilon), check_count("max_iter", max_iter, 1)
    op = as_operator(source, **operator_options)
    start = time.perf_counter()
    x = op.flatten(op.point).to("cpu", torch.float64).numpy()
    radius = epsilon * (np.abs(x) + 1.0)
    center = op.metrics()
    best: dict[str, Any] = {"loss": center["loss"], "z": np.zeros_like(x), "calls": 0}
    last: dict[str, Any] = {}  # the latest evaluation: L-BFGS-B starts where we looked first

    def negated(z: np.ndarray) -> tuple[float, np.ndarray]:
        if "z" not in last or not np.array_equal(last["z"], z):
            loss, g = op.loss_and_grad(torch.from_numpy(z))
            best["calls"] += 1
            if loss > best["loss"]:
                best.update(loss=loss, z=z.copy())
            last.update(z=z.copy(), out=(-loss, -g.to("cpu", torch.float64).numpy()))
        return last["out"]

    z0 = np.zeros_like(x)
    loss0, minus_g = negated(z0)
    random_start = float(np.abs(minus_g) @ radius) <= FLAT * (1 + abs(loss0))
    if random_start:
        rng = np.random.default_rng(seed)
        z0 = radius * rng.uniform(-1.0, 1.0, size=x.shape) / 10
    res = minimize(
        negated,
        z0,
        jac=True,
        method="L-BFGS-B",
        bounds=Bounds(-radius, radius),
        options={"maxiter": max_iter},
    )
    rise = best["loss"] - center["loss"]
    return EpsilonSharpness(
        value=100.0 * rise / (1.0 + center["loss"]),
        loss_increase=rise,
        loss=center["loss"],
        metrics={k: v for k, v in center.items() if k != "loss"},
        metric_change=changes(center, op.metrics(torch.from_numpy(best["z"]))),
        z_norm=float(np.linalg.norm(best["z"])),
        iterations=int(res.nit),
        evaluations=best["calls"] + 2,  # and the metrics at the weights and at the maximiser
        random_start=random_start,
        seconds=time.perf_counter() - start,
        settings={
            "measure": "epsilon (Keskar et al. 2017)",
            "epsilon": epsilon,
            "max_iter": max_iter,
            "seed": seed,
            "optimizer": f"L-BFGS-B: {res.message}",
            "operator": op.settings,
        },
        versions=versions(),
    )


def _p_norm(v: torch.Tensor, p: float) -> float:
    return float(v.abs().max()) if math.isinf(p) else float(torch.linalg.vector_norm(v))


def _ascent_step(eps: torch.Tensor, g: torch.Tensor, p: float, rho: float, step: float):
    """One projected ascent step in epsilon-space (None when the gradient is zero)."""
    if math.isinf(p):  # sign step, then clip to the box
        return (eps + step * torch.sign(g)).clamp(-rho, rho)
    norm = float(torch.linalg.vector_norm(g))
    if norm == 0.0:
        return None
    cand = eps + (step / norm) * g
    length = float(torch.linalg.vector_norm(cand))
    return cand * (rho / length) if length > rho else cand  # back onto the ball


def adaptive_sharpness(
    source: Problem | HessianOperator,
    *,
    rho: float = 0.05,
    p: float = 2,
    steps: int = 20,
    step_size: float | None = None,
    eta: float = 0.0,
    seed: int = 0,
    **operator_options: Any,
) -> AdaptiveSharpness:
    """Worst-case adaptive sharpness (Kwon et al. 2021, ASAM; Andriushchenko et al. 2023).

    `max_{||epsilon||_p <= rho} L(w + T_w epsilon) - L(w)` with `T_w = diag(|w| + eta)`, by
    projected gradient ascent on `epsilon` (the gradient in `epsilon` is `T_w grad L`):
    `p = 2` takes normalised gradient steps and projects onto the l2 ball, `p = inf` takes sign
    steps and clips to the box. It starts at `epsilon = 0` (or, when the gradient there
    vanishes, at a seeded random point of p-norm `rho / 100`). A step that does not raise the
    loss is undone and the step size halved, so the ascent is monotone and keeps the best
    point. The default step is `rho`: the first step from 0 is then the maximiser of the
    linearised loss (the SAM/ASAM perturbation); near a quadratic maximum further `p = 2`
    steps act as shifted power iterations on `T_w H T_w`.

    Args:
        source: a Problem (an operator is made with `operator_options`) or a `HessianOperator`
            (its chosen parameters are perturbed; the others stay fixed).
        rho: radius of the `epsilon` ball.
        p: `2` or `math.inf`.
        steps: ascent steps (one loss-and-gradient evaluation each).
        step_size: initial step length in epsilon-space (default `rho`).
        eta: added to `|w|` in `T_w`; 0 keeps the measure invariant to layer rescalings (a zero
            weight then cannot move).
        seed: seed of the random start (used only when the gradient vanishes).
        **operator_options: `HessianOperator` options (`params`, `data`, `at`, ...).

    Returns:
        An `AdaptiveSharpness`.

    Raises:
        LossatlasError: `rho <= 0`, `p` not 2 or inf, `steps < 1`, `step_size <= 0`,
            `eta < 0`, or a bad operator option.
    """
    rho, steps = check_positive("rho", rho), check_count("steps", steps, 1)
    if isinstance(p, bool) or p not in (2, math.inf):
        raise LossatlasError(f"p must be 2 or math.inf, got {p!r}")
    step = rho if step_size is None else check_positive("step_size", step_size)
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta < math.inf:
        raise LossatlasError(f"eta must be a non-negative number, got {eta!r}")
    op = as_operator(source, **operator_options)
    start = time.perf_counter()
    scale = op.flatten(op.point).abs() + eta
    center = op.metrics()
    loss, g = op.loss_and_grad()
    eps, grad_eps, evaluations = torch.zeros_like(scale), scale * g, 2
    # The first-order gain of the best step is rho times the dual norm of the gradient.
    dual = float(grad_eps.abs().sum()) if math.isinf(p) else _p_norm(grad_eps, 2)
    random_start = rho * dual <= FLAT * (1 + abs(loss))
    if random_start:
        generator = torch.Generator().manual_seed(seed)
        u = torch.randn(op.dim, generator=generator, dtype=torch.float64).to(op.device, op.dtype)
        eps = u * (rho / 100 / _p_norm(u, p))
        loss, g = op.loss_and_grad(scale * eps)
        grad_eps, evaluations = scale * g, evaluations + 1
    best_loss, best_eps = (loss, eps) if loss > center["loss"] else (center["loss"], 0 * eps)
    taken = 0
    for _ in range(steps):
        cand = _ascent_step(eps, grad_eps, p, rho, step)
        if cand is None:
            break
        taken += 1
        cand_loss, cand_g = op.loss_and_grad(scale * cand)
        evaluations += 1
        if cand_loss > loss:
            eps, loss, grad_eps = cand, cand_loss, scale * cand_g
            if loss > best_loss:
                best_loss, best_eps = loss, eps
        else:
            step /= 2
    at_best = op.metrics(scale * best_eps)
    return AdaptiveSharpness(
        value=best_loss - center["loss"],
        loss=center["loss"],
        metrics={k: v for k, v in center.items() if k != "loss"},
        metric_change=changes(center, at_best),
        epsilon_norm=_p_norm(best_eps, p),
        delta_norm=float(torch.linalg.vector_norm(scale * best_eps)),
        steps=taken,
        evaluations=evaluations + 1,
        random_start=random_start,
        seconds=time.perf_counter() - start,
        settings={
            "measure": "worst-case adaptive (Kwon et al. 2021)",
            "rho": rho,
            "p": p,
            "steps": steps,
            "step_size": rho if step_size is None else step_size,
            "eta": eta,
            "seed": seed,
            "operator": op.settings,
        },
        versions=versions(),
    )
