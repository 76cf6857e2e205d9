"""Models given as arguments: a Problem, an `nn.Module`, a `{name: tensor}` dict or a record.

A record is any object with `.params` (a `{name: tensor}` mapping, or a method returning one)
and optionally `.buffers`, such as `lossatlas.training.trainer.TrainedModel`. A dict may be a whole
`state_dict`: entries named like the problem's buffers are taken as buffers, not parameters.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lossatlas.core.problem import Problem
from lossatlas.errors import LossatlasError, LossatlasWarning

Tensors = Mapping[str, Any]


def model_parts(problem: Problem, model: Any, what: str) -> tuple[Tensors, Tensors | None]:
    """`(params, buffers)` of a model argument, names and shapes checked against `problem`.

    `buffers` is None where the argument carries none. Raises a one-line LossatlasError naming
    the argument (`what`) if it is not a model or has other parameters than the problem's.
    """
    buffers = None
    if isinstance(model, nn.Module):
        params = {k: p.detach() for k, p in model.named_parameters()}
        buffers = dict(model.named_buffers())
    elif isinstance(model, Mapping):
        params = {k: v for k, v in model.items() if k not in problem.buffers}
        buffers = {k: v for k, v in model.items() if k in problem.buffers} or None
    else:
        params = getattr(model, "params", None)
        params = params() if callable(params) else params
        buffers = getattr(model, "buffers", None)
        buffers = buffers() if callable(buffers) and not isinstance(buffers, Mapping) else buffers
        buffers = dict(buffers) if isinstance(buffers, Mapping) else None
    if not isinstance(params, Mapping):
        raise LossatlasError(
            f"{what} must be a Problem, an nn.Module, a {{name: tensor}} dict or an object with "
            f".params; got {type(model).__name__}"
        )
    problem.check_params(params, what)
    return params, buffers


def warn_stale_buffers(problem: Problem, names: Sequence[str]) -> None:
    """Warn once when models carry BatchNorm statistics of their own that an eval-mode path
    between them would silently replace by the problem's."""
    if names and problem.bn == "eval":
        warnings.warn(
            f"lossatlas: {', '.join(map(str, names))} have BatchNorm statistics of their own, but "
            "the path uses the problem's; use problem.with_bn('recompute') to recompute them "
            "at every point",
            LossatlasWarning,
            stacklevel=3,
        )


def buffers_differ(problem: Problem, buffers: Tensors | None) -> bool:
    """Whether a model's own buffers (None: it has none) differ from the problem's."""
    if buffers is None or buffers is problem.buffers:
        return False
    if set(buffers) != set(problem.buffers):
        return True
    for k, mine in problem.buffers.items():
        theirs = torch.as_tensor(buffers[k])
        if theirs.shape != mine.shape or not torch.equal(theirs.to(mine.device, mine.dtype), mine):
            return True
    return False


def model_names(models: Sequence[Any], given: Any, default: Sequence[str]) -> list[str]:
    """Labels: `given`, else the models' own `.name`s if distinct, else `default`."""
    n = len(models)
    if given is None:
        own = [getattr(m, "name", None) for m in models]
        ok = all(isinstance(x, str) and x for x in own) and len(set(own)) == n
        given = own if ok else list(default)
    names = [str(x) for x in given] if isinstance(given, Sequence) else []
    if len(names) != n or len(set(names)) != n or isinstance(given, str):
        raise LossatlasError(f"names must be {n} distinct labels, got {given!r}")
    return names


def as_problem(problem: Any) -> Problem:
    """`problem` if it is a `Problem`, else a one-line error."""
    if not isinstance(problem, Problem):
        raise LossatlasError(f"expected a lossatlas.Problem, got {type(problem).__name__}")
    return problem


def check_margin(given: Any) -> float:
    """`given` as a finite float of at least 0, else a one-line error."""
    try:
        margin = float(given)
    except (TypeError, ValueError):
        margin = math.nan
    if not math.isfinite(margin) or margin < 0:
        raise LossatlasError(f"margin must be a finite number of at least 0, got {given!r}")
    return margin
