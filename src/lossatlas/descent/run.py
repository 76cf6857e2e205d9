"""Optimizer runs ("descent"): how a `torch.optim` optimizer moves across a loss landscape.

`descend` runs one optimizer from one start, on a function of a vector (an analytic test function,
say) or on a `Problem` (then the position is the model's parameters and every gradient is the
full-batch gradient over all of the problem's data, sample-weighted exactly as the engine weighs
losses). It records the loss and the gradient norm at every position visited, the positions
themselves, and the learning rate of every step, and stops early when the run converges (the
gradient norm is at most `tol`) or diverges (a non-finite value, or the loss beyond
`blowup * max(1, |loss0|)`), keeping the history up to that point. The user's model is never
touched: the run moves its own copies of the parameters through `torch.func.functional_call`.

Many runs at once, and a fair comparison of optimizers, are in `lossatlas.descent.sweeps`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.optim import lr_scheduler as sched

from lossatlas.core.problem import Problem
from lossatlas.core.provenance import versions
from lossatlas.descent.objectives import FunctionObjective, ModelObjective
from lossatlas.descent.optimizers import check_lr, make_schedule, resolve_optimizer
from lossatlas.errors import LossatlasError, LossatlasWarning, one_line

STATUSES = ("converged", "diverged", "max_steps")
# Positions of a Problem run are kept while (steps + 1) * n_params stays below this (80 MB).
POSITION_BUDGET = 10_000_000


def _amount(name: str, value: Any, above: float | None = None) -> float:
    """`value` as a float; a `LossatlasError` unless it is a number >= 0 (or > `above`)."""
    number = not isinstance(value, bool) and isinstance(value, (int, float, np.number))
    if not number or not (value > above if above is not None else value >= 0):
        least = "of at least 0" if above is None else f"above {above}"
        raise LossatlasError(f"{name} must be a number {least}, got {value!r}")
    return float(value)


# -- the record ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Trajectory:
    """One optimizer run: where it went, the loss there, and how it ended.

    Attributes:
        loss: float64 loss at each position visited, the start first: `loss[k]` is the loss
            at position k; `len(loss) == steps_taken + 1`. The last entry of a diverged run is
            the first bad value (non-finite or beyond the blow-up limit).
        grad_norm: Euclidean norm of the (noise-free) gradient at each position.
        lr: learning rate used by step k (from position k to k + 1), shape `(steps_taken,)`.
        status: `"converged"`, `"diverged"` or `"max_steps"`.
        final_position: the last position, flat (float64), kept even when `positions` is not.
        positions: `(steps_taken + 1, d)` float64 positions, or None (a Problem whose positions
            were not recorded). For a Problem a position is all parameters flattened in
            `param_shapes` order.
        param_shapes: `(name, shape)` of each parameter for a Problem; None for a function.
        settings: what was asked: objective, optimizer and its options, lr, steps, schedule and
            its options, tol, xtol, blowup, noise, seed, start.
        provenance: evaluations, seconds, device, dtype, versions.
    """

    loss: np.ndarray
    grad_norm: np.ndarray
    lr: np.ndarray
    status: str
    final_position: np.ndarray
    positions: np.ndarray | None = None
    param_shapes: tuple[tuple[str, tuple[int, ...]], ...] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def steps_taken(self) -> int:
        return len(self.loss) - 1

    @property
    def final_loss(self) -> float:
        return float(self.loss[-1])

    @property
    def best_loss(self) -> float:
        """Lowest finite loss visited (NaN if there is none)."""
        finite = self.loss[np.isfinite(self.loss)]
        return float(finite.min()) if finite.size else math.nan

    @property
    def optimizer(self) -> str:
        return self.settings.get("optimizer", "")

    @property
    def converged(self) -> bool:
        return self.status == "converged"

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    def final_params(self) -> dict[str, torch.Tensor]:
        """The last position of a Problem run as a `{name: tensor}` dict (float64, CPU)."""
        if self.param_shapes is None:
            raise LossatlasError("final_params() is for Problem runs; use final_position")
        sizes = [math.prod(shape) for _, shape in self.param_shapes]
        pieces = np.split(self.final_position, np.cumsum(sizes)[:-1])
        return {
            name: torch.from_numpy(piece.reshape(shape).copy())
            for (name, shape), piece in zip(self.param_shapes, pieces)
        }

    def headline(self) -> dict[str, Any]:
        """Headline numbers: optimizer and lr, how the run ended, after how many steps, its final
        and best loss and its final gradient norm."""
        return {
            "optimizer": self.optimizer,
            "lr": self.settings.get("lr"),
            "status": self.status,
            "steps_taken": self.steps_taken,
            "final_loss": self.final_loss,
            "best_loss": self.best_loss,
            "final_grad_norm": float(self.grad_norm[-1]) if len(self.grad_norm) else None,
            "seconds": self.provenance.get("seconds"),
        }

    def __repr__(self) -> str:
        return (
            f"Trajectory(optimizer={self.optimizer!r}, lr={self.settings.get('lr')}, "
            f"status={self.status!r}, steps_taken={self.steps_taken}, "
            f"final_loss={self.final_loss:.6g})"
        )


# -- one run ---------------------------------------------------------------------------------
def descend(
    objective: Callable[[torch.Tensor], torch.Tensor] | Problem,
    start: Any = None,
    *,
    optimizer: str | type[torch.optim.Optimizer] = "sgd",
    lr: float = 0.1,
    steps: int = 100,
    optimizer_kwargs: Mapping[str, Any] | None = None,
    schedule: Any = None,
    schedule_kwargs: Mapping[str, Any] | None = None,
    tol: float = 1e-8,
    xtol: float | None = None,
    blowup: float = 1e6,
    noise: float = 0.0,
    seed: int = 0,
    record_positions: bool = True,
) -> Trajectory:
    """Run one optimizer from `start` and record its path.

    Every step evaluates the loss and gradient once at the new position (L-BFGS's line search
    may evaluate more); after evaluating position k the run stops as

    - `"diverged"` if the loss, the gradient norm or the position is non-finite, or the loss
      exceeds `blowup * max(1, |loss0|)`: the history up to and including that point is kept
      and nothing is raised;
    - `"converged"` if the gradient norm is at most `tol`, or (with `xtol`) the last step moved
      the position by at most `xtol` (Euclidean);
    - `"max_steps"` after `steps` steps.

    Args:
        objective: a function of a position tensor of shape `(d,)` returning a scalar loss
            tensor (e.g. a test function from `lossatlas.descent.functions`), or a `Problem`, whose
            position is the model's parameters and whose loss and gradient are over all its
            data (full batch, sample-weighted as in the engine; BatchNorm in eval mode with the
            stored statistics: `bn="recompute"` is refused).
        start: for a function, the starting point (sequence, array or tensor of shape (d,);
            a float tensor keeps its dtype, anything else becomes float64). For a Problem, None
            (its weights), a model, a `{name: tensor}` dict or a flat vector of all parameters.
        optimizer: a name from `OPTIMIZERS` (case-insensitive) or a `torch.optim.Optimizer`
            subclass.
        lr: learning rate, finite and positive.
        steps: most optimizer steps to take, at least 1.
        optimizer_kwargs: more options for the optimizer (over the registry's).
        schedule: None, a name from `SCHEDULES`, an `LRScheduler` subclass, or a function
            `optimizer -> scheduler`. It is stepped once after every optimizer step
            (`"plateau"` with the loss at the new position). `"cosine"`, `"onecycle"` and
            `"polynomial"` span `steps` unless told otherwise; `"onecycle"` peaks at `lr`.
        schedule_kwargs: options for a schedule name or class.
        tol: convergence threshold on the gradient norm.
        xtol: also converge when a step moves the position by at most this; off by default
            (a small learning rate moves little without being near a minimum).
        blowup: divergence factor on the starting loss (`math.inf` turns the test off).
        noise: standard deviation of Gaussian noise added to every gradient component the
            optimizer sees (a model of minibatch noise), drawn from a generator seeded with
            `seed`. The recorded gradient norms are noise-free.
        seed: seeds the noise, and the global torch generator inside the run for optimizers
            that draw from it; the caller's generator state is restored afterwards.
        record_positions: for a Problem, keep every position (when `(steps + 1) * n_params`
            is within `POSITION_BUDGET`; otherwise a warning and only the final one). Positions
            of a function are always kept.
    """
    is_problem = isinstance(objective, Problem)
    if not is_problem and not callable(objective):
        raise LossatlasError(
            f"objective must be a function of a position or a Problem, got {type(objective)}"
        )
    label, cls, opt_kwargs = resolve_optimizer(optimizer, optimizer_kwargs)
    lr = check_lr(lr)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise LossatlasError(f"steps must be an integer of at least 1, got {steps!r}")
    steps = int(steps)
    tol, noise, blowup = _amount("tol", tol), _amount("noise", noise), _amount("blowup", blowup, 0)
    xtol = None if xtol is None else _amount("xtol", xtol)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise LossatlasError(f"seed must be an integer, got {seed!r}")

    target = ModelObjective(objective, start) if is_problem else FunctionObjective(objective, start)
    n_params = sum(p.numel() for p in target.leaves)
    record = not is_problem or record_positions
    if is_problem and record and (steps + 1) * n_params > POSITION_BUDGET:
        warnings.warn(
            f"lossatlas: not recording positions ({steps + 1} steps x {n_params} parameters "
            f"exceed {POSITION_BUDGET} values); pass record_positions=False to silence this",
            LossatlasWarning,
            stacklevel=2,
        )
        record = False

    device = target.device
    cuda = [device.index or 0] if device.type == "cuda" else []
    began = time.perf_counter()
    with torch.random.fork_rng(devices=cuda):
        # Optimizers that draw random numbers use the global generator: seed it inside the fork.
        torch.default_generator.manual_seed(int(seed))
        if cuda:
            with torch.cuda.device(cuda[0]):
                torch.cuda.manual_seed(int(seed))
        try:
            opt = cls(target.leaves, lr=lr, **opt_kwargs)
        except (TypeError, ValueError) as exc:
            raise LossatlasError(
                f"optimizer {label!r} rejects its options: {one_line(exc)}"
            ) from exc
        scheduler, schedule_label = None, None
        if schedule is not None:
            scheduler, schedule_label = make_schedule(schedule, schedule_kwargs, opt, lr, steps)
        limits = (steps, tol, xtol, blowup)
        history = _run(target, opt, scheduler, limits, noise=noise, seed=int(seed), record=record)
    seconds = time.perf_counter() - began
    positions, losses, norms, lrs, status, final, n_evals = history

    if is_problem:
        start_setting: Any = "weights" if start is None else "custom"
        name = type(objective.model).__name__
    else:
        start_setting = positions[0].tolist()
        name = getattr(objective, "name", None)
    settings = {
        "objective": name,
        "optimizer": label,
        "optimizer_class": f"{cls.__module__}.{cls.__qualname__}",
        "optimizer_kwargs": opt_kwargs,
        "lr": lr,
        "steps": steps,
        "schedule": schedule_label,
        "schedule_kwargs": dict(schedule_kwargs or {}),
        "tol": tol,
        "xtol": xtol,
        "blowup": blowup,
        "noise": noise,
        "seed": int(seed),
        "start": start_setting,
        "record_positions": record,
    }
    provenance = {
        "n_evals": n_evals,
        "n_params": n_params,
        "seconds": seconds,
        "device": str(device),
        "dtype": str(target.leaves[0].dtype),
        "versions": versions(),
    }
    if is_problem:
        provenance["n_samples"] = objective.n_samples
    return Trajectory(
        loss=np.array(losses, dtype=np.float64),
        grad_norm=np.array(norms, dtype=np.float64),
        lr=np.array(lrs, dtype=np.float64),
        status=status,
        final_position=final,
        positions=np.stack(positions) if record else None,
        param_shapes=target.shapes,
        settings=settings,
        provenance=provenance,
    )


def _flat(leaves: list[torch.Tensor]) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in leaves]).to("cpu", torch.float64).numpy()


def _run(target, opt, scheduler, limits, *, noise: float, seed: int, record: bool):
    """The optimisation loop; returns the histories, status and counts."""
    steps, tol, xtol, blowup = limits
    leaves = target.leaves
    generator = torch.Generator(device=target.device).manual_seed(seed) if noise else None
    n_evals = 0
    fresh = False  # whether the closure may answer from the evaluation at the current position

    def evaluate(where: str) -> tuple[torch.Tensor, float]:
        nonlocal n_evals
        loss, grads = target(where)
        n_evals += 1
        norm = math.sqrt(sum(float(g.to(torch.float64).pow(2).sum()) for g in grads))
        for p, g in zip(leaves, grads):
            if generator is not None:
                g = g + noise * torch.randn(
                    g.shape, generator=generator, device=g.device, dtype=g.dtype
                )
            p.grad = g
        return loss, norm

    def closure() -> torch.Tensor:
        # The first call of a step is at the position just evaluated: answer from that.
        nonlocal fresh
        if fresh:
            fresh = False
            return current
        return evaluate(f"a line search after step {len(losses) - 1}")[0]

    positions: list[np.ndarray] = []
    losses: list[float] = []
    norms: list[float] = []
    lrs: list[float] = []
    current, norm = evaluate("the start")
    limit = math.inf
    previous: list[torch.Tensor] | None = None
    while True:
        loss = float(current)
        losses.append(loss)
        norms.append(norm)
        if record:
            positions.append(_flat(leaves))
        if len(losses) == 1 and math.isfinite(loss):
            limit = blowup * max(1.0, abs(loss))
        finite = all(bool(torch.isfinite(p).all()) for p in leaves)
        if not (finite and math.isfinite(loss) and math.isfinite(norm)) or loss > limit:
            status = "diverged"
            break
        if norm <= tol:
            status = "converged"
            break
        if previous is not None:
            moved = sum(
                float((p.detach() - q).double().pow(2).sum()) for p, q in zip(leaves, previous)
            )
            if math.sqrt(moved) <= xtol:
                status = "converged"
                break
        if len(losses) > steps:
            status = "max_steps"
            break
        if scheduler is not None and len(losses) > 1:
            # Stepped after each optimizer step, here so that the last one is not wasted.
            try:
                if isinstance(scheduler, sched.ReduceLROnPlateau):
                    scheduler.step(loss)
                else:
                    scheduler.step()
            except Exception as exc:
                raise LossatlasError(
                    f"the schedule fails after step {len(losses) - 1}: {one_line(exc)}"
                ) from exc
        if xtol is not None:
            previous = [p.detach().clone() for p in leaves]
        lrs.append(float(opt.param_groups[0]["lr"]))
        fresh = True
        try:
            opt.step(closure)
        except LossatlasError:
            raise
        except Exception as exc:
            raise LossatlasError(
                f"the optimizer fails at step {len(losses)}: {one_line(exc)}"
            ) from exc
        current, norm = evaluate(f"step {len(losses)}")
    final = positions[-1] if record else _flat(leaves)
    return positions, losses, norms, lrs, status, final, n_evals
