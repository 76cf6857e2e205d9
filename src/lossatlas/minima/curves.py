"""Low-loss paths between two minima (mode connectivity).

`fit_curve` trains a curve `phi(t)`, `t` in [0, 1], from weights `a` to weights `b`: a quadratic
Bezier curve `(1-t)^2 a + 2t(1-t) theta + t^2 b` (Garipov et al. 2018) or a polygonal chain
`a -> theta_1 -> ... -> theta_k -> b` with bends at `t = i / (k + 1)` (Draxler et al. 2018). The
bends start on the segment and minimise `E_{t ~ U(0,1)} L(phi(t))`: each step draws one `t` and
one batch and steps a `torch.optim` optimizer on the bends only, running the problem's model
through `torch.func.functional_call` (the user's layers and model are never touched). BatchNorm
and dropout are in evaluation mode with the problem's buffers, also under `bn="recompute"`.
`curve_losses` evaluates the curve and the straight line through the engine, with the barrier
`max_t [L(t) - ((1 - t) L(0) + t L(1))]` of each (`interpolation.barrier`, as Entezari et al.
2022 measure it).

References: Garipov, Izmailov, Podoprikhin, Vetrov, Wilson, "Loss Surfaces, Mode Connectivity,
and Fast Ensembling of DNNs", NeurIPS 2018; Draxler, Veschgini, Salmhofer, Hamprecht,
"Essentially No Barriers in Neural Network Energy Landscape", ICML 2018; Frankle, Dziugaite,
Roy, Carbin, "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossatlas.core import batches as B
from lossatlas.core.directions import Directions
from lossatlas.core.engine import Evaluator, probe
from lossatlas.core.problem import Problem, batch_value
from lossatlas.core.progress import progress
from lossatlas.core.provenance import versions
from lossatlas.descent.optimizers import check_lr, resolve_optimizer
from lossatlas.errors import LossatlasError, check_count, one_line
from lossatlas.minima.interpolation import barrier
from lossatlas.minima.model_args import model_parts

KINDS = ("bezier", "chain")
Weights = dict[str, torch.Tensor]


def _weights(problem: Problem, source: Any, what: str) -> Weights:
    """`source`'s parameters as float64 CPU tensors (its buffers are ignored: the problem's are
    used), checked against the problem's."""
    params, _ = model_parts(problem, source, what)
    out = {k: torch.as_tensor(params[k]).detach().to("cpu", torch.float64).clone() for k in params}
    if not all(bool(torch.isfinite(t).all()) for t in out.values()):
        raise LossatlasError(f"{what} has non-finite parameters")
    return out


def coefficients(kind: str, n_control: int, ts: Any) -> np.ndarray:
    """`(n, n_control)` weights with `phi(t) = sum_i coef_i(t) control_i` (ends first and last).

    Bezier: Bernstein polynomials `C(m, i) t^i (1-t)^(m-i)`, `m = n_control - 1`. Chain: hat
    functions on the nodes `t_i = i / m`, so the chain is linear between its points. Rows at
    `t = 0` and `t = 1` are exactly `(1, 0, ..., 0)` and `(0, ..., 0, 1)`.
    """
    t = np.asarray(ts, dtype=np.float64).reshape(-1)
    if not (np.isfinite(t).all() and (t >= 0).all() and (t <= 1).all()):
        raise LossatlasError("curve positions t must lie in [0, 1]")
    m = n_control - 1
    if kind == "bezier":
        i = np.arange(n_control)
        binom = np.array([math.comb(m, k) for k in i], dtype=np.float64)
        return binom * t[:, None] ** i * (1 - t[:, None]) ** (m - i)
    s = t * m
    seg = np.clip(np.floor(s), 0, m - 1).astype(int)
    frac = s - seg
    out = np.zeros((len(t), n_control))
    rows = np.arange(len(t))
    out[rows, seg], out[rows, seg + 1] = 1 - frac, frac
    return out


@dataclass(frozen=True, eq=False)
class Curve:
    """A trained curve between two models.

    Attributes:
        kind: `"bezier"` or `"chain"`.
        control_points: `{name: float64 CPU tensor}` dicts: `a`, the trained points, `b`.
        history: `{"t": ..., "loss": ...}`, the `t` drawn and the (mini-batch) loss at
            `phi(t)` before every step, float64 arrays.
        settings: what was asked (kind, bends, steps, lr, optimizer, batch size, seed, init, bn).
        provenance: steps, seconds, device, dtype, parameter and sample counts, versions.
    """

    kind: str
    control_points: tuple[Weights, ...]
    history: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def bends(self) -> int:
        return len(self.control_points) - 2

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the kind, the bends, the training steps recorded, the first and
        last mini-batch loss of training (None without a history), and the seconds."""
        loss = self.history.get("loss")
        some = loss is not None and len(loss) > 0
        return {
            "kind": self.kind,
            "bends": self.bends,
            "steps": 0 if loss is None else len(loss),
            "first_loss": float(loss[0]) if some else None,
            "final_loss": float(loss[-1]) if some else None,
            "seconds": self.provenance.get("seconds"),
        }

    def coefficients(self, ts: Any) -> np.ndarray:
        """`(n, n_control)` weights of the control points at each `t` (see `coefficients`)."""
        return coefficients(self.kind, len(self.control_points), ts)

    def point(self, t: float) -> Weights:
        """The weights `phi(t)` as `{name: float64 CPU tensor}`."""
        c, pts = self.coefficients([t])[0], self.control_points
        return {k: sum(float(ci) * p[k] for ci, p in zip(c, pts)) for k in pts[0]}


def _batches(problem: Problem, batch_size: int | None, rng: np.random.Generator):
    """Endless per-step data: all batches (full batch) or seeded random mini-batches."""
    if batch_size is None:
        while True:
            yield list(problem.batches())
    if not problem.in_memory:  # a DataLoader: its own batches (size, shuffling) in turn
        while True:
            for x, y in problem.batches():
                yield [(x, y)]
    samples = B.Samples(problem.batches())
    size = min(batch_size, samples.n)
    while True:  # epochs of a seeded permutation, without replacement within an epoch
        order = torch.from_numpy(rng.permutation(samples.n)).to(problem.device)
        for start in range(0, samples.n - size + 1, size):
            yield samples.take(order[start : start + size])


def _loss(problem: Problem, points: list[Weights], c: torch.Tensor, batches, weight: float):
    """The loss at `phi = sum_i c_i points_i` over `batches` (/ `weight`); gradients accumulate."""
    total = torch.zeros((), dtype=torch.float64, device=problem.device)
    with torch.enable_grad():
        for x, y in batches:  # one backward pass per batch: one graph at a time
            phi = {k: sum(ci * p[k] for ci, p in zip(c, points)) for k in problem.params}
            try:
                out = problem.call((phi, problem.buffers), x)
                value = batch_value(problem.loss_fn(out, y))
                value = value * problem.batch_weight(problem.units(x, y))
            except Exception as exc:
                raise LossatlasError(f"the model fails on the curve: {one_line(exc)}") from exc
            if value.requires_grad:
                (value / weight).backward()
            total = total + value.detach() / weight
    return total


def fit_curve(
    problem: Problem,
    a: Any,
    b: Any,
    *,
    kind: str = "bezier",
    bends: int = 1,
    steps: int = 500,
    lr: float = 0.01,
    optimizer: str | type[torch.optim.Optimizer] = "sgd",
    optimizer_kwargs: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    init: str | Sequence[Any] = "line",
    quiet: bool | None = None,
) -> Curve:
    """Train a low-loss curve from `a` to `b` (mode connectivity; see the module docstring).

    Args:
        problem: the model, loss and data (its weights are not used unless `a` or `b` is it).
        a, b: the fixed ends: a Problem (its weights), a model, a `{name: tensor}` dict of all
            parameters, or any object with a `.params` attribute.
        kind: `"bezier"` (one control point: `bends` must be 1) or `"chain"`.
        bends: trainable points of a chain.
        steps: optimizer steps; each draws `t ~ U(0, 1)` and a batch.
        lr, optimizer, optimizer_kwargs: the `torch.optim` optimizer, by name or class.
        batch_size: samples per step, from a seeded permutation per epoch (the last incomplete
            slice of an epoch is skipped; a DataLoader's own batches are used in turn). None
            takes all data every step, sample-weighted exactly as the engine weighs losses.
        seed: seeds private generators for `t` and the batches (the global torch generator is
            seeded inside a fork, for optimizers that draw from it, and restored afterwards).
        init: `"line"` (points evenly on the segment; the Bezier point at the midpoint, which
            makes the curve the segment itself), or `bends` weight sources as for `a`.
        quiet: hide the progress bar (None: the LOSSATLAS_QUIET environment variable).
    """
    if kind not in KINDS:
        raise LossatlasError(f"kind={kind!r} is not one of {KINDS}")
    bends = check_count("bends", bends, 1)
    if kind == "bezier" and bends != 1:
        raise LossatlasError(f"a quadratic Bezier curve has 1 bend, got bends={bends}")
    steps, seed, lr = check_count("steps", steps, 1), check_count("seed", seed, 0), check_lr(lr)
    if batch_size is not None:
        batch_size = check_count("batch_size", batch_size, 1)
    label, cls, opt_kwargs = resolve_optimizer(optimizer, optimizer_kwargs)
    ends = _weights(problem, a, "a"), _weights(problem, b, "b")
    if isinstance(init, str) and init == "line":
        at = np.arange(1, bends + 1) / (bends + 1)
        starts = [{k: (1 - s) * ends[0][k] + s * ends[1][k] for k in ends[0]} for s in at]
    elif not isinstance(init, str) and isinstance(init, Sequence) and len(init) == bends:
        starts = [_weights(problem, w, f"init[{i}]") for i, w in enumerate(init)]
    else:
        raise LossatlasError(f"init must be 'line' or a sequence of {bends} weight sources")
    dev = {"device": problem.device, "dtype": problem.dtype}
    fixed = [{k: v.to(**dev) for k, v in w.items()} for w in ends]
    for where in fixed:
        probe(problem, where)  # a model or loss that fails on the data says so in one line
    leaves = [{k: v.to(**dev).requires_grad_(True) for k, v in w.items()} for w in starts]
    points = [fixed[0], *leaves, fixed[1]]
    rng_t, rng_b = (np.random.default_rng([seed, i]) for i in (1, 2))
    data = _batches(problem, batch_size, rng_b)
    ts, losses = np.empty(steps), np.empty(steps)
    cuda = [problem.device.index or 0] if problem.device.type == "cuda" else []
    began = time.perf_counter()
    with torch.random.fork_rng(devices=cuda), progress("fitting curve", steps, quiet=quiet) as bar:
        torch.default_generator.manual_seed(seed)
        try:
            opt = cls([p for w in leaves for p in w.values()], lr=lr, **opt_kwargs)
        except (TypeError, ValueError) as exc:
            raise LossatlasError(
                f"optimizer {label!r} rejects its options: {one_line(exc)}"
            ) from exc
        for step in range(steps):
            t = float(rng_t.random())
            c = torch.as_tensor(coefficients(kind, bends + 2, [t])[0], **dev)
            batches = next(data)  # all data, or a mini-batch (in parts when padded apart)
            weight = problem.loss_divisor if batch_size is None else problem.divisor_of(batches)

            def closure(c=c, batches=batches, weight=weight) -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                return _loss(problem, points, c, batches, weight)

            ts[step], losses[step] = t, float(opt.step(closure))
            if not math.isfinite(losses[step]):
                raise LossatlasError(
                    f"the loss on the curve is not finite at step {step} (t = {t:.3f}); "
                    "lower lr or change the optimizer"
                )
            bar()
    seconds = time.perf_counter() - began
    trained = [{k: v.detach().to("cpu", torch.float64) for k, v in w.items()} for w in leaves]
    settings = dict(kind=kind, bends=bends, steps=steps, lr=lr, optimizer=label)
    settings.update(optimizer_class=f"{cls.__module__}.{cls.__qualname__}")
    settings.update(optimizer_kwargs=opt_kwargs, batch_size=batch_size, seed=seed)
    settings.update(init=init if isinstance(init, str) else "given", bn_training="eval")
    settings.update(bn=getattr(problem, "bn", "eval"))
    provenance = dict(steps=steps, seconds=seconds, device=str(problem.device))
    provenance.update(dtype=str(problem.dtype), n_params=problem.n_params)
    provenance.update(n_samples=problem.n_samples, versions=versions())
    history = {"t": ts, "loss": losses}
    return Curve(kind, (ends[0], *trained, ends[1]), history, settings, provenance)


@dataclass(frozen=True, eq=False)
class CurveLosses:
    """The loss (and metrics) along a curve and along the straight line, at the same `t`.

    `barrier` and `line_barrier` are `max_t [L(t) - ((1 - t) L(0) + t L(1))]` over the grid:
    how far the path rises above the chord between its ends (NaN if a loss is not finite).
    """

    t: np.ndarray
    loss: np.ndarray
    metrics: dict[str, np.ndarray]
    line_loss: np.ndarray
    line_metrics: dict[str, np.ndarray]
    barrier: float
    line_barrier: float
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the curve's kind, the barrier on the curve and on the straight
        line, and the highest loss on each (NaN if a loss is NaN)."""
        return {
            "kind": self.settings.get("kind"),
            "barrier": float(self.barrier),
            "line_barrier": float(self.line_barrier),
            "loss_max": float(np.max(self.loss)),
            "line_loss_max": float(np.max(self.line_loss)),
        }


def curve_losses(
    problem: Problem, curve: Curve, *, steps: int = 61, memory_budget: int | str | None = None
) -> CurveLosses:
    """The loss and metrics at `steps` evenly spaced `t` in [0, 1] along `curve` and the line.

    Evaluated by the engine with the control points as directions, a zero centre and the
    coefficient rows `curve.coefficients(t)` (line: `(1-t, 0, ..., 0, t)`), so `t = 0` and
    `t = 1` are exactly the end models, in the problem's dtype. Buffers are the problem's (or
    recomputed at every point, under `Problem(bn="recompute")`).
    """
    if not isinstance(curve, Curve):
        raise LossatlasError(f"expected a Curve from fit_curve, got {type(curve).__name__}")
    steps = check_count("steps", steps, 2)
    for i, w in enumerate(curve.control_points):
        _weights(problem, w, f"the curve's control point {i}")
    began = time.perf_counter()
    t = np.linspace(0.0, 1.0, steps)
    n = len(curve.control_points)
    line = np.zeros((steps, n))
    line[:, 0], line[:, -1] = 1 - t, t
    rows = np.concatenate([curve.coefficients(t), line])
    zero = {k: torch.zeros_like(w) for k, w in problem.params.items()}
    dirs = Directions(curve.control_points, {"kind": "curve", "curve": curve.kind})
    ev = Evaluator(problem, dirs, center=zero, memory_budget=memory_budget, n_points=len(rows))
    size = ev.plan.chunk_size
    parts = [ev(rows[i : i + size]) for i in range(0, len(rows), size)]
    loss = np.concatenate([p.loss for p in parts])
    metrics = {m: np.concatenate([p.metrics[m] for p in parts]) for m in problem.metrics}
    settings = dict(steps=steps, kind=curve.kind, bends=curve.bends, curve=dict(curve.settings))
    settings.update(bn=getattr(problem, "bn", "eval"), dtype=str(problem.dtype), chunk_size=size)
    provenance = dict(seconds=time.perf_counter() - began, n_samples=problem.n_samples)
    provenance.update(n_model_calls=ev.n_model_calls, versions=versions())
    on, off = slice(steps), slice(steps, None)
    m_on, m_off = ({m: v[part] for m, v in metrics.items()} for part in (on, off))
    out = dict(t=t, loss=loss[on], metrics=m_on, line_loss=loss[off], line_metrics=m_off)
    out.update(barrier=barrier(t, loss[on])[0], line_barrier=barrier(t, loss[off])[0])
    return CurveLosses(**out, settings=settings, provenance=provenance)
