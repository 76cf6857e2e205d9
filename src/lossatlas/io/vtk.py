"""Export a 2D surface as a VTK XML PolyData file (`.vtp`), for ParaView and other VTK tools.

The file is written by hand (the format is plain XML), so the `vtk` package is not needed. Data
arrays are ASCII (`format="ascii"`), with every float written in its shortest exact form
(`repr`), so a reader gets back exactly the numbers in the `Surface`; it takes about 20 bytes
a value: a 201 x 201 grid with two metrics is about 7 MB, written in a quarter of a second.

Layout of the file:

* Points: one per grid point (gaps included), `(c1, c2, z)`, where `c1 = coords[0][i]`,
  `c2 = coords[1][j]` and `z = z_scale * loss[i, j]` (`z_scale * log10(loss[i, j])` with
  `log=True`). They come in the C order of the loss grid: point `p = i * n2 + j`, that is
  `np.meshgrid(*coords, indexing="ij")` and `loss.ravel()`.
* Polys: one quad per grid cell, corners `(i, j), (i+1, j), (i+1, j+1), (i, j+1)`
  (anticlockwise in the `(c1, c2)` plane for increasing coordinates, so normals point up),
  cells in C order of their `(i, j)` corner.
* PointData (in point order): `loss`, `log10_loss`, one array per metric (by its name; a metric
  whose name clashes with one of these arrays is called `metric_<name>`), `c1`, `c2`, and
  `loss_finite` (UInt8: 1 where the point's height is finite). The active scalars are `loss`
  (`log10_loss` with `log=True`).
* FieldData: `z_scale` (Float64) and `log` (UInt8, 1 with `log=True`), to undo the height.

Non-finite values: a point whose height is not finite (a NaN or infinite loss, or with
`log=True` a loss <= 0) is a gap. The cells touching it are left out of `Polys` (a comment in
the file says how many), but the point itself stays, so that point order is the grid's. Its
height is the lowest finite height, and in every PointData array each non-finite value is
replaced by that array's lowest finite value (0 if it has none), so the file holds no NaN or
infinity; `loss_finite` tells the real points from these fillers.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from lossatlas.errors import LossatlasError
from lossatlas.landscape.record import Surface

__all__ = ["export_vtp"]


def _text(values: np.ndarray) -> str:
    """Space-separated values: shortest exact repr for floats, plain digits for integers."""
    return " ".join(map(repr, values.ravel().tolist()))


def _filled(values: np.ndarray) -> np.ndarray:
    """`values` as float64 with every non-finite entry replaced by the lowest finite one."""
    values = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(values)
    fill = float(values[finite].min()) if finite.any() else 0.0
    return np.where(finite, values, fill)


def _array(parent: ET.Element, name: str | None, values: np.ndarray, vtk_type: str, **attrs):
    element = ET.SubElement(parent, "DataArray", type=vtk_type, format="ascii")
    if name is not None:
        element.set("Name", name)
    for key, value in attrs.items():
        element.set(key, str(value))
    element.text = _text(values)
    return element


def _default_z_scale(coords: tuple[np.ndarray, ...], z: np.ndarray) -> float:
    """Scale that makes the finite heights' range as large as the larger coordinate span."""
    span = max(float(np.ptp(c)) for c in coords)
    height = float(np.ptp(z))
    if not (span > 0 and height > 0 and math.isfinite(span / height)):
        return 1.0
    return span / height


def export_vtp(
    surface: Surface, path: str | Path, *, log: bool = False, z_scale: float | None = None
) -> Path:
    """Write a 2D surface as a VTK XML PolyData file (`.vtp`), readable by ParaView.

    The grid becomes a height field: points `(c1, c2, z)` with `z = z_scale * loss` (or
    `z_scale * log10(loss)` with `log=True`), joined by one quad per grid cell, with the loss,
    log10 loss, every metric and the coordinates as point data. See the module docstring for
    the exact point and cell order and how non-finite losses are handled (their cells are left
    out; the file holds no NaN).

    Args:
        surface: a 2D surface (a 1D surface is refused: plot it as a line instead).
        path: the file to write; its suffix must be `.vtp`. Parent folders are created, and
            the file is written atomically (a temporary file renamed into place).
        log: heights from `log10(loss)`; losses <= 0 then count as non-finite.
        z_scale: factor applied to the heights. By default the range of the finite heights
            is scaled to the larger of the two coordinate spans (1 for a flat surface), so the
            surface is neither a needle nor a pancake. The value used is saved as the
            `z_scale` field, so `loss = z / z_scale` (or `10 ** (z / z_scale)`).

    Returns:
        The path written.
    """
    if not isinstance(surface, Surface):
        raise LossatlasError(f"export_vtp needs a Surface, got {type(surface).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".vtp":
        raise LossatlasError(f"a VTK PolyData file must end in .vtp, not {path.name!r}")
    if surface.ndim != 2:
        raise LossatlasError(
            f"export_vtp needs a 2D surface (a grid), this one is {surface.ndim}D; "
            "plot a 1D surface as a line instead"
        )
    c1, c2 = (np.asarray(c, dtype=np.float64) for c in surface.coords)
    n1, n2 = len(c1), len(c2)
    loss = np.asarray(surface.loss, dtype=np.float64)
    if loss.shape != (n1, n2):
        raise LossatlasError(f"loss grid has shape {loss.shape}, coordinates give {(n1, n2)}")
    for name, grid in surface.metrics.items():
        if np.shape(grid) != (n1, n2):
            raise LossatlasError(f"metric {name!r} has shape {np.shape(grid)}, not {(n1, n2)}")
    if z_scale is not None and not (math.isfinite(z_scale) and z_scale > 0):
        raise LossatlasError(f"z_scale must be a positive finite number, got {z_scale!r}")

    with np.errstate(divide="ignore", invalid="ignore"):
        log_loss = np.log10(np.where(loss > 0, loss, np.nan))
    height = log_loss if log else loss
    finite = np.isfinite(height)
    if not finite.any():
        what = "positive finite" if log else "finite"
        raise LossatlasError(f"the surface has no {what} loss to export")
    z_scale = _default_z_scale((c1, c2), height[finite]) if z_scale is None else float(z_scale)
    z = z_scale * np.where(finite, height, height[finite].min())

    # Quads over the grid; a cell is kept only if its four corners are finite.
    index = np.arange(n1 * n2).reshape(n1, n2)
    corners = np.stack(
        [index[:-1, :-1], index[1:, :-1], index[1:, 1:], index[:-1, 1:]], axis=-1
    ).reshape(-1, 4)
    keep = finite.ravel()[corners].all(axis=1)
    cells = corners[keep]
    dropped = len(corners) - len(cells)

    g1, g2 = np.meshgrid(c1, c2, indexing="ij")
    root = ET.Element("VTKFile", type="PolyData", version="0.1", byte_order="LittleEndian")
    polydata = ET.SubElement(root, "PolyData")
    field = ET.SubElement(polydata, "FieldData")
    _array(field, "z_scale", np.array([z_scale]), "Float64", NumberOfTuples=1)
    _array(field, "log", np.array([int(log)]), "UInt8", NumberOfTuples=1)
    piece = ET.SubElement(
        polydata,
        "Piece",
        NumberOfPoints=str(n1 * n2),
        NumberOfVerts="0",
        NumberOfLines="0",
        NumberOfStrips="0",
        NumberOfPolys=str(len(cells)),
    )
    point_data = ET.SubElement(piece, "PointData", Scalars="log10_loss" if log else "loss")
    arrays: dict[str, np.ndarray] = {"loss": _filled(loss), "log10_loss": _filled(log_loss)}
    reserved = {"loss", "log10_loss", "c1", "c2", "loss_finite"}
    for name, grid in surface.metrics.items():
        arrays[f"metric_{name}" if name in reserved else name] = _filled(grid)
    arrays["c1"], arrays["c2"] = g1.ravel(), g2.ravel()
    for name, values in arrays.items():
        _array(point_data, name, values, "Float64")
    _array(point_data, "loss_finite", finite.ravel().astype(np.uint8), "UInt8")
    ET.SubElement(piece, "CellData")
    points = ET.SubElement(piece, "Points")
    xyz = np.column_stack([g1.ravel(), g2.ravel(), z.ravel()])
    _array(points, "Points", xyz, "Float64", NumberOfComponents=3)
    polys = ET.SubElement(piece, "Polys")
    _array(polys, "connectivity", cells.astype(np.int64), "Int64")
    _array(polys, "offsets", 4 * np.arange(1, len(cells) + 1, dtype=np.int64), "Int64")
    ET.indent(root)

    from lossatlas.core.provenance import __version__

    gaps = int((~finite).sum())
    note = (
        f" {gaps} of {n1 * n2} points have a non-finite "
        f"{'log10 ' if log else ''}loss: the {dropped} cells touching them are left out, those "
        "points sit at the lowest finite height, and non-finite point data are replaced by "
        "each array's lowest finite value (loss_finite = 0 marks them)."
        if gaps
        else " All losses are finite."
    )
    comment = (
        f"<!-- Written by lossatlas {__version__}: a {n1} x {n2} loss surface. Point "
        f"p = i * {n2} + j is (c1[i], c2[j], z) with z = z_scale * "
        f"{'log10(loss)' if log else 'loss'}, z_scale = {z_scale!r}.{note} -->\n"
    )
    text = '<?xml version="1.0" encoding="UTF-8"?>\n' + comment
    text += ET.tostring(root, encoding="unicode") + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
