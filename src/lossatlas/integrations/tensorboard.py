"""What the training callbacks write to TensorBoard: scalars at every record, and at the end of
training the PCA trajectory over its loss surface (a figure) and that surface (a 3D mesh).

The functions take any writer with torch's `SummaryWriter` methods (`add_scalar`, `add_figure`,
`add_mesh`): Lightning's `TensorBoardLogger.experiment`, or one the Hugging Face callback opens.
Figures are drawn by `lossatlas.plot` (matplotlib's object API, never pyplot).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from lossatlas.core.problem import Problem
from lossatlas.errors import LossatlasError, LossatlasWarning
from lossatlas.landscape.grid import surface
from lossatlas.landscape.pca import pca_directions
from lossatlas.landscape.record import Surface, with_paths
from lossatlas.plot.paths import figure_paths
from lossatlas.watch.record import MonitorRecord

PREFIX = "lossatlas"
SCALARS = ("lambda_max", "threshold", "grad_norm", "trace", "gap")
MIN_RECORDS = 3  # a plane needs two directions, so three checkpoints
GRID = 11  # points per axis of the end-of-training surface (121 loss evaluations)
MARGIN = 0.15  # the surface reaches this share of the path's extent beyond it on every side


def log_scalars(writer: Any, row: Mapping[str, float], step: int | None = None) -> list[str]:
    """Write one monitor row's `lambda_max`, `threshold` (the `2 / lr` line), `grad_norm`,
    `trace` and `gap` as scalars `lossatlas/<name>`; unmeasured (NaN) and infinite values are
    left out.

    Args:
        writer: a `SummaryWriter` (or anything with its `add_scalar`).
        row: a row as `Monitor.record` returns it.
        step: the global step of the scalars; default the row's step.

    Returns:
        The tags written.
    """
    step = int(row["step"]) if step is None else int(step)
    tags = []
    for name in SCALARS:
        value = float(row.get(name, math.nan))
        if math.isfinite(value):
            writer.add_scalar(f"{PREFIX}/{name}", value, step)
            tags.append(f"{PREFIX}/{name}")
    return tags


def trajectory_surface(
    record: MonitorRecord, problem: Problem, *, steps: int = GRID, margin: float = MARGIN
) -> Surface | None:
    """The loss on the PCA plane of the recorded weights, around the last ones, with the
    trajectory projected onto it as its one path (labelled with the first and last step); None
    with fewer than 3 records or without recorded weights.

    The plane is `pca_directions` of `record.weights()` centred on the last record (Li et al.
    2018, section 7); the grid spans every projected record plus `margin` of the path's extent
    on each side, `steps` points per axis, evaluated by `surface` on `problem` (its buffers:
    a `Monitor` keeps them at the live model's).

    Args:
        record: what a `Monitor` with `out=` and `weights=True` recorded.
        problem: the Problem the monitor measured (its parameter names and shapes, its data).
        steps: grid points per axis.
        margin: share of the path's extent added beyond it on every side.
    """
    if len(record) < MIN_RECORDS or record.path is None or not record.settings.get("weights"):
        return None
    weights = record.weights()
    names_shapes = [(name, tuple(p.shape)) for name, p in problem.params.items()]
    with warnings.catch_warnings():  # a path spanning one direction is drawn on one axis
        warnings.simplefilter("ignore", LossatlasWarning)
        pca = pca_directions(weights, n=2, names_shapes=names_shapes)
    if len(pca.directions) < 2:
        return None
    spans = []
    for j in range(2):
        lo, hi = min(pca.coords[:, j].min(), 0.0), max(pca.coords[:, j].max(), 0.0)
        pad = margin * (hi - lo) if hi > lo else 1.0
        spans.append((float(lo - pad), float(hi + pad)))
    center = {name: t.to(problem.dtype) for name, t in pca.center.items()}
    plane = surface(problem, pca.directions, steps, spans, center=center, compile=False, quiet=True)
    label = f"training, steps {int(record.step[0])} to {int(record.step[-1])}"
    return with_paths(plane, {label: pca.coords})


def mesh_arrays(plane: Surface) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 2D surface as a triangle mesh: vertices `(1, n1 n2, 3)` of `(c1, c2, loss)`, faces
    `(1, 2 (n1-1)(n2-1), 3)` (two triangles per grid cell) and colours `(1, n1 n2, 3)` uint8
    from blue (lowest loss) to red (highest). Non-finite losses are raised to the highest
    finite one, so that the mesh stays drawable."""
    x, y = (np.asarray(c, dtype=np.float64) for c in plane.coords)
    z = np.asarray(plane.loss, dtype=np.float64)
    finite = np.isfinite(z)
    top = z[finite].max() if finite.any() else 0.0
    z = np.where(finite, z, top)
    gx, gy = np.meshgrid(x, y, indexing="ij")  # loss[i, j] sits at (x[i], y[j])
    vertices = np.stack([gx.ravel(), gy.ravel(), z.ravel()], axis=1)
    n1, n2 = z.shape
    index = np.arange(n1 * n2).reshape(n1, n2)
    a, b = index[:-1, :-1].ravel(), index[1:, :-1].ravel()
    c, d = index[1:, 1:].ravel(), index[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    low, high = z.min(), z.max()
    t = (z.ravel() - low) / (high - low) if high > low else np.zeros(z.size)
    colors = np.stack([255 * t, np.zeros_like(t), 255 * (1 - t)], axis=1).round()
    return vertices[None], faces[None].astype(np.int32), colors[None].astype(np.uint8)


def log_trajectory(
    writer: Any,
    record: MonitorRecord,
    problem: Problem,
    *,
    step: int | None = None,
    steps: int = GRID,
) -> list[str]:
    """At the end of training: the PCA trajectory over its loss surface as a figure
    (`lossatlas/trajectory`) and the surface as a mesh (`lossatlas/surface`); nothing with
    fewer than 3 records or without their weights (see `trajectory_surface`), and a
    LossatlasWarning instead of an error where the plane cannot be drawn (non-finite weights).

    Args:
        writer: a `SummaryWriter`.
        record: the monitor's record (`Monitor.history` with `out=`, or `lossatlas.load`).
        problem: the Problem the monitor measured.
        step: the global step to log at; default the last record's.
        steps: grid points per axis of the surface (`steps**2` loss evaluations).

    Returns:
        The tags written.
    """
    try:
        plane = trajectory_surface(record, problem, steps=steps)
    except LossatlasError as exc:  # e.g. diverged (non-finite) weights: training is done anyway
        warnings.warn(f"lossatlas: no trajectory logged: {exc}", LossatlasWarning, stacklevel=2)
        return []
    if plane is None:
        return []
    step = int(record.step[-1]) if step is None else int(step)
    fig = figure_paths(plane, plane.paths, title="training path on its PCA plane")
    writer.add_figure(f"{PREFIX}/trajectory", fig, global_step=step, close=True)
    vertices, faces, colors = mesh_arrays(plane)
    writer.add_mesh(
        f"{PREFIX}/surface",
        vertices=torch.from_numpy(vertices.astype(np.float32)),
        faces=torch.from_numpy(faces),
        colors=torch.from_numpy(colors),
        global_step=step,
    )
    writer.flush()
    return [f"{PREFIX}/trajectory", f"{PREFIX}/surface"]
