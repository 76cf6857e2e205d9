"""The HTML report (every kind of section) and static surface figures."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import lossatlas as la
from lossatlas import Section, save_figure, write_report
from tests.support.cli import png_size


def synthetic(ndim: int) -> la.Surface:
    """A tiny hand-made surface with a NaN and an infinity in its loss."""
    coords = (np.linspace(-1, 1, 5), np.linspace(-1, 1, 4))[:ndim]
    mesh = np.meshgrid(*coords, indexing="ij")
    loss = 0.1 + sum(c**2 for c in mesh)
    loss[1, ...] = np.nan
    loss[-1, ...] = np.inf
    gen = torch.Generator().manual_seed(0)
    vectors = tuple({"w": torch.randn(3, generator=gen)} for _ in range(ndim))
    return la.Surface(
        coords=coords,
        loss=loss,
        metrics={"accuracy": np.exp(-loss)},
        directions=la.Directions(vectors, {"kind": "random", "norm": "filter", "seed": 0}),
        settings={"steps": [len(c) for c in coords], "span": [[-1.0, 1.0]] * ndim},
        provenance={"n_samples": 10, "n_params": 3, "seconds": 0.5, "versions": {"torch": "x"}},
    )


@pytest.mark.parametrize("log", [False, True])
def test_write_report_synthetic(tmp_path: Path, log: bool) -> None:
    path = write_report([synthetic(2), synthetic(1)], tmp_path / "r" / "report.html", log=log)
    page = path.read_text(encoding="utf-8")
    # 2D: contour, 3D and the accuracy map; 1D: one line figure.
    assert [page.count(f'id="la-s{i}-f') for i in (1, 2)] == [3, 1]
    body = page[page.index("</head>") :]
    assert "NaN" not in body and "Infinity" not in body  # masked as null, not broken JSON
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert "cosine(d1, d2)" in body and "5 × 4" in body
    single = write_report(synthetic(2), tmp_path / "single.html", title="A <b>title</b>")
    assert "A &lt;b&gt;title&lt;/b&gt;" in single.read_text(encoding="utf-8")


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_save_figure(tmp_path: Path, suffix: str, ndim: int) -> None:
    path = save_figure(synthetic(ndim), tmp_path / f"fig{suffix}", log=ndim == 2)
    assert path.stat().st_size > 5_000
    if suffix == ".png":
        assert png_size(path)[0] > 800


def test_report_user_errors(tmp_path: Path) -> None:
    with pytest.raises(la.LossatlasError, match="use one of"):
        save_figure(synthetic(2), tmp_path / "fig.jpg")
    with pytest.raises(la.LossatlasError, match="at least one"):
        write_report([], tmp_path / "r.html")
    with pytest.raises(la.LossatlasError, match="cannot report a dict"):
        write_report({"a": 1}, tmp_path / "r.html")


def test_headline() -> None:
    head = synthetic(2).headline()
    assert head["loss_center"] is None  # 4 steps over (-1, 1): 0 is not a grid point
    assert head["loss_min"] == pytest.approx(0.1 + 1 / 9)
    assert head["argmin"][0] == 0.0 and abs(head["argmin"][1]) == pytest.approx(1 / 3)
    assert head["nonfinite"] == 8 and head["n_points"] == 20
    one = synthetic(1).headline()
    assert one["loss_center"] == pytest.approx(0.1) and one["accuracy_center"] > 0.9


# -- sections of every kind -------------------------------------------------------------------
def traces(fig, kind: str) -> list:
    return [t for t in fig.data if t.type == kind]


def test_runs_on_a_function_are_drawn_where_they_went() -> None:
    from lossatlas.report.sections import parts

    bowl = la.get_function("bowl")
    runs = la.sweep(bowl, starts=[[-5.0, 5.0], [4.0, 6.0]], lrs=[0.2, 1.5], steps=12, quiet=True)
    p = parts(runs, log=True)
    contour, surf, history = (fig for fig, _ in p.figures)
    lines = [t for t in traces(contour, "scatter") if t.mode == "lines+markers"]
    assert len(lines) == 4
    for line, run in zip(lines, runs):
        pos = run.trajectory.positions
        np.testing.assert_array_equal(np.array(line.x, float), pos[:, 0])
        np.testing.assert_array_equal(np.array(line.y, float), pos[:, 1])
    # 3D: each point sits at log10 of the run's own loss there (plus a small lift; floored at
    # the grid's lowest value, as the surface is), or is left out when the run left the box.
    from lossatlas.report.sections import GRID_STEPS
    from lossatlas.scene.background import background_of

    bg = background_of(bowl, log=True, steps=GRID_STEPS, box=None, title=None)
    (x0, x1), (y0, y1) = bowl.box
    lift = None
    for t3, run in zip(traces(surf, "scatter3d"), runs):
        pos, loss = run.trajectory.positions, run.trajectory.loss
        inside = (pos[:, 0] >= x0) & (pos[:, 0] <= x1) & (pos[:, 1] >= y0) & (pos[:, 1] <= y1)
        z = np.array([np.nan if v is None else v for v in t3.z], float)
        assert np.isnan(z[~inside]).all()
        gap = z[inside] - np.log10(np.maximum(loss[inside], bg.floor))
        lift = gap[0] if lift is None else lift
        np.testing.assert_allclose(gap, lift, atol=1e-12)
    assert p.cards["runs"] == 4 and p.cards["diverged"] == 2
    # The history figure has one line per run with its losses (non-finite ones as gaps).
    curves = [t for t in history.data if t.mode == "lines"]
    for curve, run in zip(curves, runs):
        y = np.array([np.nan if v is None else v for v in curve.y], float)
        finite = np.isfinite(run.trajectory.loss)
        np.testing.assert_array_equal(y[finite], run.trajectory.loss[finite])


def test_comparison_draws_each_optimizer_at_its_best_lr() -> None:
    from lossatlas.report.sections import parts

    rosen = la.get_function("rosenbrock")
    cmp = la.compare(
        rosen,
        optimizers=["sgd", "adam"],
        starts=[[-1.5, 2.0]],
        lrs=[1e-4, 1e-3],
        steps=40,
        quiet=True,
    )
    p = parts(cmp, log=True)
    labels = [t.name for t in traces(p.figures[0][0], "scatter") if t.mode == "lines+markers"]
    assert labels == [f"{o}, lr={cmp.best_lr[o]:g}" for o in ("sgd", "adam")]
    assert p.tables[0] == list(cmp.table()) and len(p.tables[1]) == 4


def test_surface_paths_are_drawn_on_the_contour_and_the_3d_view(tmp_path: Path) -> None:
    from lossatlas.report.sections import parts

    problem = la.linreg()
    dirs = la.random_directions(problem, 2, norm="model", ignore=None, seed=0)
    land = la.surface(problem, dirs, 9, (-1.0, 1.0), quiet=True)
    path = np.array([[-0.75, 0.5], [-0.125, 0.375], [0.0, 0.0]])
    land = la.with_paths(land, {"a path": path})
    contour, surf, *_ = (fig for fig, _ in parts(land, log=False).figures)
    (line,) = [t for t in traces(contour, "scatter") if t.name == "a path"]
    np.testing.assert_array_equal(np.array(line.x, float), path[:, 0])
    # The 3D path is at the plane's loss: bilinear interpolation of the grid (exact on nodes).
    (t3,) = traces(surf, "scatter3d")
    z = np.array(t3.z, float)
    lift = z[-1] - land.loss[4, 4]
    assert lift >= 0 and z[1] - lift == pytest.approx(land.loss[3:5, 5:7].mean(), rel=1e-12)
    again = la.load(land.save(tmp_path / "p.h5"))
    np.testing.assert_array_equal(again.paths["a path"], path)
    with pytest.raises(la.LossatlasError, match=r"\(n, 2\)"):
        la.with_paths(land, {"bad": np.zeros((3, 3))})


def test_sharpness_and_density_sections() -> None:
    from lossatlas.report.sections import parts

    problem = la.linreg()
    report = la.sharpness_report(problem, k=2, trace_vectors=4, samples=4, quiet=True)
    p = parts(report, log=False)
    d = report.to_dict()
    values = {row["measure"].split(" (")[0]: row["value"] for row in p.tables[0]}
    assert values["lambda_max"] == d["lambda_max"] and values["trace of the Hessian"] == d["trace"]
    (spectrum,) = p.figures[0][0].data
    np.testing.assert_array_equal(np.array(spectrum.y, float), report.eigen.eigenvalues)
    density = la.spectral_density(la.HessianOperator(problem), n_vectors=2, steps=2, quiet=True)
    q = parts(density, log=False)
    grid, values = density.density()
    np.testing.assert_array_equal(np.array(q.figures[0][0].data[0].x, float), grid)
    (curve,) = q.figures[0][0].data
    np.testing.assert_allclose(np.array(curve.y, float), np.maximum(values, values.max() * 1e-8))


def test_section_wrapper_and_log_ticks(tmp_path: Path) -> None:
    from lossatlas.report.figures import _log_bar

    bar = _log_bar(np.log10(np.array([2.7, 9.0])), "loss")  # within a decade: 1-1.5-2-3-5-7
    assert bar["ticktext"] == ["3", "5", "7"]
    np.testing.assert_allclose(bar["tickvals"], np.log10([3, 5, 7]))
    section = Section(synthetic(1), title="Mine", text="Some <words>", facts={"answer": 42})
    page = write_report(section, tmp_path / "s.html").read_text(encoding="utf-8")
    assert "1. Mine" in page and "Some &lt;words&gt;" in page and "answer: <b>42</b>" in page


def test_train_and_validation_side_by_side(tmp_path: Path) -> None:
    from lossatlas.report.sections import parts

    train = synthetic(2)
    val = la.Surface(
        coords=train.coords,
        loss=train.loss * 3,
        metrics={},
        directions=train.directions,
        settings=train.settings,
        provenance=train.provenance,
    )
    p = parts({"train": train, "validation": val}, log=True)
    (a, _), (b, _), (diff, _) = p.figures
    za, zb = (np.array(f.data[0].z, dtype=float) for f in (a, b))
    finite = np.isfinite(train.loss.T)
    np.testing.assert_allclose(za[finite], np.log10(train.loss.T[finite]))
    np.testing.assert_allclose(zb[finite], np.log10(3 * train.loss.T[finite]))
    assert a.data[0].zmin == b.data[0].zmin and a.data[0].zmax == b.data[0].zmax  # one scale
    d = np.array(diff.data[0].z, dtype=float)
    np.testing.assert_allclose(d[finite], 2 * train.loss.T[finite])
    assert p.cards["lowest validation loss"] == pytest.approx(3 * p.cards["lowest train loss"])
    with pytest.raises(la.LossatlasError, match="share one grid"):
        parts({"a": train, "b": synthetic(1)}, log=False)
    write_report(la.Section({"train": train, "validation": val}), tmp_path / "tv.html")


def test_interpolation_barrier_and_curve_sections(tmp_path: Path) -> None:
    from lossatlas.report.sections import parts

    problem = la.linreg()
    a = {k: v.clone() for k, v in problem.params.items()}
    b = {k: v + 1.0 for k, v in a.items()}
    c = {k: v - 0.5 for k, v in a.items()}
    from lossatlas.minima.interpolation import barrier_matrix, interpolate

    line = interpolate(problem, a, b, steps=11, metric=None)
    p = parts([line, interpolate(problem, b, c, steps=11, metric=None)], log=False)
    ((fig, _),) = p.figures
    np.testing.assert_array_equal(np.array(fig.data[0].y, float), line.loss)
    assert p.tables[0][0]["loss barrier"] == line.loss_barrier
    matrix = barrier_matrix(problem, {"a": a, "b": b, "c": c}, steps=5, metric=None, quiet=True)
    q = parts(matrix, log=False)
    np.testing.assert_array_equal(np.array(q.figures[0][0].data[0].z, float), matrix.loss_barrier)
    assert q.cards["largest loss barrier"] == matrix.loss_barrier.max()
    from lossatlas.minima.curves import curve_losses, fit_curve

    curve = curve_losses(problem, fit_curve(problem, a, b, steps=5, quiet=True), steps=7)
    r = parts(curve, log=False)
    traces = r.figures[0][0].data
    np.testing.assert_array_equal(np.array(traces[0].y, float), curve.loss)
    np.testing.assert_array_equal(np.array(traces[2].y, float), curve.line_loss)
    assert r.cards["barrier on the curve"] == curve.barrier
    write_report([line, matrix, curve], tmp_path / "m.html")
