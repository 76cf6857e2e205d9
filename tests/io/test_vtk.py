"""VTK PolyData export: the file parses as XML and holds the grid, its cells and its data."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

import lossatlas as la
from lossatlas.core.directions import Directions
from lossatlas.io.vtk import export_vtp
from lossatlas.landscape.record import Surface


def make_surface(loss: np.ndarray, coords=None, metrics=None) -> Surface:
    coords = coords or tuple(np.linspace(-1.0, 1.0, n) for n in loss.shape)
    vectors = tuple({"w": torch.zeros(2)} for _ in coords)
    return Surface(
        coords=tuple(np.asarray(c, dtype=float) for c in coords),
        loss=np.asarray(loss, dtype=float),
        metrics=metrics or {},
        directions=Directions(vectors, {}),
        settings={},
        provenance={},
    )


def bowl(n1: int = 4, n2: int = 3, metrics: bool = True) -> Surface:
    """A 4 x 3 bowl on uneven axes (so the two axes cannot be mixed up)."""
    c1, c2 = np.linspace(-1.0, 2.0, n1), np.array([-0.5, 0.25, 1.0])[:n2]
    g1, g2 = np.meshgrid(c1, c2, indexing="ij")
    loss = 0.1 + g1**2 + 3 * g2**2 + 0.01 * g1 * g2
    extra = {"accuracy": np.exp(-loss), "loss": 2 * loss} if metrics else {}
    return make_surface(loss, (c1, c2), extra)


def read(path: Path):
    """(root, piece, point data arrays, points (N, 3), connectivity (M, 4)) of a .vtp file."""
    root = ET.parse(path).getroot()
    assert root.tag == "VTKFile" and root.get("type") == "PolyData"
    (piece,) = root.findall("./PolyData/Piece")

    def values(element: ET.Element) -> np.ndarray:
        assert element.get("format") == "ascii"
        kind = float if element.get("type").startswith("Float") else int
        return np.array([kind(v) for v in (element.text or "").split()])

    arrays = {a.get("Name"): values(a) for a in piece.findall("./PointData/DataArray")}
    (points,) = piece.findall("./Points/DataArray")
    assert points.get("NumberOfComponents") == "3"
    polys = {a.get("Name"): values(a) for a in piece.findall("./Polys/DataArray")}
    offsets, conn = polys["offsets"], polys["connectivity"]
    assert np.array_equal(offsets, 4 * np.arange(1, len(offsets) + 1))  # all quads
    return root, piece, arrays, values(points).reshape(-1, 3), conn.reshape(-1, 4)


def field(root: ET.Element, name: str) -> float:
    (element,) = [
        a for a in root.findall("./PolyData/FieldData/DataArray") if a.get("Name") == name
    ]
    return float(element.text)


def grid_cells(n1: int, n2: int) -> set[frozenset[int]]:
    """The corner sets of the grid's cells, with point p = i * n2 + j."""
    return {
        frozenset({i * n2 + j, (i + 1) * n2 + j, (i + 1) * n2 + j + 1, i * n2 + j + 1})
        for i in range(n1 - 1)
        for j in range(n2 - 1)
    }


def test_points_cells_and_data(tmp_path: Path) -> None:
    s = bowl()
    path = export_vtp(s, tmp_path / "deep" / "bowl.vtp")
    assert path == tmp_path / "deep" / "bowl.vtp" and path.exists()
    root, piece, arrays, xyz, cells = read(path)
    n1, n2 = s.loss.shape
    assert piece.get("NumberOfPoints") == str(n1 * n2) and len(xyz) == n1 * n2
    assert piece.get("NumberOfPolys") == str((n1 - 1) * (n2 - 1)) == str(len(cells))

    # Points in C order of the grid: p = i * n2 + j  <->  meshgrid(..., indexing="ij").ravel().
    g1, g2 = np.meshgrid(*s.coords, indexing="ij")
    assert np.array_equal(xyz[:, 0], g1.ravel()) and np.array_equal(xyz[:, 1], g2.ravel())
    z_scale = field(root, "z_scale")
    assert field(root, "log") == 0
    np.testing.assert_allclose(xyz[:, 2], z_scale * s.loss.ravel(), rtol=1e-15)
    # Default scale: height range equals the larger coordinate span (here c1's, 3).
    assert np.ptp(xyz[:, 2]) == pytest.approx(3.0)

    # Point data, exactly (ASCII floats are written in their shortest exact form).
    assert piece.find("PointData").get("Scalars") == "loss"
    assert np.array_equal(arrays["loss"], s.loss.ravel())
    assert np.array_equal(arrays["log10_loss"], np.log10(s.loss).ravel())
    assert np.array_equal(arrays["accuracy"], s.metrics["accuracy"].ravel())
    assert np.array_equal(arrays["metric_loss"], s.metrics["loss"].ravel())  # name clash
    assert np.array_equal(arrays["c1"], g1.ravel()) and np.array_equal(arrays["c2"], g2.ravel())
    assert np.array_equal(arrays["loss_finite"], np.ones(n1 * n2))
    assert all(len(a) == n1 * n2 for a in arrays.values())

    # Connectivity: in range, and exactly the grid's cells, each once, anticlockwise (normal up).
    assert cells.min() >= 0 and cells.max() < n1 * n2
    assert {frozenset(c) for c in cells.tolist()} == grid_cells(n1, n2)
    a, b, _, d = (xyz[cells[:, k], :2] for k in range(4))
    cross = (b - a)[:, 0] * (d - a)[:, 1] - (b - a)[:, 1] * (d - a)[:, 0]
    assert (cross > 0).all()
    assert "Written by lossatlas" in path.read_text() and "All losses are finite" in (
        path.read_text()
    )


def test_log_and_z_scale(tmp_path: Path) -> None:
    s = bowl(metrics=False)
    root, piece, arrays, xyz, _ = read(export_vtp(s, tmp_path / "log.vtp", log=True, z_scale=2.5))
    assert field(root, "z_scale") == 2.5 and field(root, "log") == 1
    assert piece.find("PointData").get("Scalars") == "log10_loss"
    np.testing.assert_allclose(xyz[:, 2], 2.5 * np.log10(s.loss.ravel()), rtol=1e-15)
    assert set(arrays) == {"loss", "log10_loss", "c1", "c2", "loss_finite"}
    # A flat surface gets scale 1 by default.
    flat = make_surface(np.full((3, 3), 0.5))
    root, _, _, xyz, _ = read(export_vtp(flat, tmp_path / "flat.vtp"))
    assert field(root, "z_scale") == 1.0 and np.array_equal(xyz[:, 2], np.full(9, 0.5))


@pytest.mark.parametrize("log", [False, True])
def test_nonfinite_cells_dropped_and_no_nan(tmp_path: Path, log: bool) -> None:
    n1, n2 = 5, 4
    c1, c2 = np.linspace(-1, 1, n1), np.linspace(0, 3, n2)
    g1, g2 = np.meshgrid(c1, c2, indexing="ij")
    loss = 0.5 + g1**2 + g2
    loss[1, 2] = np.nan
    loss[4, 0] = np.inf
    loss[0, 0] = 0.0 if log else -1.0  # a gap only on a log scale
    accuracy = np.exp(-loss)
    accuracy[2, 2] = np.nan  # a metric's own NaN is filled too
    s = make_surface(loss, (c1, c2), {"accuracy": accuracy})
    path = export_vtp(s, tmp_path / "gaps.vtp", log=log)
    text = path.read_text()
    assert "nan" not in text.lower() and "inf" not in text.lower().replace("finite", "")
    root, piece, arrays, xyz, cells = read(path)

    height = np.log10(np.where(loss > 0, loss, np.nan)) if log else loss
    bad = ~np.isfinite(height)
    assert bad.sum() == (3 if log else 2)
    kept = {c for c in grid_cells(n1, n2) if not any(bad.ravel()[p] for p in c)}
    assert {frozenset(c) for c in cells.tolist()} == kept
    assert piece.get("NumberOfPolys") == str(len(kept)) == str(len(cells))
    # Cells touching (1, 2): 4; touching the corner (4, 0): 1; touching (0, 0) with log: 1.
    assert len(grid_cells(n1, n2)) - len(kept) == (6 if log else 5)
    assert piece.get("NumberOfPoints") == str(n1 * n2)  # points stay, order unchanged

    z_scale = field(root, "z_scale")
    z = xyz[:, 2].reshape(n1, n2)
    np.testing.assert_allclose(z[~bad], z_scale * height[~bad], rtol=1e-15)
    np.testing.assert_allclose(z[bad], z_scale * height[~bad].min(), rtol=1e-15)
    assert np.array_equal(arrays["loss_finite"], (~bad).ravel().astype(int))
    for name in ("loss", "log10_loss", "accuracy"):
        assert np.isfinite(arrays[name]).all()
    assert np.array_equal(arrays["loss"].reshape(n1, n2)[~bad], loss[~bad])
    assert arrays["loss"].reshape(n1, n2)[1, 2] == np.nanmin(loss[np.isfinite(loss)])
    assert arrays["accuracy"].reshape(n1, n2)[2, 2] == np.nanmin(accuracy)
    assert f"{bad.sum()} of {n1 * n2} points have a non-finite" in text
    assert f"the {6 if log else 5} cells touching them are left out" in text


def test_from_la_surface(tmp_path: Path, mlp_case) -> None:
    problem = la.Problem(mlp_case.model, torch.nn.functional.cross_entropy, mlp_case.batches(20))
    s = la.surface(problem, la.random_directions(problem, 2, seed=0), steps=(4, 3), quiet=True)
    _, piece, arrays, xyz, cells = read(export_vtp(s, tmp_path / "mlp.vtp"))
    assert piece.get("NumberOfPoints") == "12" and len(cells) == 6
    assert np.array_equal(arrays["loss"], s.loss.ravel())
    assert set(s.metrics) <= set(arrays)
    assert np.array_equal(
        xyz[:, :2], np.column_stack([a.ravel() for a in np.meshgrid(*s.coords, indexing="ij")])
    )


def test_errors(tmp_path: Path) -> None:
    s = bowl()
    for name in ("bowl.vtk", "bowl.xml", "bowl"):
        with pytest.raises(la.LossatlasError, match=r"\.vtp"):
            export_vtp(s, tmp_path / name)
    assert export_vtp(s, tmp_path / "UPPER.VTP").exists()
    line = make_surface(np.array([1.0, 0.5, 1.0]))
    with pytest.raises(la.LossatlasError, match=r"needs a 2D surface.*1D"):
        export_vtp(line, tmp_path / "line.vtp")
    with pytest.raises(la.LossatlasError, match="no finite loss"):
        export_vtp(make_surface(np.full((2, 2), np.nan)), tmp_path / "nan.vtp")
    with pytest.raises(la.LossatlasError, match="no positive finite loss"):
        export_vtp(make_surface(np.zeros((2, 2))), tmp_path / "zero.vtp", log=True)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(la.LossatlasError, match="z_scale"):
            export_vtp(s, tmp_path / "s.vtp", z_scale=bad)
    with pytest.raises(la.LossatlasError, match="needs a Surface"):
        export_vtp(s.loss, tmp_path / "array.vtp")  # type: ignore[arg-type]
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "bowl.vtk").exists()
