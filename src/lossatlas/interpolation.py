"""Linear interpolation between models, loss barriers, and the plane through three models.

`interpolate` evaluates `theta(t) = (1 - t) theta_a + t theta_b` with the engine, the two models
being the directions, the centre zero and the coefficient rows `(1 - t, t)`: at `t = 0` the point
is `0 + 1 * theta_a + 0 * theta_b`, which is `theta_a` exactly, so the ends reproduce the models'
own losses bit for bit. The loss barrier `max_{t in [0, 1]} L(t) - ((1 - t) L(0) + t L(1))` is
the height of the path above the chord between its ends: 0 where the loss is convex along it.
Frankle et al. 2020 (sec. 2) measure linear mode connectivity by the height above the mean of
the ends, `max_t E(t) - (E(0) + E(1)) / 2` (`barrier(..., baseline="mean")`); the chord form
is that of Entezari et al. 2022 (eq. 1) and Ainsworth et al. 2023. The two agree when the ends
do. Goodfellow et al. 2015 asked whether the loss falls monotonically from initialisation to a
solution (`Interpolation.monotonic`); `plane_through` is the plane of Garipov et al. 2018, Fig. 1.

Models are a `Problem` (its weights), an `nn.Module`, a `{name: tensor}` dict, or any object
with `.params` (and optionally `.buffers`). Only parameters are interpolated: BatchNorm buffers
are the problem's all along (settings `buffers_differ` names the models whose own differ), unless
the problem recomputes them (`bn="recompute"`), which the engine then does at every point.

References: Frankle, Dziugaite, Roy, Carbin, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis", ICML 2020. Entezari, Sedghi, Saukh, Neyshabur, "The Role of Permutation Invariance
in Linear Mode Connectivity of Neural Networks", ICLR 2022. Goodfellow, Vinyals, Saxe,
"Qualitatively characterizing neural network optimization problems", ICLR 2015. Garipov et al.,
"Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lossatlas.directions import Directions, as_center
from lossatlas.engine import Evaluator
from lossatlas.errors import LossatlasError
from lossatlas.problem import Problem
from lossatlas.progress import progress
from lossatlas.result import Surface, versions, with_paths
from lossatlas.surface import surface

Params = dict[str, torch.Tensor]


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


def _parts(model: Any, what: str) -> tuple[Mapping, Mapping | None]:
    """The `{name: tensor}` parameters of a model argument, and its buffers if it has any."""
    if isinstance(model, Mapping):
        return model, None
    if isinstance(model, nn.Module):
        return {k: p.detach() for k, p in model.named_parameters()}, dict(model.named_buffers())
    params = getattr(model, "params", None)
    if isinstance(params, Mapping):
        buffers = getattr(model, "buffers", None)
        return params, buffers if isinstance(buffers, Mapping) else None
    raise LossatlasError(
        f"{what} must be a Problem, an nn.Module, a {{name: tensor}} dict or an object with "
        f".params; got {type(model).__name__}"
    )


def _check(problem: Problem, model: Any, what: str) -> tuple[Mapping, Mapping | None]:
    """`_parts`, with names and shapes checked against the problem's parameters."""
    params, buffers = _parts(model, what)
    own = {k: tuple(w.shape) for k, w in problem.params.items()}
    given = {
        str(k): tuple(v.shape if hasattr(v, "shape") else np.shape(v)) for k, v in params.items()
    }
    if given != own:
        issues = {
            "missing": sorted(set(own) - set(given)),
            "unknown": sorted(set(given) - set(own)),
            "wrong shape": sorted(k for k in set(own) & set(given) if own[k] != given[k]),
        }
        text = "; ".join(f"{k} {v[:3]}" for k, v in issues.items() if v)
        raise LossatlasError(f"{what} does not fit the problem's model: {text}")
    return params, buffers


def _buffers_differ(problem: Problem, buffers: Mapping | None) -> bool:
    if buffers is None or buffers is problem.buffers:
        return False
    if set(buffers) != set(problem.buffers):
        return True
    for k, mine in problem.buffers.items():
        theirs = torch.as_tensor(buffers[k])
        if theirs.shape != mine.shape or not torch.equal(theirs.to(mine.device, mine.dtype), mine):
            return True
    return False


def _margin(margin: Any) -> float:
    try:
        margin = float(margin)
    except (TypeError, ValueError):
        margin = math.nan
    if not math.isfinite(margin) or margin < 0:
        raise LossatlasError(f"margin must be a finite number of at least 0, got {margin!r}")
    return margin


def interpolation_grid(steps: int, margin: float = 0.0) -> np.ndarray:
    """`steps` values of `t` from `-margin` to `1 + margin` holding 0 and 1 exactly.

    Without a margin this is `linspace(0, 1, steps)`. With one, the margins and [0, 1] are cut
    into whole intervals of about the same length (at least one per margin), so the spacing is
    uniform where `margin` is a multiple of it and nearly uniform otherwise.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise LossatlasError(f"steps must be an integer of at least 2, got {steps!r}")
    margin = _margin(margin)
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
    gap = vs - ((1 - ts) * v0 + ts * v1 if baseline == "chord" else (v0 + v1) / 2)
    if np.isnan(gap).any():
        return math.nan, math.nan
    k = int(np.argmax(gap))
    return float(gap[k]), float(ts[k])


def _error_curve(problem: Problem, metrics: dict, metric: str | None) -> tuple[Any, Any]:
    """`(values, description)` of the metric whose barrier is reported, or `(None, None)`."""
    if metric is None:
        return None, None
    if metric == "error" and "error" not in metrics:
        if "accuracy" in metrics:
            return 1.0 - metrics["accuracy"], "1 - accuracy"
        return None, None
    if metric not in metrics:
        raise LossatlasError(f"the problem has no metric {metric!r}; it has {list(metrics)}")
    return metrics[metric], metric


def _path(problem: Problem, pa: Params, pb: Params, t: np.ndarray, budget: Any) -> tuple:
    """Loss, metrics and the evaluator for the points `0 + (1 - t) pa + t pb`."""
    zero = {k: torch.zeros_like(w) for k, w in problem.params.items()}
    dirs = Directions((pa, pb), {"kind": "models"})
    ev = Evaluator(problem, dirs, center=zero, memory_budget=budget, n_points=len(t))
    coeffs, size = np.stack([1.0 - t, t], 1), ev.plan.chunk_size  # rows (1, 0) and (0, 1) at ends
    chunks = [ev(coeffs[i : i + size]) for i in range(0, len(t), size)]
    loss = np.concatenate([c.loss for c in chunks])
    return loss, {m: np.concatenate([c.metrics[m] for c in chunks]) for m in problem.metrics}, ev


def _interpolate(problem, a, b, t, names, metric, budget, fingerprint) -> Interpolation:
    (ra, ba), (rb, bb) = a, b
    pa, pb = as_center(problem, ra, what=names[0]), as_center(problem, rb, what=names[1])
    start = time.perf_counter()
    loss, metrics, ev = _path(problem, pa, pb, t, budget)
    seconds = time.perf_counter() - start
    error, how = _error_curve(problem, metrics, metric)
    loss_barrier, argmax_t = barrier(t, loss)
    inside = loss[(t >= 0) & (t <= 1)]
    distance = math.sqrt(sum(float(((pb[k] - pa[k]).double() ** 2).sum()) for k in pa))
    settings = {
        "steps": len(t),
        "margin": max(0.0, float(-t[0])),
        "metric": metric,
        "error_metric": how,
        "baseline": "chord",
        "bn": problem.bn,
        "dtype": str(problem.dtype),
        "loss_reduction": problem.reduction,
        "metrics": list(problem.metrics),
        "distance": distance,
        "buffers_differ": [n for n, buf in zip(names, (ba, bb)) if _buffers_differ(problem, buf)],
        "plan": vars(ev.plan),
    }
    provenance = {
        "n_samples": problem.n_samples,
        "data_fingerprint": fingerprint,
        "n_params": problem.n_params,
        "n_points": len(t),
        "n_model_calls": ev.n_model_calls,
        "n_point_passes": ev.n_point_passes,
        "seconds": seconds,
        "device": str(problem.device),
        "versions": versions(),
    }
    return Interpolation(
        t=t,
        loss=loss,
        metrics=metrics,
        error=error,
        loss_barrier=loss_barrier,
        error_barrier=None if error is None else barrier(t, error)[0],
        argmax_t=argmax_t,
        monotonic=bool(np.all(np.diff(inside) <= 0)),
        names=(str(names[0]), str(names[1])),
        settings=settings,
        provenance=provenance,
    )


def _problem(problem: Any) -> Problem:
    if not isinstance(problem, Problem):
        raise LossatlasError(f"expected a lossatlas.Problem, got {type(problem).__name__}")
    return problem


def interpolate(
    problem: Problem,
    a: Any,
    b: Any,
    *,
    steps: int = 41,
    margin: float = 0.0,
    metric: str | None = "error",
    names: tuple[str, str] = ("a", "b"),
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
            `1 - accuracy`, else none), another metric of the problem (lower is better), or None.
        names: labels of the two models.
        memory_budget: bytes (or "512MB") for one chunk of points.
    """
    problem = _problem(problem)
    t = interpolation_grid(steps, margin)
    a_, b_ = _check(problem, a, str(names[0])), _check(problem, b, str(names[1]))
    return _interpolate(problem, a_, b_, t, names, metric, memory_budget, problem.fingerprint())


def _names(given: Any, models: Any, n: int, default: str) -> list[str]:
    if given is None:
        given = list(models) if isinstance(models, Mapping) else [f"{default}{i}" for i in range(n)]
    names = [str(x) for x in given] if isinstance(given, Sequence) else []
    if len(names) != n or len(set(names)) != n or isinstance(given, str):
        raise LossatlasError(f"names must be {n} distinct labels, got {given!r}")
    return names


def barrier_matrix(
    problem: Problem,
    models: Sequence[Any] | Mapping[str, Any],
    *,
    steps: int = 21,
    names: Sequence[str] | None = None,
    metric: str | None = "error",
    memory_budget: int | str | None = None,
    quiet: bool | None = None,
) -> BarrierMatrix:
    """Loss (and error) barriers between every pair of N models, by N(N-1)/2 interpolations.

    Only pairs i < j are interpolated (`steps` points on [0, 1] each); the matrix is filled in
    symmetrically with a zero diagonal. `models` may be a dict, whose keys are the names.
    """
    problem = _problem(problem)
    listed = list(models.values()) if isinstance(models, Mapping) else list(models)
    n = len(listed)
    if n < 2:
        raise LossatlasError(f"a barrier matrix needs at least 2 models, got {n}")
    labels = _names(names, models, n, "model ")
    t = interpolation_grid(steps)
    checked = [_check(problem, m, label) for m, label in zip(listed, labels)]  # before any work
    fingerprint = problem.fingerprint()
    loss_b, error_b = np.zeros((n, n)), np.zeros((n, n))
    ends, end_errors = np.full(n, np.nan), np.full(n, np.nan)
    has_error, calls, start = True, 0, time.perf_counter()
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    with progress(f"barriers of {n} models", len(pairs), quiet=quiet) as advance:
        for i, j in pairs:
            r = _interpolate(
                problem, checked[i], checked[j], t, (labels[i], labels[j]), metric,
                memory_budget, fingerprint,
            )  # fmt: skip
            loss_b[i, j] = loss_b[j, i] = r.loss_barrier
            for k, at in ((i, 0), (j, -1)):
                if math.isnan(ends[k]):
                    ends[k] = r.loss[at]
                    end_errors[k] = math.nan if r.error is None else r.error[at]
            has_error = has_error and r.error_barrier is not None
            if r.error_barrier is not None:
                error_b[i, j] = error_b[j, i] = r.error_barrier
            calls += r.provenance["n_model_calls"]
            advance(1)
    settings = {k: r.settings[k] for k in ("metric", "error_metric", "bn", "dtype", "plan")}
    settings.update(steps=len(t), baseline="chord")
    provenance = {
        "n_pairs": len(pairs),
        "n_points": len(pairs) * len(t),
        "n_model_calls": calls,
        "seconds": time.perf_counter() - start,
        "n_samples": problem.n_samples,
        "data_fingerprint": fingerprint,
        "device": str(problem.device),
        "versions": versions(),
    }
    return BarrierMatrix(
        tuple(labels),
        loss_b,
        error_b if has_error else None,
        ends,
        end_errors if has_error else None,
        settings,
        provenance,
    )


def _flat(params: Params) -> torch.Tensor:
    return torch.cat([w.reshape(-1).to(torch.float64) for w in params.values()])


def _unflat(vec: torch.Tensor, like: Params) -> Params:
    sizes = [w.numel() for w in like.values()]
    return {k: p.reshape(like[k].shape) for k, p in zip(like, vec.split(sizes))}


def plane_through(
    problem: Problem,
    a: Any,
    b: Any,
    c: Any,
    *,
    steps: int | Sequence[int] = 31,
    margin: float = 0.2,
    names: tuple[str, str, str] = ("a", "b", "c"),
    memory_budget: int | str | None = None,
    quiet: bool | None = None,
) -> Surface:
    """The loss on the plane through three models (Garipov et al. 2018, Fig. 1).

    Axes: `u = (b - a) / |b - a|` and `v`, `c - a` with its `u` component removed, normalised
    (computed in float64, then cast to the problem's dtype). The centre is `a`; coordinates are
    Euclidean, so a = (0, 0), b = (|b - a|, 0) and c = ((c - a).u, (c - a).v) with the last > 0.
    Each axis spans the three points plus `margin` times their extent along it on both sides.
    The models' positions are attached as one-point paths labelled by `names`; directions'
    settings (kind "models-plane") hold them too.
    """
    problem, margin = _problem(problem), _margin(margin)
    labels = _names(names, None, 3, "")
    pa, pb, pc = (
        as_center(problem, _check(problem, m, k)[0], what=k) for m, k in zip((a, b, c), labels)
    )
    xa = _flat(pa)
    ab, ac = _flat(pb) - xa, _flat(pc) - xa
    ab_norm, ac_norm = float(ab.norm()), float(ac.norm())
    if ab_norm == 0 or ac_norm == 0:
        same = labels[1] if ab_norm == 0 else labels[2]
        raise LossatlasError(f"models {labels[0]!r} and {same!r} are equal: they span no plane")
    u = ab / ab_norm
    cx = float(ac @ u)
    rest = ac - cx * u
    again = float(rest @ u)  # a second Gram-Schmidt pass against rounding
    rest, cx = rest - again * u, cx + again
    cy = float(rest.norm())
    tol = min(1e-2, max(1e-6, 1e3 * torch.finfo(problem.dtype).eps))
    if cy <= tol * ac_norm:
        raise LossatlasError(
            f"models {labels[0]!r}, {labels[1]!r} and {labels[2]!r} are (nearly) collinear: "
            f"they span no plane (sin of their angle at {labels[0]!r} is {cy / ac_norm:.2g})"
        )
    v = rest / cy
    positions = np.array([[0.0, 0.0], [ab_norm, 0.0], [cx, cy]])
    lo, hi = positions.min(0), positions.max(0)
    span = [
        (float(lo[k] - margin * (hi - lo)[k]), float(hi[k] + margin * (hi - lo)[k])) for k in (0, 1)
    ]
    settings = {
        "kind": "models-plane",
        "names": labels,
        "positions": positions.tolist(),
        "margin": margin,
    }
    dirs = Directions((_unflat(u, pa), _unflat(v, pa)), settings)
    grid = surface(problem, dirs, steps, span, center=pa, memory_budget=memory_budget, quiet=quiet)
    return with_paths(grid, {label: xy[None] for label, xy in zip(labels, positions)})
