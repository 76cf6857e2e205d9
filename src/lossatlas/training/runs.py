"""Many training runs at once, and models trained elsewhere, as `TrainedModel`s.

`train_runs` trains one network on a grid of seeds, batch sizes, learning rates, optimizers and
schedules (see `lossatlas.training.trainer.train`); `from_checkpoints` reads state dicts, modules or
`torch.save` files. Both feed `lossatlas.minima.comparison.compare_minima`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

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


def train_runs(
    problem: Problem,
    *,
    seeds: Sequence[int] | None = (0, 1, 2),
    batch_sizes: Sequence[int | None] | None = None,
    lrs: Sequence[float] | None = None,
    optimizers: Sequence[Any] | None = None,
    schedules: Sequence[Any] | None = None,
    quiet: bool | None = None,
    **common: Any,
) -> list[TrainedModel]:
    """`train` on every combination of the given lists (their product), with a progress bar.

    Each list varies one setting (None: `common`'s value or `train`'s default); `common` holds
    the other `train` options (`steps`, `lr`, `batch_size`, `val`, ...). Runs come in the
    order optimizer, lr, batch size, schedule, seed (the seed varying fastest) and are named by
    the settings that vary, e.g. `"batch 32, seed 1"`. Settings are checked before any run.
    """
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
    with progress("training", len(combos), quiet=quiet) as advance:
        for combo in combos:
            shown = {**combo, "batch_size": combo.get("batch_size") or "full"}
            name = ", ".join(f"{words[k]}{_short(shown[k])}" for k in varying) or None
            runs.append(train(problem, **common, **combo, name=name))
            advance()
    return runs
