"""Many training runs at once, and models trained elsewhere, as `TrainedModel`s.

`train_runs` trains one network on a grid of seeds, batch sizes, learning rates, optimizers and
schedules (see `lossatlas.training.trainer.train`); `from_checkpoints` reads state dicts, modules or
`torch.save` files. Both feed `lossatlas.minima.comparison.compare_minima`. With `ray=` the
runs of `train_runs` are trained by Ray actors (`lossatlas.core.cluster`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lossatlas.core.cluster import RayOptions, as_ray_options, map_tasks
from lossatlas.core.problem import Problem
from lossatlas.core.progress import progress
from lossatlas.descent.optimizers import check_lr, resolve_optimizer
from lossatlas.errors import LossatlasError, check_count, check_seed
from lossatlas.training.trainer import TrainedModel, train

_GRID = {
    "optimizer": "optimizers",
    "lr": "lrs",
    "batch_size": "batch_sizes",
    "schedule": "schedules",
}
_OPTIONS = {"steps", "optimizer_kwargs", "schedule_kwargs", "init", "val", "eval_every", "threads"}


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return getattr(value, "__name__", str(value))


def _train_one(context: tuple, run: tuple[dict[str, Any], str | None]) -> TrainedModel:
    """One run of the grid: `train` with the common options, the run's settings and name."""
    problem, common = context
    combo, name = run
    return train(problem, **common, **combo, name=name)


def train_runs(
    problem: Problem,
    *,
    seeds: Sequence[int] | None = (0, 1, 2),
    batch_sizes: Sequence[int | None] | None = None,
    lrs: Sequence[float] | None = None,
    optimizers: Sequence[Any] | None = None,
    schedules: Sequence[Any] | None = None,
    quiet: bool | None = None,
    ray: str | RayOptions | None = None,
    **common: Any,
) -> list[TrainedModel]:
    """`train` on every combination of the given lists (their product), with a progress bar.

    Each list varies one setting (None: `common`'s value or `train`'s default); `common` holds
    the other `train` options (`steps`, `lr`, `batch_size`, `val`, ...). Runs come in the
    order optimizer, lr, batch size, schedule, seed (the seed varying fastest) and are named by
    the settings that vary, e.g. `"batch 32, seed 1"`. Settings are checked before any run.

    With `ray` (an address such as `"auto"`, or `RayOptions`) each run is one task for Ray
    actors (`lossatlas.core.cluster`: the problem and `common` shipped once, the runs of a
    worker that dies requeued). The runs come back in the order above, with the weights of
    the local run bit for bit on the CPU when both train with the same number of torch threads
    (`threads`, 1 by default); warnings raised on a worker are repeated here. Each run's
    `provenance["ray"]` holds the pool's counts (the same for every run of the call): workers,
    requeued runs, replaced workers and the start-up seconds. Needs `pip install
    'lossatlas[ray]'`.
    """
    ray = as_ray_options(ray)
    axes = {**_GRID, "seed": "seeds"}
    given = {"optimizer": optimizers, "lr": lrs, "batch_size": batch_sizes}
    given.update(schedule=schedules, seed=seeds)
    grid: dict[str, list[Any]] = {}
    for key, values in given.items():
        if values is None:
            continue
        if key in common:
            raise LossatlasError(f"pass {key} as {axes[key]}=[...] or as {key}=..., not both")
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
            raise LossatlasError(f"{axes[key]} must be a list, got {values!r}")
        if not values:
            raise LossatlasError(f"{axes[key]} is empty")
        grid[key] = list(values)
    unknown = sorted(set(common) - _OPTIONS - set(_GRID) - {"seed"})
    if unknown:
        raise LossatlasError(f"train_runs got unknown options {unknown}")
    for opt in grid.get("optimizer", [common.get("optimizer", "sgd")]):
        resolve_optimizer(opt, common.get("optimizer_kwargs"))
    for lr in grid.get("lr", [common.get("lr", 0.1)]):
        check_lr(lr)
    for b in grid.get("batch_size", []):
        if b is not None and check_count("batch_size", b, 1) > problem.n_samples:
            raise LossatlasError(f"batch_size={b} exceeds the {problem.n_samples} samples")
    for s in grid.get("seed", []):
        check_seed(s)
    varying = [k for k, v in grid.items() if len(v) > 1]
    words = {"optimizer": "", "lr": "lr ", "batch_size": "batch ", "schedule": "schedule "}
    words["seed"] = "seed "
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    runs = []
    for combo in combos:
        shown = {**combo, "batch_size": combo.get("batch_size") or "full"}
        runs.append((combo, ", ".join(f"{words[k]}{_short(shown[k])}" for k in varying) or None))
    trained: list[Any] = [None] * len(runs)
    stats: dict[str, Any] = {}
    with progress("training", len(runs), quiet=quiet) as advance:
        for k, model in map_tasks(ray, (problem, common), _train_one, dict(enumerate(runs)), stats):
            if ray is not None:  # writable copies of the arrays Ray hands back read-only
                history = {name: np.array(v) for name, v in model.history.items()}
                model = dataclasses.replace(model, history=history)
            trained[k] = model
            advance()
    if ray is not None:
        trained = [
            dataclasses.replace(t, provenance={**t.provenance, "ray": dict(stats)}) for t in trained
        ]
    return trained
