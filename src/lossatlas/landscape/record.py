"""The landscape result record, and its HDF5 form.

A `Surface` carries everything needed to trust and reproduce it: coordinates, loss and metric
grids, the directions and how they were made, the grid settings and the plan the engine used,
the data size and fingerprint, counts of model calls, timings and versions.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from lossatlas.core.directions import Directions
from lossatlas.core.files import temporary_path
from lossatlas.errors import LossatlasError, one_line

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
        for name, grid in self.metrics.items():  # counted like the loss
            out[f"{name}_nonfinite"] = int((~np.isfinite(grid)).sum())
        out["seconds"] = self.provenance.get("seconds")
        return out

    def save(self, path: str | Path) -> Path:
        """Write the record to HDF5 atomically (a temporary file renamed into place)."""
        path = Path(path)
        with temporary_path(path) as tmp, h5py.File(tmp, "w") as f:
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
            seal(f)
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


def _contents(f: h5py.File) -> bytes:
    """Every attribute and dataset of the file, in a fixed order."""
    parts: list[bytes] = []

    def add(name: str, obj: Any) -> None:
        parts.append(name.encode())
        for key in sorted(obj.attrs):
            if not (name == "" and key == "checksum"):
                parts.append(key.encode() + repr(obj.attrs[key]).encode())
        if isinstance(obj, h5py.Dataset):
            parts.append(np.asarray(obj[()]).tobytes())

    add("", f)
    f.visititems(add)
    return b"\0".join(parts)


def seal(f: h5py.File) -> None:
    """Stores a CRC32 of the file's attributes and datasets, which `check_seal` verifies when
    it is read. (HDF5's own Fletcher-32 filter is not enough: a flipped bit in a chunk's
    filter mask makes HDF5 skip the check and return the checksum bytes as data.)"""
    f.attrs["checksum"] = zlib.crc32(_contents(f))


def check_seal(f: h5py.File, path: Path) -> None:
    """A one-line error if a sealed file's attributes or datasets changed."""
    if "checksum" in f.attrs and int(f.attrs["checksum"]) != zlib.crc32(_contents(f)):
        raise LossatlasError(f"{path} is damaged (its checksum does not match)")


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
    """Read a result record written by `Surface.save` (or by `surface(..., out=path)`).

    Raises:
        LossatlasError: a missing file, one that is not a lossatlas surface file, one written by
            a newer lossatlas, or a damaged one (unreadable parts, missing datasets, bad JSON,
            grids whose shapes disagree), named in one line.
    """
    path = Path(path)
    with open_h5(path) as f:
        if f.attrs.get("format") != FORMAT:
            raise LossatlasError(f"{path} is not a lossatlas surface file")
        try:
            version = int(f.attrs["format_version"])
            if version > FORMAT_VERSION:
                raise LossatlasError(f"{path} was written by a newer lossatlas; please upgrade")
            check_seal(f, path)
            surface = _read(f, old=version < 2)  # 1: names as keys, labels as plain strings
        except LossatlasError:
            raise
        except Exception as exc:  # h5py and json raise many kinds for damaged bytes
            raise LossatlasError(f"{path} is a damaged surface file ({one_line(exc)})") from None
    _check_shapes(surface, path)
    return surface


def _read(f: h5py.File, *, old: bool) -> Surface:
    coords = tuple(f["coords"][str(i)][()] for i in range(len(f["coords"])))
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


def _check_shapes(surface: Surface, path: Path) -> None:
    """Grids that agree with the coordinates, or a one-line error naming the file."""
    shape = tuple(len(c) for c in surface.coords)
    grids = {"loss": surface.loss, **{f"metric {m!r}": g for m, g in surface.metrics.items()}}
    problems = [name for name, grid in grids.items() if grid.shape != shape]
    if not surface.coords or any(c.ndim != 1 for c in surface.coords):
        problems.insert(0, "coords")
    if surface.slopes is not None and surface.slopes.shape != (*shape, len(shape)):
        problems.append("slopes")
    if len(surface.directions) != len(shape):
        problems.append("directions")
    if problems:
        raise LossatlasError(
            f"{path} is a damaged surface file ({', '.join(problems)} do not match the "
            f"{'x'.join(map(str, shape))} grid)"
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
