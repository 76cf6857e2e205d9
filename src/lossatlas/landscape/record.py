"""The landscape result record, and its HDF5 form.

A `Surface` carries everything needed to trust and reproduce it: coordinates, loss and metric
grids, the directions and how they were made, the grid settings and the plan the engine used,
the data size and fingerprint, counts of model calls, timings and versions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from lossatlas.core.directions import Directions
from lossatlas.errors import LossatlasError

FORMAT = "lossatlas.surface"
# 2: metrics and path labels stored under indices with JSON names, so any string round-trips
FORMAT_VERSION = 2


@dataclass(frozen=True, eq=False)
class Surface:
    """A 1D line or 2D grid of losses (and metrics) around a point in parameter space.

    Attributes:
        coords: one 1-D array of coefficients per direction.
        loss: loss grid of shape `tuple(len(c) for c in coords)`; non-finite values are kept.
        metrics: grids of the same shape, by metric name.
        directions: the directions (on the CPU) with their settings.
        settings: grid and engine settings (steps, span, centre, bn, dtype, plan).
        provenance: data size and fingerprint, model-call counts, seconds, versions.
        slopes: with `surface(..., slopes=True)`, the loss's derivative along every direction
            at every point, shape `(*loss.shape, m)`: `slopes[..., j] = dL/dc_j`.
        paths: named paths in the surface's coordinates, `{label: (n, ndim) array}`: e.g. a
            training trajectory projected onto its PCA plane (`with_paths`), drawn in reports.
    """

    coords: tuple[np.ndarray, ...]
    loss: np.ndarray
    metrics: dict[str, np.ndarray]
    directions: Directions
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    slopes: np.ndarray | None = None
    paths: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return len(self.coords)

    @property
    def nonfinite(self) -> int:
        """Number of grid points whose loss is NaN or infinite."""
        return int((~np.isfinite(self.loss)).sum())

    def argmin(self) -> tuple[float, ...]:
        """Coordinates of the lowest finite loss on the grid."""
        finite = np.where(np.isfinite(self.loss), self.loss, np.inf)
        index = np.unravel_index(int(np.argmin(finite)), self.loss.shape)
        return tuple(float(c[i]) for c, i in zip(self.coords, index))

    def headline(self) -> dict[str, Any]:
        """Headline numbers: loss (and metrics) at the centre, the lowest loss and where it is.

        Values at the centre are None when the origin is not a grid point (an even number of steps
        over a symmetric span, or a span that excludes 0).
        """
        index = tuple(int(np.argmin(np.abs(c))) for c in self.coords)
        at_zero = all(abs(c[i]) <= 1e-9 * max(1.0, np.ptp(c)) for c, i in zip(self.coords, index))
        center = index if at_zero else None
        finite = np.isfinite(self.loss)
        out: dict[str, Any] = {
            "loss_center": None if center is None else float(self.loss[center]),
            "loss_min": float(self.loss[finite].min()) if finite.any() else None,
            "argmin": list(self.argmin()) if finite.any() else None,
        }
        for name, grid in self.metrics.items():
            out[f"{name}_center"] = None if center is None else float(grid[center])
        out["n_points"] = int(self.loss.size)
        out["nonfinite"] = self.nonfinite
        out["seconds"] = self.provenance.get("seconds")
        return out

    def save(self, path: str | Path) -> Path:
        """Write the record to HDF5 atomically (a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["settings"] = json.dumps(self.settings, sort_keys=True)
            f.attrs["provenance"] = json.dumps(self.provenance, sort_keys=True)
            for i, c in enumerate(self.coords):
                f.create_dataset(f"coords/{i}", data=c)
            f.create_dataset("loss", data=self.loss)
            for i, (name, grid) in enumerate(self.metrics.items()):  # any name: "acc/top1", ""
                f.create_dataset(f"metrics/{i}", data=grid).attrs["name"] = json.dumps(name)
            if self.slopes is not None:
                f.create_dataset("slopes", data=self.slopes)
            for i, (label, xy) in enumerate(self.paths.items()):
                f.create_dataset(f"paths/{i}", data=xy).attrs["label"] = json.dumps(label)
            group = f.create_group("directions")
            group.attrs["settings"] = json.dumps(dict(self.directions.settings), sort_keys=True)
            for i, vec in enumerate(self.directions):
                for name, t in vec.items():
                    group.create_dataset(f"{i}/{name}", data=t.detach().cpu().numpy())
        os.replace(tmp, path)
        return path


def with_paths(surface: Surface, paths: dict[str, Any]) -> Surface:
    """A copy of `surface` that also carries `paths` (`{label: (n, ndim) coordinates}`)."""
    checked = dict(surface.paths)
    for label, xy in paths.items():
        xy = np.asarray(xy, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != surface.ndim:
            raise LossatlasError(
                f"path {label!r} must be (n, {surface.ndim}) coordinates, got shape {xy.shape}"
            )
        checked[str(label)] = xy
    return replace(surface, paths=checked)


def open_h5(path: str | Path) -> h5py.File:
    """An HDF5 file opened for reading, or a one-line error (missing, not HDF5)."""
    path = Path(path)
    if not path.exists():
        raise LossatlasError(f"no such file: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise LossatlasError(f"{path} is not a readable HDF5 file ({exc})") from None


def load(path: str | Path) -> Surface:
    """Read a result record written by `Surface.save` (or by `surface(..., out=path)`)."""
    path = Path(path)
    with open_h5(path) as f:
        if f.attrs.get("format") != FORMAT:
            raise LossatlasError(f"{path} is not a lossatlas surface file")
        if int(f.attrs["format_version"]) > FORMAT_VERSION:
            raise LossatlasError(f"{path} was written by a newer lossatlas; please upgrade")
        coords = tuple(f["coords"][str(i)][()] for i in range(len(f["coords"])))
        old = int(f.attrs["format_version"]) < 2  # names as keys, labels as plain strings
        metrics = {_name(key, ds, "name", old): ds[()] for key, ds in _indexed(f, "metrics", old)}
        group = f["directions"]
        vectors = tuple(
            {name: torch.from_numpy(ds[()]) for name, ds in group[str(i)].items()}
            for i in range(len(group))
        )
        return Surface(
            coords=coords,
            loss=f["loss"][()],
            metrics=metrics,
            directions=Directions(vectors, json.loads(group.attrs["settings"])),
            settings=json.loads(f.attrs["settings"]),
            provenance=json.loads(f.attrs["provenance"]),
            slopes=f["slopes"][()] if "slopes" in f else None,
            paths={_name(key, ds, "label", old): ds[()] for key, ds in _indexed(f, "paths", old)},
        )


def _indexed(f: h5py.File, group: str, old: bool) -> list[tuple[str, h5py.Dataset]]:
    """The datasets of `group` in the order written (by index; by name in version 1)."""
    node = f.get(group, {})
    if old and group == "metrics":
        return list(node.items())
    return [(str(i), node[str(i)]) for i in range(len(node))]


def _name(key: str, ds: h5py.Dataset, attr: str, old: bool) -> str:
    """A metric name or path label: JSON in `attr` (version 2), else the key or plain label."""
    if old:
        return key if attr == "name" else str(ds.attrs[attr])
    return json.loads(ds.attrs[attr])
