"""Loss landscapes in input space: the loss (and prediction) of a trained model over a 2D plane
of inputs, with the weights held fixed.

The grid points are only a batch of inputs: every forward pass evaluates many of them at once
through `functional_call` on the problem's private model copy, so the user's model is never
touched. Per-point losses call `problem.loss_fn` on one sample at a time (see
`per_sample_loss`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossatlas.core import batches as B
from lossatlas.core.problem import Problem
from lossatlas.core.progress import progress
from lossatlas.core.provenance import versions
from lossatlas.errors import LossatlasError
from lossatlas.landscape.input_eval import (
    PerSample,
    Targets,
    chunk_size,
    forward,
    input_gradient,
    per_sample_loss,
    prediction_kind,
)

__all__ = ["InputSurface", "input_surface", "per_sample_loss"]

PLANES = ("features", "random", "gradient")
SCALES = ("norm", "unit")
_AXES = {"random": ("random direction 1", "random direction 2")}
_AXES["gradient"] = ("input gradient", "random (orthogonal)")


@dataclass(frozen=True, eq=False)
class InputSurface:
    """The loss over a 2D grid of inputs; `loss[i, j]` is at `(coords[0][i], coords[1][j])`.

    Attributes:
        coords: coefficients along the two axes (feature values with `plane="features"`).
        loss: `(n1, n2)` loss, the mean over the anchors when there are several.
        prediction: `(n1, n2)` model output (scalar-output models) or predicted class index
            (classifiers), with one anchor; else None.
        axes: the two axis labels.
        points: `(k, 2)` data to draw over the plane: the problem's inputs in the two features
            (`plane="features"`), else the anchors, at the origin.
        settings: plane, features, span, steps, seed, anchors, scale, target kind, chunk size.
        provenance: points and inputs evaluated, forward passes, per-sample loss method, seconds,
            versions.
        directions: the two orthonormal input-space directions (input-shaped, float64) of
            `plane="random"` and `"gradient"`; None for `"features"`.
    """

    coords: tuple[np.ndarray, np.ndarray]
    loss: np.ndarray
    prediction: np.ndarray | None
    axes: tuple[str, str]
    points: np.ndarray | None
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    directions: tuple[np.ndarray, np.ndarray] | None = None

    def argmin(self) -> tuple[float, float]:
        """Coordinates of the lowest finite loss on the grid."""
        finite = np.where(np.isfinite(self.loss), self.loss, np.inf)
        i, j = np.unravel_index(int(np.argmin(finite)), self.loss.shape)
        return float(self.coords[0][i]), float(self.coords[1][j])

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the lowest and highest finite loss, where the lowest is, and the
        grid's size (the loss values are None when no point is finite)."""
        finite = np.isfinite(self.loss)
        some = bool(finite.any())
        return {
            "plane": self.settings.get("plane"),
            "loss_min": float(self.loss[finite].min()) if some else None,
            "loss_max": float(self.loss[finite].max()) if some else None,
            "argmin": list(self.argmin()) if some else None,
            "n_points": int(self.loss.size),
            "nonfinite": int((~finite).sum()),
            "seconds": self.provenance.get("seconds"),
        }


def input_surface(
    problem: Problem,
    *,
    plane: str = "features",
    features: tuple[int, int] = (0, 1),
    anchors: int | Sequence[int] | None = None,
    target: Callable[[torch.Tensor], torch.Tensor] | None = None,
    span: Any = None,
    steps: int | tuple[int, int] = 41,
    seed: int = 0,
    scale: str = "norm",
    chunk: int | None = None,
    quiet: bool | None = None,
) -> InputSurface:
    """The loss of the trained model as a function of its input, over a 2D plane of inputs.

    For anchors `x_a` (flattened inputs, `a = 1..A`) with labels `y_a`, the plotted loss is

        L(c1, c2) = (1/A) sum_a loss_fn(f(x_a(c)), t_a(c)),   t_a(c) = target(x_a(c)) or y_a,

    each term on one sample (`per_sample_loss`: `loss_fn(out[i:i+1], t[i:i+1])`). The inputs
    are, by `plane`:

    - `"features"`: `x_a(c)` is `x_a` with flattened features `features = (i, j)` set to
      `(c1, c2)`: the coordinates are feature values. Without anchors the anchor is the zero
      input (for a 2-input model, the whole input plane; other features are held at 0), which
      needs `target`. `span` defaults to the data's range in the two features, padded by 10%.
    - `"random"`: `x_a(c) = x_a + s_a (c1 d1 + c2 d2)` for two seeded Gaussian directions made
      orthonormal (Gram-Schmidt); `s_a = |x_a|` with `scale="norm"` (so `c = 1` is a
      perturbation as large as the input), 1 with `scale="unit"`.
    - `"gradient"`: as `"random"`, with `d1 = g/|g|` for `g = grad_delta L` at `delta = 0`,
      where `x_a + s_a delta` replaces `c1 d1 + c2 d2`: the steepest ascent of the plotted loss
      (for one anchor, the normalised input gradient of its loss, the direction an adversary
      tries first); `d2` is the seeded random direction made orthogonal to it. The gradient
      flows through `target` when it is differentiable torch code.

    Args:
        problem: the model, loss and data.
        plane: `"features"`, `"random"` or `"gradient"`.
        features: two distinct indices into the flattened input (`plane="features"`).
        anchors: data indices (in the order `problem.batches()` yields the data): one, or
            several whose losses are averaged. Default: none for `"features"`, else sample 0.
        target: `target(x)` gives the targets of a batch of inputs (a known true function);
            default: each anchor's own label.
        span: `a` for `(-a, a)`, `(lo, hi)` for both axes, or `((lo1, hi1), (lo2, hi2))`.
            Default: the data's range (`"features"`), else `(-1, 1)`.
        steps: grid points per axis (an int or a pair), at least 2.
        seed: seed of the random directions (a private generator; the global RNG is left alone).
        scale: `"norm"` or `"unit"` (see above); unused by `"features"`.
        chunk: inputs per forward pass; default from the memory budget.
        quiet: hide the progress bar (default: the LOSSATLAS_QUIET environment variable).

    Returns:
        An `InputSurface`; `loss[i, j]` is at `(coords[0][i], coords[1][j])`.

    Raises:
        LossatlasError: a bad argument, integer (token) inputs, a model or loss that fails, or
            `bn="recompute"` on a model with BatchNorm.
    """
    start = time.perf_counter()
    if not isinstance(problem, Problem):
        raise LossatlasError(f"problem must be a lossatlas Problem, got {type(problem).__name__}")
    problem.require_eval_bn("input_surface")
    x0, y0 = problem.first_batch()
    if not B.is_tensor(x0) or y0 is None:
        raise LossatlasError(
            "input_surface moves one input tensor against its targets; this problem's batches "
            "have several input tensors, a mapping or no targets"
        )
    if plane not in PLANES:
        raise LossatlasError(f"plane={plane!r} is not known; choose one of {PLANES}")
    if scale not in SCALES:
        raise LossatlasError(f"scale={scale!r} is not known; choose one of {SCALES}")
    if target is not None and not callable(target):
        raise LossatlasError("target must be a function of the inputs, target(x) -> targets")
    n1, n2 = _pair_of_ints(steps, "steps", 2)
    x0 = problem.first_batch()[0]
    if not x0.is_floating_point():
        raise LossatlasError(f"input planes need floating-point inputs, the data has {x0.dtype}")
    shape, dim = tuple(x0.shape[1:]), x0[0].numel()
    if dim < 2:
        raise LossatlasError(f"the model's inputs have {dim} feature; a plane needs at least 2")
    feats = _features(features, dim) if plane == "features" else None
    index = _anchors(anchors, problem.n_samples, plane)
    if index is None and target is None:
        raise LossatlasError(
            "plane='features' without anchors has no labels to compare with: pass target= "
            "(the true function of the inputs) or anchors= (data indices)"
        )
    chunk = chunk_size(problem) if chunk is None else _pair_of_ints(chunk, "chunk", 1)[0]
    X, Y, cols = _gather(problem, index, feats, dim)
    A, f64, dev = len(X), torch.float64, problem.device
    scales = (
        X.double().norm(dim=1) if scale == "norm" and feats is None else X.new_ones(A, dtype=f64)
    )
    if not bool((scales > 0).all()):
        raise LossatlasError("an anchor is the zero input, so scale='norm' is 0; use scale='unit'")
    per, n_forward, D = PerSample(problem.loss_fn), 0, None
    targets = Targets(problem, target, Y)
    if feats is None:
        gen = torch.Generator().manual_seed(int(seed))
        r = torch.randn(2, dim, generator=gen, dtype=f64)
        if plane == "gradient":
            r[0], n_forward = input_gradient(problem, per, targets, X, scales, shape, chunk)
        d1 = r[0] / r[0].norm()
        d2 = r[1] - (r[1] @ d1) * d1
        D = torch.stack([d1, d2 / d2.norm()]).to(dev)
    if span is None and feats is not None:
        lo, hi = cols.min(0), cols.max(0)
        pad = np.where(hi > lo, 0.1 * (hi - lo), 1.0)
        span = tuple(zip(lo - pad, hi + pad))
    spans = _span((-1.0, 1.0) if span is None else span)
    coords = (np.linspace(*spans[0], n1), np.linspace(*spans[1], n2))
    grid = torch.cartesian_prod(*(torch.from_numpy(c) for c in coords)).to(dev)
    total, pred, kind = np.zeros(n1 * n2), np.full(n1 * n2, np.nan) if A == 1 else None, None
    n_inputs = n1 * n2 * A
    with progress("input surface", n_inputs, quiet=True if n_inputs <= chunk else quiet) as advance:
        for first in range(0, n_inputs, chunk):
            q = torch.arange(first, min(first + chunk, n_inputs), device=dev)
            p, a = q // A, q % A
            if feats is not None:
                x = X[a].clone()
                x[:, feats] = grid[p].to(x)
            else:
                x = (X[a].double() + scales[a, None] * (grid[p] @ D)).to(X)
            x = x.reshape(-1, *shape)
            with torch.no_grad():
                out, losses = forward(problem, per, targets, x, a)
            np.add.at(total, p.cpu().numpy(), losses.double().cpu().numpy())
            if pred is not None:
                kind = kind or prediction_kind(problem.loss_fn, out, targets.last)
                if kind:
                    flat = out.reshape(len(out), -1)
                    value = flat[:, 0] if kind == "output" else flat.argmax(1)
                    pred[p.cpu().numpy()] = value.double().cpu().numpy()
            n_forward += 1
            advance(len(q))
    if feats is not None:
        axes = ("x1", "x2") if dim == 2 else (f"feature {feats[0]}", f"feature {feats[1]}")
        points = cols
    else:
        axes, points = _AXES[plane], np.zeros((A, 2))
    settings = {
        "plane": plane,
        "features": list(feats) if feats is not None else None,
        "span": [list(map(float, s)) for s in spans],
        "steps": [n1, n2],
        "seed": int(seed),
        "anchors": index,
        "scale": scale if feats is None else None,
        "anchor_scales": scales.tolist() if feats is None else None,
        "target": "function" if target is not None else "anchor labels",
        "prediction": kind if pred is not None else None,
        "input_shape": list(shape),
        "chunk_size": chunk,
    }
    provenance = {
        "points": n1 * n2,
        "inputs_evaluated": n1 * n2 * A,
        "forward_passes": n_forward,
        "per_sample_loss": per.method,
        "n_samples": problem.n_samples,
        "device": str(problem.device),
        "dtype": str(problem.dtype).removeprefix("torch."),
        "seconds": time.perf_counter() - start,
        "versions": versions(),
    }
    return InputSurface(
        coords=coords,
        loss=total.reshape(n1, n2) / A,
        prediction=pred.reshape(n1, n2) if kind else None,
        axes=axes,
        points=points,
        settings=settings,
        provenance=provenance,
        directions=None if D is None else tuple(d.reshape(shape).cpu().numpy() for d in D),
    )


def _gather(problem: Problem, index, feats, dim: int):
    """Anchor inputs (A, dim) and labels, and the data's values in `feats` (k, 2) if asked."""
    found: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    wanted, cols, offset = set(index or ()), [], 0
    for x, y in problem.batches():
        for i in wanted.intersection(range(offset, offset + len(x))):
            found[i] = (x[i - offset].reshape(-1), y[i - offset])
        if feats is not None:
            cols.append(x.reshape(len(x), -1)[:, list(feats)].double().cpu().numpy())
        elif len(found) == len(wanted):
            break
        offset += len(x)
    if index is None:
        zero = torch.zeros(1, dim, dtype=problem.dtype, device=problem.device)
        return zero, None, np.concatenate(cols)
    X = torch.stack([found[i][0] for i in index])
    return X, torch.stack([found[i][1] for i in index]), np.concatenate(cols) if cols else None


def _pair_of_ints(value: Any, name: str, least: int) -> tuple[int, int]:
    pair = value if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise LossatlasError(f"{name} must be an int or a pair of ints, got {value!r}")
    if any(isinstance(v, bool) or v < least for v in pair):
        raise LossatlasError(f"{name} must be at least {least}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _features(features: Any, dim: int) -> list[int]:
    if not isinstance(features, (tuple, list)) or len(features) != 2:
        raise LossatlasError(f"features must be two flattened input indices, got {features!r}")
    if not all(isinstance(f, (int, np.integer)) and not isinstance(f, bool) for f in features):
        raise LossatlasError(f"features must be two ints, got {features!r}")
    if not all(0 <= f < dim for f in features) or features[0] == features[1]:
        raise LossatlasError(
            f"features {tuple(features)} must be two different indices in 0..{dim - 1} "
            f"(the model's input has {dim} features, flattened)"
        )
    return [int(f) for f in features]


def _anchors(anchors: Any, n: int, plane: str) -> list[int] | None:
    if anchors is None:
        return None if plane == "features" else [0]
    items = [anchors] if isinstance(anchors, (int, np.integer)) else anchors
    try:
        items = list(items)
    except TypeError:
        raise LossatlasError(f"anchors must be a data index or indices, got {anchors!r}") from None
    if not items or not all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in items
    ):
        raise LossatlasError(f"anchors must be one or more data indices, got {anchors!r}")
    bad = [int(i) for i in items if not -n <= i < n]
    if bad:
        raise LossatlasError(f"anchor index {bad[0]} is out of range: the data has {n} samples")
    return [int(i) % n for i in items]


def _span(span: Any) -> list[tuple[float, float]]:
    try:
        s = np.asarray(span, dtype=float)
    except (TypeError, ValueError):
        s = np.empty(0)
    s = np.array([[-s, s]] * 2) if s.ndim == 0 else np.array([s, s]) if s.shape == (2,) else s
    if s.shape != (2, 2) or not np.isfinite(s).all() or not (s[:, 0] < s[:, 1]).all():
        raise LossatlasError(
            f"span must be a > 0, (lo, hi) or ((lo1, hi1), (lo2, hi2)) with lo < hi, got {span!r}"
        )
    return [(float(lo), float(hi)) for lo, hi in s]
