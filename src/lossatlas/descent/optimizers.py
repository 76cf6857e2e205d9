"""Optimizers and learning-rate schedules by name: registries over `torch.optim`.

`OPTIMIZERS` maps short names to `torch.optim` classes with preset options (`"momentum"` is SGD
with momentum 0.9); `SCHEDULES` maps names to `torch.optim.lr_scheduler` classes. Names are
matched ignoring case, `_` and `-`; an unknown name gets a did-you-mean hint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.optim import lr_scheduler as sched

from lossatlas.errors import LossatlasError, one_line

OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
    "rmsprop": (torch.optim.RMSprop, {}),
    "adagrad": (torch.optim.Adagrad, {}),
    "adadelta": (torch.optim.Adadelta, {}),
    "adamax": (torch.optim.Adamax, {}),
    "nadam": (torch.optim.NAdam, {}),
    "radam": (torch.optim.RAdam, {}),
    "rprop": (torch.optim.Rprop, {}),
    "asgd": (torch.optim.ASGD, {}),
    # One recorded step is one L-BFGS iteration (its line search may evaluate more often). Its own
    # stopping tests are off so that `tol` decides, as for every other optimizer; with them on it
    # stops moving (without an error) once the gradient is small.
    "lbfgs": (
        torch.optim.LBFGS,
        {"max_iter": 1, "max_eval": 25, "tolerance_grad": 0.0, "tolerance_change": 0.0},
    ),
}

SCHEDULES: dict[str, type] = {
    "step": sched.StepLR,
    "multistep": sched.MultiStepLR,
    "exponential": sched.ExponentialLR,
    "cosine": sched.CosineAnnealingLR,
    "cosine_restarts": sched.CosineAnnealingWarmRestarts,
    "onecycle": sched.OneCycleLR,
    "linear": sched.LinearLR,
    "constant": sched.ConstantLR,
    "polynomial": sched.PolynomialLR,
    "cyclic": sched.CyclicLR,
    "plateau": sched.ReduceLROnPlateau,
}


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


def _typos(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) turning `a` into `b`."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(
                d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])
            )
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def _lookup(name: str, registry: Mapping[str, Any], what: str) -> str:
    """The registry name matching `name` (case, `_` and `-` ignored), or a did-you-mean error."""
    keys = {_key(k): k for k in registry}
    if _key(name) in keys:
        return keys[_key(name)]
    # Fewest typos, not difflib's ratio, which prefers "adamax" to "adam" for "adma".
    distance, best = min((_typos(_key(name), k), k) for k in keys)
    hint = f"; did you mean {keys[best]!r}?" if distance <= max(2, len(best) // 3) else ""
    raise LossatlasError(f"unknown {what} {name!r}{hint} (known: {', '.join(registry)})")


def resolve_optimizer(
    optimizer: str | type[torch.optim.Optimizer], kwargs: Mapping[str, Any] | None = None
) -> tuple[str, type[torch.optim.Optimizer], dict[str, Any]]:
    """`(label, class, keyword arguments)` for an optimizer name or class plus extra options.

    Options of a registry name come first and `kwargs` override them (`"momentum"` with
    `{"momentum": 0.5}` is SGD with momentum 0.5). A class is used with its own defaults.
    """
    kwargs = dict(kwargs or {})
    if "lr" in kwargs:
        raise LossatlasError("pass the learning rate as lr=..., not in optimizer_kwargs")
    if isinstance(optimizer, str):
        label = _lookup(optimizer, OPTIMIZERS, "optimizer")
        cls, defaults = OPTIMIZERS[label]
        return label, cls, {**defaults, **kwargs}
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer.__name__, optimizer, kwargs
    raise LossatlasError(
        f"optimizer must be a name ({', '.join(OPTIMIZERS)}) or a torch.optim.Optimizer "
        f"subclass, got {optimizer!r}"
    )


def check_lr(lr: Any) -> float:
    """`lr` as a float; a `LossatlasError` unless it is a finite positive number."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.number)):
        raise LossatlasError(f"lr must be a positive number, got {lr!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise LossatlasError(f"lr must be finite and positive, got {lr!r}")
    return float(lr)


def _schedule_defaults(cls: type, lr: float, steps: int) -> dict[str, Any]:
    """Options that schedules measured in run lengths need, filled in from the run."""
    if issubclass(cls, sched.CosineAnnealingLR):
        return {"T_max": steps}
    if issubclass(cls, sched.OneCycleLR):
        return {"max_lr": lr, "total_steps": steps}
    if issubclass(cls, sched.PolynomialLR):
        return {"total_iters": steps}
    return {}


def make_schedule(schedule: Any, kwargs: Mapping[str, Any] | None, opt, lr: float, steps: int):
    """The scheduler for `opt`, and its label for the record."""
    kwargs = dict(kwargs or {})
    if isinstance(schedule, str):
        label = _lookup(schedule, SCHEDULES, "schedule")
        cls = SCHEDULES[label]
    elif isinstance(schedule, type) and issubclass(schedule, sched.LRScheduler):
        label, cls = schedule.__name__, schedule
    elif callable(schedule) and not isinstance(schedule, type):
        if kwargs:
            raise LossatlasError("schedule_kwargs only apply to a schedule name or class")
        label = getattr(schedule, "__name__", type(schedule).__name__)
        try:
            scheduler = schedule(opt)
        except Exception as exc:
            raise LossatlasError(f"the schedule factory fails: {one_line(exc)}") from exc
        if not callable(getattr(scheduler, "step", None)):
            raise LossatlasError("the schedule factory must return a scheduler with a step()")
        return scheduler, label
    else:
        raise LossatlasError(
            f"schedule must be None, a name ({', '.join(SCHEDULES)}), an LRScheduler subclass "
            f"or a function of the optimizer, got {schedule!r}"
        )
    try:
        return cls(opt, **{**_schedule_defaults(cls, lr, steps), **kwargs}), label
    except (TypeError, ValueError) as exc:
        raise LossatlasError(f"schedule {label!r} rejects its options: {one_line(exc)}") from exc
