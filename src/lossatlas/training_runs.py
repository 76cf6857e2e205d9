"""Many training runs at once, and models trained elsewhere, as `TrainedModel`s.

`train_runs` trains one network on a grid of seeds, batch sizes, learning rates, optimizers and
schedules (see `lossatlas.training.train`); `from_checkpoints` reads state dicts, modules or
`torch.save` files. Both feed `lossatlas.minima.compare_minima`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lossatlas.errors import LossatlasError, check_count
from lossatlas.optimizers import check_lr, resolve_optimizer
from lossatlas.problem import Problem
from lossatlas.problem_common import check_seed
from lossatlas.progress import progress
from lossatlas.result import versions
from lossatlas.spec import read_state_dict
from lossatlas.training import TrainedModel, train

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


def _state_of(source: Any, i: int) -> tuple[Mapping[str, Any], str, dict[str, Any]]:
    """A source's state dict, default name and origin."""
    if isinstance(source, nn.Module):
        return source.state_dict(), f"{type(source).__name__} {i}", {"source": "module"}
    if isinstance(source, (str, Path)):
        path = Path(source)
        source, name, origin = (
            read_state_dict(path),
            path.stem,
            {"source": "file", "path": str(path)},
        )
    else:
        name, origin = f"model {i}", {"source": "state dict"}
    if not isinstance(source, Mapping):
        raise LossatlasError(
            f"checkpoint {i} must be a state dict, an nn.Module or a file path, "
            f"got {type(source).__name__}"
        )
    return source, name, origin


def from_checkpoints(
    problem: Problem, sources: Sequence[Any], *, names: Sequence[str] | None = None
) -> list[TrainedModel]:
    """Models trained elsewhere as `TrainedModel`s (empty history), for `compare_minima`.

    Args:
        problem: a problem of the same architecture.
        sources: state dicts, `nn.Module`s or files written by `torch.save` (a state dict, or a
            dict holding one under `"state_dict"`, `"model_state_dict"` or `"model"`), read with
            `torch.load(weights_only=True)`: no code is unpickled.
        names: one label per source (default the file stem, or `"model i"`).

    Every parameter must be present with its shape; buffers absent from a source keep the
    problem's values. Values are cast to the problem's dtype and held on the CPU.
    """
    if isinstance(sources, (str, Path, Mapping, nn.Module)) or not isinstance(sources, Sequence):
        sources = [sources]
    if names is not None and len(names) != len(sources):
        raise LossatlasError(f"names has {len(names)} entries for {len(sources)} checkpoints")
    known = set(problem.module.state_dict())
    out = []
    for i, source in enumerate(sources):
        state, name, origin = _state_of(source, i)
        unknown = sorted(set(state) - known)
        if unknown:
            raise LossatlasError(f"checkpoint {i} does not fit the model: unknown {unknown[:3]}")
        problem.check_params(
            {k: v for k, v in state.items() if k in problem.params or k not in problem.buffers},
            f"checkpoint {i}",
        )
        if not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise LossatlasError(f"checkpoint {i} holds values that are not tensors")

        def cast(t: torch.Tensor) -> torch.Tensor:
            t = t.detach().to("cpu")
            return (t.to(problem.dtype) if t.is_floating_point() else t).clone()

        params = {k: cast(state[k]) for k in problem.params}
        buffers = {k: cast(state.get(k, b)) for k, b in problem.buffers.items()}
        label = str(names[i]) if names is not None else name
        prov = {"versions": versions(), "dtype": str(problem.dtype)}
        out.append(TrainedModel(label, params, buffers, {}, origin, prov))
    return out
