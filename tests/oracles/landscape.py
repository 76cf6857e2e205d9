"""A brute-force reference for landscape values, independent of lossatlas' engine.

For every grid point the model is deep-copied, `theta0 + sum_j c_j d_j` is written into the copy's
parameters with `copy_`, the copy is put in eval mode and the loss is accumulated batch by batch
as a sample-weighted mean (or a plain sum) in Python floats (float64).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


def evaluate(
    model: nn.Module,
    loss_fn: Callable,
    batches: Sequence[Batch],
    *,
    metrics: Mapping[str, Callable] | None = None,
    reduction: str = "mean",
    dtype: torch.dtype | None = None,
) -> tuple[float, dict[str, float]]:
    """Loss (sample-weighted mean, or sum for reduction="sum") and metrics of `model` as is."""
    metrics = dict(metrics or {})
    model.eval()
    total, count = 0.0, 0
    met_totals = dict.fromkeys(metrics, 0.0)
    with torch.no_grad():
        for x, y in batches:
            if dtype is not None and x.is_floating_point():
                x = x.to(dtype)
            if dtype is not None and y.is_floating_point():
                y = y.to(dtype)
            out = model(x)
            n = int(x.shape[0])
            value = float(loss_fn(out, y))
            total += value if reduction == "sum" else value * n
            for name, fn in metrics.items():
                met_totals[name] += float(fn(out, y)) * n
            count += n
    loss = total if reduction == "sum" else total / count
    return loss, {name: t / count for name, t in met_totals.items()}


def moved_copy(
    model: nn.Module,
    offsets: Sequence[tuple[float, Mapping[str, torch.Tensor]]],
    *,
    center: Mapping[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """A deep copy of `model` with parameters `center + sum(c * d for c, d in offsets)`."""
    moved = copy.deepcopy(model)
    if dtype is not None:
        moved = moved.to(dtype)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            value = p.detach().clone() if center is None else center[name].to(p.dtype).clone()
            for c, d in offsets:
                if name in d:
                    value = value + float(c) * d[name].to(p.dtype)
            p.copy_(value)
    return moved.eval()


def brute_force(
    model: nn.Module,
    loss_fn: Callable,
    batches: Sequence[Batch],
    directions: Sequence[Mapping[str, torch.Tensor]],
    coords: Sequence[np.ndarray],
    *,
    metrics: Mapping[str, Callable] | None = None,
    reduction: str = "mean",
    center: Mapping[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Loss and metric grids of shape `tuple(len(c) for c in coords)`, one copy per point."""
    shape = tuple(len(c) for c in coords)
    loss = np.empty(shape)
    grids = {name: np.empty(shape) for name in metrics or {}}
    for index in itertools.product(*(range(n) for n in shape)):
        offsets = [(coords[j][i], directions[j]) for j, i in enumerate(index)]
        moved = moved_copy(model, offsets, center=center, dtype=dtype)
        value, mets = evaluate(
            moved, loss_fn, batches, metrics=metrics, reduction=reduction, dtype=dtype
        )
        loss[index] = value
        for name, v in mets.items():
            grids[name][index] = v
    return loss, grids


def points_reference(
    model: nn.Module,
    loss_fn: Callable,
    batches: Sequence[Batch],
    directions: Sequence[Mapping[str, torch.Tensor]],
    coeffs: np.ndarray,
    **kwargs,
) -> np.ndarray:
    """Losses at arbitrary coefficient rows `coeffs` (K, m)."""
    values = []
    for row in np.asarray(coeffs):
        moved = moved_copy(model, list(zip(row, directions)))
        values.append(evaluate(moved, loss_fn, batches, **kwargs)[0])
    return np.array(values)


def flat(vector: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """All entries of a direction as one float64 vector (in key order)."""
    return torch.cat([t.reshape(-1).double() for t in vector.values()])


def cosine(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    fa, fb = flat(a), flat({k: b[k] for k in a})
    return float(fa @ fb / (fa.norm() * fb.norm()))
