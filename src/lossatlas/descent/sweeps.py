"""Many optimizer runs at once (`sweep`) and a fair comparison of optimizers (`compare`).

A sweep runs `descend` for every combination of optimizer, learning rate, start and seed. A
comparison gives every optimizer the same step budget and the same starts, sweeps the learning
rate of each, and picks each optimizer's best learning rate by one stated criterion aggregated
over all starts and seeds, a diverged run counting as the worst possible. With `ray=` a
sweep's runs are made by Ray actors (`lossatlas.core.cluster`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossatlas.core.cluster import RayOptions, as_ray_options, map_tasks
from lossatlas.core.problem import Problem
from lossatlas.core.progress import progress
from lossatlas.core.provenance import versions
from lossatlas.descent.optimizers import check_lr, resolve_optimizer
from lossatlas.descent.run import STATUSES, Trajectory, descend
from lossatlas.errors import LossatlasError


@dataclass(frozen=True, eq=False)
class Run:
    """One run of a sweep and its coordinates.

    Attributes:
        optimizer: the optimizer's label in the sweep.
        lr: the learning rate.
        start: index into the sweep's starts.
        seed: the seed.
        trajectory: the run itself.
    """

    optimizer: str
    lr: float
    start: int
    seed: int
    trajectory: Trajectory

    def headline(self) -> dict[str, Any]:
        """The trajectory's headline (`Trajectory.headline`) with the run's coordinates."""
        coords = {"optimizer": self.optimizer, "lr": float(self.lr), "start": int(self.start)}
        coords["seed"] = int(self.seed)
        own = self.trajectory.headline()
        return coords | {k: v for k, v in own.items() if k not in coords}

    def __repr__(self) -> str:
        t = self.trajectory
        return (
            f"Run(optimizer={self.optimizer!r}, lr={self.lr:g}, start={self.start}, "
            f"seed={self.seed}, status={t.status!r}, steps={t.steps_taken}, "
            f"final_loss={t.final_loss:.6g})"
        )


def _rank(run: Run) -> float:
    """A run's best loss for ranking: NaN (no finite loss) ranks last."""
    best = run.trajectory.best_loss
    return math.inf if math.isnan(best) else best


def distance_to_minimum(position: np.ndarray, minimum: np.ndarray | None) -> float | None:
    """Euclidean distance to the nearest of the known minima (rows), None without any."""
    if minimum is None:
        return None
    if minimum.shape[1] != position.size:
        raise LossatlasError(
            f"the known minimum has {minimum.shape[1]} coordinates, positions have {position.size}"
        )
    if not np.isfinite(position).all():
        return math.inf
    return float(np.min(np.linalg.norm(minimum - position, axis=1)))


def as_minimum(minimum: Any, objective: Any = None) -> np.ndarray | None:
    """Known minima as a (k, d) float64 array: a point, several points, or a parameter dict.

    Without one, the objective's own `minima` (test functions in `lossatlas.descent.functions` have
    them), if any.
    """
    if minimum is None and not isinstance(objective, Problem):
        minimum = getattr(objective, "minima", None) or None
    if minimum is None:
        return None
    if isinstance(minimum, Mapping):
        minimum = torch.cat([torch.as_tensor(t).reshape(-1).double() for t in minimum.values()])
    if isinstance(minimum, torch.Tensor):
        minimum = minimum.detach().cpu().double().numpy()
    try:
        arr = np.array(minimum, dtype=np.float64)
    except (TypeError, ValueError):
        raise LossatlasError(f"minimum must be a point or points, got {minimum!r}") from None
    if arr.ndim not in (1, 2) or arr.size == 0:
        raise LossatlasError(f"minimum must be a point (d,) or points (k, d), got {arr.shape}")
    return arr.reshape(1, -1) if arr.ndim == 1 else arr


@dataclass(frozen=True, eq=False)
class Sweep:
    """Runs over optimizers x learning rates x starts x seeds, in that nesting order.

    Attributes:
        entries: the runs with their coordinates.
        settings: the grid (optimizer labels, lrs, number of starts, seeds) and the settings
            shared by every run (steps, schedule, tol, ...), and the known minimum, if given.
        provenance: seconds, versions.
    """

    entries: tuple[Run, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Run]:
        return iter(self.entries)

    def __getitem__(self, index: int) -> Run:
        return self.entries[index]

    def runs(
        self,
        *,
        optimizer: str | None = None,
        lr: float | None = None,
        start: int | None = None,
        seed: int | None = None,
        status: str | None = None,
    ) -> list[Run]:
        """The runs matching every coordinate given (lr up to rounding)."""
        return [
            r
            for r in self.entries
            if (optimizer is None or r.optimizer == optimizer)
            and (lr is None or math.isclose(r.lr, lr, rel_tol=1e-9))
            and (start is None or r.start == start)
            and (seed is None or r.seed == seed)
            and (status is None or r.trajectory.status == status)
        ]

    def trajectories(self, **coords: Any) -> list[Trajectory]:
        """The trajectories of `runs(**coords)`."""
        return [r.trajectory for r in self.runs(**coords)]

    def table(self, *, minimum: Any = None) -> list[dict[str, Any]]:
        """One row per run: coordinates, status, steps, final and best loss, final gradient norm,
        and the distance from the final position to the nearest known minimum (`minimum`, or the
        sweep's) when one is given."""
        known = as_minimum(minimum if minimum is not None else self.settings.get("minimum"))
        rows = []
        for r in self.entries:
            t = r.trajectory
            row = {
                "optimizer": r.optimizer,
                "lr": r.lr,
                "start": r.start,
                "seed": r.seed,
                "status": t.status,
                "steps": t.steps_taken,
                "final_loss": t.final_loss,
                "best_loss": t.best_loss,
                "final_grad_norm": float(t.grad_norm[-1]),
            }
            if known is not None:
                row["distance"] = distance_to_minimum(t.final_position, known)
            rows.append(row)
        return rows

    def headline(self) -> dict[str, Any]:
        """Headline numbers: how many runs, how many of them ended in each status, and the run
        with the lowest best loss (the first of equals; a run without a finite loss only when
        no run has one): its optimizer, lr and best loss (None for an empty sweep)."""
        out: dict[str, Any] = {"runs": len(self.entries)}
        for status in STATUSES:
            out[status] = sum(str(r.trajectory.status) == status for r in self.entries)
        best = min(self.entries, key=_rank, default=None)
        out["best_optimizer"] = None if best is None else best.optimizer
        out["best_lr"] = None if best is None else float(best.lr)
        out["best_loss"] = None if best is None else best.trajectory.best_loss
        out["seconds"] = self.provenance.get("seconds")
        return out

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"Sweep({len(self)} runs: optimizers={s.get('optimizers')}, lrs={s.get('lrs')}, "
            f"starts={s.get('n_starts')}, seeds={s.get('seeds')})"
        )


def _optimizer_specs(optimizers: Any) -> list[tuple[str, Any, dict[str, Any]]]:
    """`(label, name or class, options)` per optimizer; checked before anything runs.

    An item is a name, a `torch.optim.Optimizer` subclass, or a `(name or class, options)` pair;
    a mapping gives labels of its own.
    """
    if isinstance(optimizers, (str, type)):
        optimizers = [optimizers]
    items = (
        list(optimizers.items())
        if isinstance(optimizers, Mapping)
        else [(None, spec) for spec in optimizers]
    )
    if not items:
        raise LossatlasError("optimizers is empty: give at least one optimizer")
    specs = []
    for label, spec in items:
        opt, kwargs = spec if isinstance(spec, tuple) and len(spec) == 2 else (spec, {})
        if not isinstance(kwargs, Mapping):
            raise LossatlasError(f"optimizer options must be a dict, got {kwargs!r}")
        name, _, _ = resolve_optimizer(opt, kwargs)  # unknown names fail here, before any run
        if label is None:
            extra = ", ".join(f"{k}={v}" for k, v in kwargs.items())
            label = f"{name}({extra})" if extra else name
        specs.append((str(label), opt, dict(kwargs)))
    labels = [s[0] for s in specs]
    if len(set(labels)) != len(labels):
        raise LossatlasError(f"optimizer labels repeat: {labels}; use a dict to name them")
    return specs


def _starts(objective: Any, starts: Any) -> list[Any]:
    """The list of start points (a (k, d) array gives k starts)."""
    if isinstance(objective, Problem) and (starts is None or isinstance(starts, Mapping)):
        return [starts]
    if isinstance(starts, (np.ndarray, torch.Tensor)):
        if starts.ndim != 2:
            raise LossatlasError(
                f"starts must be a (k, d) array of k start points, got shape {tuple(starts.shape)}"
            )
        return list(starts)
    if (
        not isinstance(starts, Sequence)
        or isinstance(starts, str)
        or not len(starts)
        or all(isinstance(v, (int, float, np.number)) for v in starts)
    ):
        raise LossatlasError(
            "starts must be a non-empty list of start points (or a (k, d) array); "
            "wrap a single start in a list"
        )
    return list(starts)


def _numbers(values: Any, what: str, check: Callable[[Any], Any]) -> list:
    if isinstance(values, (int, float, np.number)):
        values = [values]
    values = [check(v) for v in values]
    if not values:
        raise LossatlasError(f"{what} is empty")
    return values


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise LossatlasError(f"seeds must be integers, got {seed!r}")
    return int(seed)


# One run's coordinates: ((label, optimizer, options), lr, start index, seed).
Combo = tuple[tuple[str, Any, dict[str, Any]], float, int, int]


def _descend_one(context: tuple, combo: Combo) -> Trajectory:
    """One run of a sweep; an error names the run's coordinates."""
    objective, starts, options = context
    (label, opt, kwargs), lr, i, seed = combo
    run = {**options, "optimizer_kwargs": {**options["optimizer_kwargs"], **kwargs}}
    try:
        return descend(objective, starts[i], optimizer=opt, lr=lr, seed=seed, **run)
    except LossatlasError as exc:
        raise LossatlasError(f"{label}, lr={lr:g}, start {i}, seed {seed}: {exc}") from exc


def _owned(trajectory: Trajectory) -> Trajectory:
    """The trajectory with writable copies of its arrays (Ray hands back read-only views)."""
    arrays = {
        f.name: np.array(getattr(trajectory, f.name))
        for f in dataclasses.fields(trajectory)
        if isinstance(getattr(trajectory, f.name), np.ndarray)
    }
    return dataclasses.replace(trajectory, **arrays)


def sweep(
    objective: Callable[[torch.Tensor], torch.Tensor] | Problem,
    *,
    starts: Any = None,
    optimizers: Any = ("sgd",),
    lrs: Any = (0.1,),
    seeds: Any = (0,),
    steps: int = 100,
    optimizer_kwargs: Mapping[str, Any] | None = None,
    schedule: Any = None,
    schedule_kwargs: Mapping[str, Any] | None = None,
    tol: float = 1e-8,
    xtol: float | None = None,
    blowup: float = 1e6,
    noise: float = 0.0,
    record_positions: bool = True,
    minimum: Any = None,
    quiet: bool | None = None,
    ray: str | RayOptions | None = None,
) -> Sweep:
    """Run `descend` for every optimizer x learning rate x start x seed.

    Args:
        objective: a function of a position or a `Problem` (see `descend`).
        starts: a list of start points (or a `(k, d)` array); for a Problem also None (its
            weights, the default) or one `{name: tensor}` dict. Required for a function.
        optimizers: names or classes, `(name or class, options)` pairs, or a dict
            `{label: any of those}`. Options are added to `optimizer_kwargs`.
        lrs: learning rates.
        seeds: seeds (they matter with `noise` or a randomised optimizer).
        steps, optimizer_kwargs, schedule, schedule_kwargs, tol, xtol, blowup, noise,
            record_positions: as for `descend`, the same for every run.
        minimum: known minimum (a point, or several as rows: the nearest counts) for distances
            in `table()`; default: the objective's `minima` attribute, if it has one.
        quiet: no progress bar (default: the LOSSATLAS_QUIET environment variable).
        ray: run on Ray (an address such as `"auto"`, or `RayOptions`): each run is one task
            for Ray actors (`lossatlas.core.cluster`: the objective and starts shipped once,
            the runs of a worker that dies requeued), so the objective must pickle
            (cloudpickle: closures and lambdas do). The runs come back in the order above and
            are those of the local run when both use the same number of torch threads (a
            worker uses one per CPU it reserves; a test function's runs do not depend on it);
            warnings raised on a worker are repeated here. `provenance["ray"]` counts workers,
            requeued runs and replaced workers. Needs `pip install 'lossatlas[ray]'`.
    """
    ray = as_ray_options(ray)
    specs = _optimizer_specs(optimizers)
    lr_list = _numbers(lrs, "lrs", check_lr)
    seed_list = _numbers(seeds, "seeds", _seed)
    start_list = _starts(objective, starts)
    known = as_minimum(minimum, objective)
    combos = [
        (spec, lr, i, seed)
        for spec in specs
        for lr in lr_list
        for i in range(len(start_list))
        for seed in seed_list
    ]
    options = {
        "steps": steps,
        "optimizer_kwargs": dict(optimizer_kwargs or {}),
        "schedule": schedule,
        "schedule_kwargs": schedule_kwargs,
        "tol": tol,
        "xtol": xtol,
        "blowup": blowup,
        "noise": noise,
        "record_positions": record_positions,
    }
    found: list[Any] = [None] * len(combos)
    stats: dict[str, Any] = {}
    began = time.perf_counter()
    with progress(f"descent, {len(combos)} runs", len(combos), quiet=quiet) as advance:
        context, tasks = (objective, start_list, options), dict(enumerate(combos))
        for k, trajectory in map_tasks(ray, context, _descend_one, tasks, stats):
            found[k] = trajectory if ray is None else _owned(trajectory)
            advance(1)
    entries = [
        Run(label, lr, i, seed, trajectory)
        for ((label, _, _), lr, i, seed), trajectory in zip(combos, found)
    ]
    settings = {
        "optimizers": [s[0] for s in specs],
        "lrs": lr_list,
        "n_starts": len(start_list),
        "seeds": seed_list,
        "steps": steps,
        "optimizer_kwargs": dict(optimizer_kwargs or {}),
        "schedule": entries[0].trajectory.settings["schedule"],
        "schedule_kwargs": dict(schedule_kwargs or {}),
        "tol": tol,
        "xtol": xtol,
        "blowup": blowup,
        "noise": noise,
        "minimum": None if known is None else known.tolist(),
    }
    provenance = {"seconds": time.perf_counter() - began, "versions": versions()}
    if ray is not None:
        provenance["ray"] = stats
    return Sweep(entries=tuple(entries), settings=settings, provenance=provenance)
