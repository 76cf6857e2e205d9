"""A training run watched after the fact: `Monitor`'s measurements at checkpoints saved during it.

`watch_checkpoints(problem, ["step-100.pt", "step-200.pt", ...])` loads each checkpoint's
weights into a private copy of the problem's model, in the order of their steps, and records
there as a `Monitor` would have during training (warm-starting `lambda_max` from checkpoint to
checkpoint). The optimizer's learning rate is not in a state dict: pass `lr=` (and
`momentum=`) for the stability threshold.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lossatlas.core.problem import Problem
from lossatlas.errors import LossatlasError
from lossatlas.training.checkpoints import check_state, read_state_dict
from lossatlas.watch.monitor import Monitor


def step_of(source: Any, default: int) -> int:
    """The training step a checkpoint's file name states (`step-300.pt`, `epoch=2-step=300.ckpt`,
    `checkpoint-300/`; the last number), else `default`."""
    if isinstance(source, (str, Path)):
        numbers = re.findall(r"\d+", Path(source).name)
        if numbers:
            return int(numbers[-1])
    return default


def _state(source: Any) -> dict[str, torch.Tensor]:
    if isinstance(source, nn.Module):
        return source.state_dict()
    if isinstance(source, dict):
        return source
    return read_state_dict(source)


def watch_checkpoints(
    problem: Problem,
    sources: Sequence[Any],
    *,
    steps: Sequence[int] | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool | None = None,
    **monitor_options: Any,
) -> Monitor:
    """Record `Monitor`'s measurements at each checkpoint, in the order of their steps.

    Args:
        problem: the loss and data (its model is only a template: never modified).
        sources: checkpoint files (state dicts, read weights-only), state dicts or modules.
        steps: their training steps; default the last number in each file name, else 1, 2, ...
        out: stream the record (and the weights, for `Monitor.plane`) to this HDF5 file.
        overwrite: replace an existing `out` (after every checkpoint was checked).
        quiet: no progress bar.
        **monitor_options: `Monitor` options (`data`, `tol`, `max_hvps`, `trace`, `val`, `lr`,
            `momentum`, ...); `every` does not apply.

    Returns:
        The `Monitor`: `.history` holds one row per checkpoint; `.plane()` draws the path.
    """
    from lossatlas.core.progress import progress

    if not sources:
        raise LossatlasError("no checkpoints given")
    if steps is None:
        steps = [step_of(s, i + 1) for i, s in enumerate(sources)]
    if len(steps) != len(sources) or len(set(steps)) != len(steps):
        raise LossatlasError(f"need one distinct step per checkpoint, got {list(steps)}")
    model = copy.deepcopy(problem.model)
    states = []
    for step, source in sorted(zip(steps, sources), key=lambda pair: pair[0]):
        state = _state(source)
        named = isinstance(source, (str, Path))
        check_state(problem, state, f"checkpoint {source}" if named else f"checkpoint {step}")
        states.append((int(step), state))
    if out is not None and Path(out).exists():
        if not overwrite:
            raise LossatlasError(f"{out} exists; pass overwrite=True to replace it")
        Path(out).unlink()
    monitor = Monitor(problem, model=model, out=out, **monitor_options)
    with progress("checkpoints", len(states), quiet=quiet) as advance:
        for step, state in states:
            model.load_state_dict(state, strict=False)
            monitor.record(step)
            advance()
    return monitor
