"""What `descend` moves across: a function of one vector, or a `Problem`'s parameters.

Each objective holds the position as leaf tensors and, called, returns the loss (float64) and
its gradient there. For a `Problem` both are summed over all batches with the problem's sample
weights, exactly as the engine weighs losses, one backward pass per batch; the user's model is
never touched (`torch.func.functional_call` on the problem's private copy).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from lossatlas.core.directions import as_center
from lossatlas.core.engine import probe
from lossatlas.core.problem import Problem, batch_value
from lossatlas.errors import LossatlasError, one_line


class FunctionObjective:
    """A differentiable function of a vector; the position is one leaf tensor of shape (d,)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], start: Any) -> None:
        if start is None:
            raise LossatlasError("a function objective needs a start point, e.g. start=[-1.0, 2.0]")
        if isinstance(start, torch.Tensor):
            point = start.detach().clone()
            if not point.is_floating_point():
                point = point.to(torch.float64)
        else:
            try:
                point = torch.from_numpy(np.array(start, dtype=np.float64))
            except (TypeError, ValueError):
                raise LossatlasError(
                    f"start must be a vector of numbers, got {type(start).__name__}"
                ) from None
        if point.ndim != 1 or point.numel() == 0:
            raise LossatlasError(f"start must be a 1-D vector, got shape {tuple(point.shape)}")
        bad = int((~torch.isfinite(point)).sum())
        if bad:
            raise LossatlasError(f"start has {bad} non-finite entries (of {point.numel()})")
        self.fn = fn
        self.leaves = [point.requires_grad_(True)]
        self.device = point.device
        self.shapes = None

    def __call__(self, where: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        (p,) = self.leaves
        with torch.enable_grad():
            try:
                value = self.fn(p)
            except Exception as exc:
                raise LossatlasError(f"the objective fails at {where}: {one_line(exc)}") from exc
            if not isinstance(value, torch.Tensor):
                raise LossatlasError(
                    f"the objective must return a torch tensor, got {type(value).__name__}"
                )
            if value.numel() != 1:
                raise LossatlasError(
                    f"the objective must return a scalar loss, got shape {tuple(value.shape)}"
                )
            value = value.reshape(())
            return value.detach().to(torch.float64), gradients(value, self.leaves, "objective")


class ModelObjective:
    """A `Problem`: the position is the model's parameters, the loss is over all its data."""

    def __init__(self, problem: Problem, start: Any) -> None:
        problem.require_eval_bn("descend")
        params = start_params(problem, start)
        probe(problem, params)  # a model or loss that fails on the data says so in one line
        self.problem = problem
        self.names = list(params)
        self.leaves = [params[n].clone().requires_grad_(True) for n in self.names]
        self.device = problem.device
        self.shapes = tuple((n, tuple(params[n].shape)) for n in self.names)

    def __call__(self, where: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        problem = self.problem
        params = dict(zip(self.names, self.leaves))
        total: torch.Tensor | None = None
        grads: list[torch.Tensor] | None = None
        with torch.enable_grad():
            for x, y in problem.batches():
                try:
                    out = problem.call((params, problem.buffers), x)
                    value = batch_value(problem.loss_fn(out, y))
                except Exception as exc:
                    raise LossatlasError(f"the model fails at {where}: {one_line(exc)}") from exc
                weighted = value * problem.batch_weight(problem.units(x, y))
                # One backward pass per batch: the graph of the whole data never lives at once.
                g = gradients(weighted, self.leaves, "loss")
                total = weighted.detach() if total is None else total + weighted.detach()
                grads = g if grads is None else [a + b for a, b in zip(grads, g)]
        assert total is not None and grads is not None
        divisor = problem.loss_divisor
        return total / divisor, [g / divisor for g in grads]


def gradients(value: torch.Tensor, leaves: list[torch.Tensor], what: str) -> list[torch.Tensor]:
    """d value / d leaves (zeros where unused); NaN gradients for a detached non-finite value."""
    if not value.requires_grad:
        if not torch.isfinite(value):  # e.g. a constant NaN: a divergence, not a mistake
            return [torch.full_like(p, math.nan) for p in leaves]
        raise LossatlasError(
            f"the {what} does not depend on the position through torch operations, "
            "so it has no gradient"
        )
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]


def start_params(problem: Problem, start: Any) -> dict[str, torch.Tensor]:
    """The starting weights: the problem's, another model's, a dict or a flat vector."""
    if isinstance(start, (np.ndarray, torch.Tensor)):
        flat = torch.as_tensor(start).reshape(-1)
        if flat.numel() != problem.n_params:
            raise LossatlasError(
                f"start has {flat.numel()} values, the model has {problem.n_params} parameters"
            )
        sizes = [w.numel() for w in problem.params.values()]
        pieces = torch.split(flat.to(problem.device, problem.dtype), sizes)
        start = {n: t.view_as(w) for (n, w), t in zip(problem.params.items(), pieces)}
    elif start is not None and not isinstance(start, (nn.Module, Mapping)):
        raise LossatlasError(
            "start for a Problem must be None (its weights), a model, a {name: tensor} dict "
            "or a flat vector of all parameters"
        )
    return dict(as_center(problem, start, what="start"))
