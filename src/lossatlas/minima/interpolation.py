"""Linear interpolation between models, and loss barriers.

`interpolate` evaluates `theta(t) = (1 - t) theta_a + t theta_b` with the engine, the two models
being the directions, the centre zero and the coefficient rows `(1 - t, t)`: at `t = 0` the point
is `0 + 1 * theta_a + 0 * theta_b`, which is `theta_a` exactly, and the two ends are evaluated on
their own (see `_path`), so they are the models' own losses bit for bit. The loss barrier
`max_{t in [0, 1]} L(t) - ((1 - t) L(0) + t L(1))` is the height of the path above the chord
between its ends: 0 where the loss is convex along it. Frankle et al. 2020 (sec. 2) measure
linear mode connectivity by the height above the mean of the ends instead, `max_t E(t) - (E(0) +
E(1)) / 2` (`barrier(..., baseline="mean")`); the chord form is the loss barrier of Entezari et
al. 2022 and Ainsworth et al. 2023. The two agree when the ends do. Goodfellow et al. 2015 asked
whether the loss falls monotonically from initialisation to a solution (`monotonic`);
`plane_through` (from `lossatlas.minima.plane`) maps the plane through three models.

Models are a `Problem` (its weights), an `nn.Module`, a `{name: tensor}` dict, or any object
with `.params` (and optionally `.buffers`). Only parameters are interpolated: BatchNorm buffers
are the problem's all along (settings `buffers_differ` names the models whose own differ), unless
the problem recomputes them (`bn="recompute"`), which the engine then does at every point.

References: Frankle, Dziugaite, Roy, Carbin, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis", ICML 2020. Entezari, Sedghi, Saukh, Neyshabur, "The Role of Permutation Invariance
in Linear Mode Connectivity of Neural Networks", ICLR 2022. Goodfellow, Vinyals, Saxe,
"Qualitatively characterizing neural network optimization problems", ICLR 2015. Ainsworth,
Hayase, Srinivasa, "Git Re-Basin: Merging Models modulo Permutation Symmetries", ICLR 2023.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossatlas.core.cluster import RayOptions, as_ray_options, map_tasks
from lossatlas.core.directions import Directions, as_center
from lossatlas.core.engine import Evaluator, probe
from lossatlas.core.problem import Problem
from lossatlas.core.progress import progress
from lossatlas.core.provenance import versions
from lossatlas.errors import LossatlasError, LossatlasWarning
from lossatlas.minima.model_args import (
    as_problem,
    buffers_differ,
    check_margin,
    model_names,
    model_parts,
    warn_stale_buffers,
)
from lossatlas.minima.plane import plane_through

Params = dict[str, torch.Tensor]
__all__ = ["BarrierMatrix", "Interpolation", "barrier", "barrier_matrix", "interpolate"]
__all__ += ["interpolation_grid", "plane_through"]  # plane_through: from interpolation_plane


@dataclass(frozen=True, eq=False)
class Interpolation:
    """The loss and metrics along `(1 - t) theta_a + t theta_b`.

    Attributes:
        t: the path parameter, from `-margin` to `1 + margin`; 0 and 1 are on it exactly.
        loss, metrics: values at every `t` (metrics by name, as the problem names them).
        error: the error metric along the path (see `settings["error_metric"]`), or None.
        loss_barrier: `max_{t in [0, 1]} L(t) - ((1 - t) L(0) + t L(1))` on the grid (>= 0;
            NaN if a loss on [0, 1] is NaN).
        error_barrier: the same for `error`; None when the problem has no error metric.
        argmax_t: the `t` where the loss barrier is reached.
        monotonic: whether the loss never increases from `t = 0` to `t = 1` on the grid (exact
            comparison of neighbouring values, no tolerance).
        names: labels of the two models.
        settings: steps, margin, metric, error_metric, bn, dtype, distance `|b - a|`, plan.
        provenance: points, model calls, seconds, device, data fingerprint, versions.
    """

    t: np.ndarray
    loss: np.ndarray
    metrics: dict[str, np.ndarray]
    error: np.ndarray | None
    loss_barrier: float
    error_barrier: float | None
    argmax_t: float
    monotonic: bool
    names: tuple[str, str] = ("a", "b")
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.names[0]} → {self.names[1]}"

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the two models, the loss (and error) barrier, where the loss
        barrier is, whether the loss falls monotonically, and the loss at both ends."""
        ends = [int(np.flatnonzero(self.t == e)[0]) for e in (0.0, 1.0)]
        return {
            "names": [str(n) for n in self.names],
            "loss_barrier": float(self.loss_barrier),
            "error_barrier": None if self.error_barrier is None else float(self.error_barrier),
            "argmax_t": float(self.argmax_t),
            "monotonic": bool(self.monotonic),
            "loss_a": float(self.loss[ends[0]]),
            "loss_b": float(self.loss[ends[1]]),
        }


@dataclass(frozen=True, eq=False)
class BarrierMatrix:
    """Pairwise barriers of N models: symmetric (N, N) arrays with a zero diagonal.

    Entry (i, j), i < j, is `interpolate(problem, models[i], models[j]).loss_barrier` (and
    `error_barrier`); (j, i) is a copy of it. `endpoint_loss[i]` is model i's own loss.
    """

    names: tuple[str, ...]
    loss_barrier: np.ndarray
    error_barrier: np.ndarray | None
    endpoint_loss: np.ndarray
    endpoint_error: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the number of models, the largest and smallest loss barrier over
        the pairs (None with fewer than two models; NaN if a barrier is NaN), the largest error
        barrier (None without an error metric), each model's own loss, and the whole matrix of
        loss barriers."""
        upper = np.triu_indices(len(self.names), 1)
        loss = self.loss_barrier[upper]
        error = None if self.error_barrier is None else self.error_barrier[upper]
        return {
            "models": len(self.names),
            "loss_barrier_max": float(np.max(loss)) if loss.size else None,
            "loss_barrier_min": float(np.min(loss)) if loss.size else None,
            "error_barrier_max": float(np.max(error)) if error is not None and error.size else None,
            "endpoint_loss": [float(v) for v in self.endpoint_loss],
            "loss_barriers": [[float(v) for v in row] for row in self.loss_barrier],
        }


def interpolation_grid(steps: int, margin: float = 0.0) -> np.ndarray:
    """`steps` values of `t` from `-margin` to `1 + margin` holding 0 and 1 exactly.

    Without a margin this is `linspace(0, 1, steps)`. With one, the margins and [0, 1] are cut
    into whole intervals of about the same length (at least one per margin), so the spacing is
    uniform where `margin` is a multiple of it and nearly uniform otherwise.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise LossatlasError(f"steps must be an integer of at least 2, got {steps!r}")
    margin = check_margin(margin)
    if margin == 0:
        return np.linspace(0.0, 1.0, int(steps))
    if steps < 4:
        raise LossatlasError(f"a margin needs steps >= 4 (-margin, 0, 1, 1 + margin), got {steps}")
    side = min(max(1, round(margin * (steps - 1) / (1 + 2 * margin))), (int(steps) - 2) // 2)
    inner = np.linspace(0.0, 1.0, int(steps) - 2 * side)
    left, right = np.linspace(-margin, 0.0, side + 1)[:-1], 1 + np.linspace(0, margin, side + 1)
    return np.concatenate([left, inner, right[1:]])


def barrier(t: np.ndarray, values: np.ndarray, *, baseline: str = "chord") -> tuple[float, float]:
    """`(height, t at the height)` of `values` above a baseline over the grid points in [0, 1].

    `baseline="chord"`: `max_t values(t) - ((1 - t) values(0) + t values(1))`; `"mean"`: `max_t
    values(t) - (values(0) + values(1)) / 2` (Frankle et al. 2020's error barrier height). `t`
    must hold 0 and 1. A NaN value in [0, 1] makes both NaN.
    """
    if baseline not in ("chord", "mean"):
        raise LossatlasError(f"baseline must be 'chord' or 'mean', got {baseline!r}")
    t, values = np.asarray(t, np.float64), np.asarray(values, np.float64)
    ends = [np.flatnonzero(t == e) for e in (0.0, 1.0)]
    if t.shape != values.shape or not all(len(e) for e in ends):
        raise LossatlasError("barrier needs values at every t, and t holding 0 and 1")
    v0, v1 = values[ends[0][0]], values[ends[1][0]]
    inside = (t >= 0) & (t <= 1)
    ts, vs = t[inside], values[inside]
    # The chord as std::lerp does it: exactly v0 at t = 0, v1 at t = 1, flat if they are equal.
    lerp = np.where(ts < 0.5, v0 + ts * (v1 - v0), v1 - (1 - ts) * (v1 - v0))
    gap = vs - (lerp if baseline == "chord" else (v0 + v1) / 2)
    if np.isnan(gap).any():
        return math.nan, math.nan
    k = int(np.argmax(gap))
    return float(gap[k]), float(ts[k])


def _check_metric(problem: Problem, metric: Any) -> None:
    known = metric is None or metric == "error" or metric in problem.metrics
    if not isinstance(metric, (str, type(None))) or not known:
        raise LossatlasError(
            f"the problem has no metric {metric!r}; it has {list(problem.metrics)}"
        )


def _error_curve(metrics: dict, metric: str | None) -> tuple[Any, str | None]:
    """The metric whose barrier is `error_barrier` and what it is, or `(None, None)`."""
    if metric == "error" and "error" not in metrics:
        return (
            (1.0 - metrics["accuracy"], "1 - accuracy") if "accuracy" in metrics else (None, None)
        )
    return (None, None) if metric is None else (metrics[metric], metric)


def _path(problem: Problem, pa: Params, pb: Params, t: np.ndarray, budget: Any) -> tuple:
    """Loss, metrics, model calls and plan at the points `0 + (1 - t) pa + t pb`.

    The ends (rows (1, 0) and (0, 1): exactly `pa` and `pb`) are evaluated one at a time, on a
    default plan and without the input-layer shortcut (whose stacked products round otherwise),
    so they equal bit for bit the engine's plain one-point value at the models' weights. The
    other points go through a second evaluator, in chunks.
    """
    zero = {k: torch.zeros_like(w) for k, w in problem.params.items()}
    dirs, probed = Directions((pa, pb), {"kind": "models"}), probe(problem, zero)
    coeffs, ends = np.stack([1.0 - t, t], 1), (t == 0) | (t == 1)
    loss, metrics = np.empty(len(t)), {m: np.empty(len(t)) for m in problem.metrics}
    calls, plan, inner = 0, None, np.flatnonzero(~ends)
    for part in ("ends", "inner"):  # one evaluator (and its stacked weights) at a time
        rows = np.flatnonzero(ends) if part == "ends" else inner
        if rows.size == 0:
            continue
        kw = dict(shortcut=False) if part == "ends" else dict(n_points=rows.size)
        ev = Evaluator(problem, dirs, center=zero, memory_budget=budget, probed=probed, **kw)
        size = 1 if part == "ends" else ev.plan.chunk_size
        for chunk in (rows[i : i + size] for i in range(0, rows.size, size)):
            out = ev(coeffs[chunk])
            loss[chunk] = out.loss
            for m in metrics:
                metrics[m][chunk] = out.metrics[m]
        calls, plan = calls + ev.n_model_calls, vars(ev.plan)
        del ev
    return loss, metrics, calls, plan


def _interpolate(problem, a, b, t, names, metric, budget, fingerprint) -> Interpolation:
    """`interpolate` for checked `(params, buffers)` pairs `a`, `b` and a grid `t`."""
    (ra, ba), (rb, bb) = a, b
    pa, pb = as_center(problem, ra, what=names[0]), as_center(problem, rb, what=names[1])
    start = time.perf_counter()
    loss, metrics, calls, plan = _path(problem, pa, pb, t, budget)
    seconds = time.perf_counter() - start
    error, how = _error_curve(metrics, metric)
    loss_barrier, argmax_t = barrier(t, loss)
    inside = loss[(t >= 0) & (t <= 1)]
    distance = math.sqrt(sum(float(((pb[k] - pa[k]).double() ** 2).sum()) for k in pa))
    differ = [n for n, buf in zip(names, (ba, bb)) if buffers_differ(problem, buf)]
    warn_stale_buffers(problem, differ)
    settings = dict(
        steps=len(t), margin=max(0.0, float(-t[0])), metric=metric, error_metric=how,
        baseline="chord", bn=problem.bn, dtype=str(problem.dtype),
        loss_reduction=problem.reduction, metrics=list(problem.metrics), distance=distance,
        buffers_differ=differ, plan=plan,
    )  # fmt: skip
    provenance = dict(
        n_samples=problem.n_samples, data_fingerprint=fingerprint, n_params=problem.n_params,
        n_points=len(t), n_model_calls=calls,
        seconds=seconds, device=str(problem.device), versions=versions(),
    )  # fmt: skip
    error_barrier = None if error is None else barrier(t, error)[0]
    monotonic = bool(np.all(np.diff(inside) <= 0))
    return Interpolation(
        t, loss, metrics, error, loss_barrier, error_barrier, argmax_t, monotonic,
        (str(names[0]), str(names[1])), settings, provenance,
    )  # fmt: skip


def interpolate(
    problem: Problem,
    a: Any,
    b: Any,
    *,
    steps: int = 41,
    margin: float = 0.0,
    metric: str | None = "error",
    names: Sequence[str] | None = None,
    memory_budget: int | str | None = None,
) -> Interpolation:
    """The loss and metrics at `(1 - t) theta_a + t theta_b`, `t` in `[-margin, 1 + margin]`.

    Args:
        problem: the loss and data; its buffers (BatchNorm statistics) are used all along.
        a, b: the two models (a Problem, an nn.Module, a `{name: tensor}` dict or an object
            with `.params`), with the problem's parameter names and shapes.
        steps: points on the path (0 and 1 are always among them, see `interpolation_grid`).
        margin: how far to go beyond each end, in units of the path length.
        metric: whose barrier is `error_barrier`: `"error"` (the problem's "error" metric, else
            `1 - accuracy`, else none: then None), another metric of the problem (one where
            lower is better), or None.
        names: labels of the two models.
        memory_budget: bytes (or "512MB") for one chunk of points.

    The ends cost one pass over the data each (on the sequential path, as any point does):
    their losses then equal bit for bit the engine's value at the models' weights without the
    input-layer shortcut, e.g. `Evaluator(problem.with_weights(a_params), d, shortcut=False)`
    at coefficient 0.
    """
    problem = as_problem(problem)
    t = interpolation_grid(steps, margin)
    labels = model_names((a, b), names, ("a", "b"))
    a_, b_ = (model_parts(problem, m, k) for m, k in zip((a, b), labels))
    _check_metric(problem, metric)
    return _interpolate(problem, a_, b_, t, labels, metric, memory_budget, problem.fingerprint())


def _pair(context: tuple, pair: tuple[int, int]) -> Interpolation:
    """One pair's interpolation (here or on a Ray worker)."""
    problem, checked, t, labels, metric, budget, fingerprint = context
    i, j = pair
    with warnings.catch_warnings():  # barrier_matrix warns about stale buffers, once
        warnings.simplefilter("ignore", LossatlasWarning)
        return _interpolate(
            problem, checked[i], checked[j], t, (labels[i], labels[j]), metric, budget,
            fingerprint,
        )  # fmt: skip


def barrier_matrix(
    problem: Problem,
    models: Sequence[Any] | Mapping[str, Any],
    *,
    steps: int = 21,
    names: Sequence[str] | None = None,
    metric: str | None = "error",
    memory_budget: int | str | None = None,
    quiet: bool | None = None,
    ray: str | RayOptions | None = None,
) -> BarrierMatrix:
    """Loss (and error) barriers between every pair of N models, by N(N-1)/2 interpolations.

    Only pairs i < j are interpolated (`steps` points on [0, 1] each, as `interpolate` with no
    margin); (j, i) copies (i, j) and the diagonal is 0. `models` may be a dict keyed by name.
    `endpoint_loss[i]` is model i's loss from the first pair that holds it (the ends are
    evaluated exactly, so every pair gives the same).

    With `ray` (an address such as `"auto"`, or `RayOptions`) the pairs are interpolated by
    Ray actors (`lossatlas.core.cluster`: the problem and models shipped once, the pairs of a
    worker that dies requeued); `provenance["ray"]` counts workers, requeued pairs and
    replaced workers. Needs `pip install 'lossatlas[ray]'`.
    """
    problem, ray = as_problem(problem), as_ray_options(ray)
    listed = list(models.values()) if isinstance(models, Mapping) else list(models)
    n = len(listed)
    if n < 2:
        raise LossatlasError(f"a barrier matrix needs at least 2 models, got {n}")
    names = list(models) if names is None and isinstance(models, Mapping) else names
    labels = model_names(listed, names, [f"model {i}" for i in range(n)])
    t = interpolation_grid(steps)
    checked = [model_parts(problem, m, k) for m, k in zip(listed, labels)]  # before any work
    _check_metric(problem, metric)
    fingerprint, calls, start = problem.fingerprint(), 0, time.perf_counter()
    loss_b, error_b = np.zeros((n, n)), np.zeros((n, n))
    ends, end_errors = np.full(n, np.nan), np.full(n, np.nan)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    context = (problem, checked, t, labels, metric, memory_budget, fingerprint)
    ray_stats: dict[str, Any] = {}
    with progress(f"barriers of {n} models", len(pairs), quiet=quiet) as advance:
        for (i, j), r in map_tasks(ray, context, _pair, {p: p for p in pairs}, ray_stats):
            loss_b[i, j] = loss_b[j, i] = r.loss_barrier
            error_b[i, j] = error_b[j, i] = r.error_barrier if r.error is not None else np.nan
            for k, at in ((i, 0), (j, -1)):
                if math.isnan(ends[k]):
                    ends[k], end_errors[k] = r.loss[at], np.nan if r.error is None else r.error[at]
            calls += r.provenance["n_model_calls"]
            advance(1)
    settings = {k: r.settings[k] for k in ("metric", "error_metric", "bn", "dtype", "plan")}
    differ = [k for k, (_, buf) in zip(labels, checked) if buffers_differ(problem, buf)]
    warn_stale_buffers(problem, differ)
    settings.update(steps=len(t), baseline="chord", buffers_differ=differ)
    provenance = dict(
        n_pairs=len(pairs), n_points=len(pairs) * len(t), n_model_calls=calls,
        seconds=time.perf_counter() - start, n_samples=problem.n_samples,
        data_fingerprint=fingerprint, device=str(problem.device), versions=versions(),
        **({"ray": ray_stats} if ray is not None else {}),
    )  # fmt: skip
    has_error = r.error is not None  # the same for every pair
    return BarrierMatrix(
        tuple(labels), loss_b, error_b if has_error else None, ends,
        end_errors if has_error else None, settings, provenance,
    )  # fmt: skip
