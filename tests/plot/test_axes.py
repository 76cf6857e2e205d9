"""One way to draw: every `figure_x(record, *, ax=None, ...)` draws into the caller's Axes when
given one (no new Figure, the caller's layout left alone) and makes its own figure otherwise;
`save(fig, path, dpi=...)` writes PNG, SVG or PDF by the suffix.

Real matplotlib (Agg through `Figure.savefig`, never pyplot) on small real records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

import lossatlas as la
from lossatlas import plot
from tests.oracles.cases import build_case

CE = nn.CrossEntropyLoss()


# -- records --------------------------------------------------------------------------------------
def mlp_problem(metrics: dict | None = None) -> tuple[nn.Module, la.Problem]:
    case = build_case("mlp")
    model = case.model.double()
    problem = la.Problem(model, CE, (case.X, case.y), dtype="float64", metrics=metrics or {})
    return model, problem


def perturbed(model: nn.Module, seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: p.detach().double() + scale * torch.randn(p.shape, generator=g, dtype=torch.float64)
        for k, p in model.named_parameters()
    }


def line_surface() -> la.Surface:
    """L(w) = (2w - 4)^2 around w = 0.5, with its slope: the one-weight model."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.5)
    data = (torch.tensor([[2.0]]), torch.tensor([[4.0]]))
    problem = la.Problem(model, nn.MSELoss(), data, dtype=torch.float64)
    dirs = la.axis_directions(problem, ["weight[0, 0]"])
    return la.surface(problem, dirs, steps=21, span=(-1.5, 2.5), slopes=True, quiet=True)


def plane_surface() -> la.Surface:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1))
        x = torch.randn(24, 2)
    problem = la.Problem(model, nn.MSELoss(), (x, x[:, :1] * x[:, 1:]))
    dirs = la.random_directions(problem, 2, seed=0)
    return la.surface(problem, dirs, steps=9, span=(-1.0, 1.0), quiet=True)


def edge_history() -> la.EdgeHistory:
    model, problem = mlp_problem()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker = la.EdgeOfStability(problem, model, every=2, optimizer=opt, tol=1e-6)
    case = build_case("mlp")
    for step in range(6):
        tracker.record(step)
        loss = CE(model(case.X.double()), case.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tracker.history


def monitor_record() -> la.MonitorRecord:
    model, problem = mlp_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    monitor = la.Monitor(problem, every=2, optimizer=opt, data="all")
    case = build_case("mlp")
    for _ in range(6):
        loss = CE(model(case.X.double()), case.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.step()
    return monitor.history


def flat_sharp_study() -> la.FlatSharpStudy:
    def data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 4, generator=gen, dtype=torch.float64)
        return x, (x[:, 0] > 0).long()

    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()

    metrics = {"accuracy": la.accuracy}
    train_p = la.Problem(model(), CE, data(24, 1), metrics=metrics)
    val_p = la.Problem(model(), CE, data(16, 2), metrics=metrics)
    return la.flat_vs_sharp(
        train_p, val_p, small_batch=4, steps=6, lr=0.3, line_steps=7, quiet=True,
        compare_options={"samples": 2},
    )  # fmt: skip


@pytest.fixture(scope="module")
def records() -> dict[str, Any]:
    rosen = la.get_function("rosenbrock")
    runs = [
        la.descend(rosen, [-1.5, 2.0], optimizer="sgd", lr=1e-3, steps=40),
        la.descend(rosen, [1.5, -0.5], optimizer="adam", lr=0.05, steps=40),
    ]
    model, problem = mlp_problem({"accuracy": la.accuracy})
    models = [perturbed(model, seed) for seed in range(3)]
    b = build_case("mlp", seed=1).model.double()
    curve = la.fit_curve(problem, problem, b, steps=4, lr=0.05, optimizer="adam", quiet=True)
    classifier = build_case("mlp")
    inputs = la.input_surface(
        la.Problem(classifier.model, CE, (classifier.X, classifier.y)),
        features=(1, 3), anchors=3, steps=9, quiet=True,
    )  # fmt: skip
    return {
        "rosen": rosen,
        "runs": runs,
        "line": line_surface(),
        "plane": plane_surface(),
        "density": la.spectral_density(mlp_problem()[1], n_vectors=2, steps=8, quiet=True),
        "edge": edge_history(),
        "monitor": monitor_record(),
        "curve": la.curve_losses(problem, curve, steps=7),
        "interpolation": la.interpolate(problem, models[0], models[1], steps=9),
        "barriers": la.barrier_matrix(problem, models, steps=5, quiet=True),
        "study": flat_sharp_study(),
        "inputs": inputs,
    }


# Every figure function: how to draw it from the records, and the projection its axes need.
DRAW: dict[str, tuple[Callable[..., Figure], str | None]] = {
    "figure_paths": (
        lambda r, **kw: plot.figure_paths(r["rosen"], r["runs"], steps=21, **kw),
        None,
    ),
    "figure_surface_3d": (
        lambda r, **kw: plot.figure_surface_3d(r["rosen"], r["runs"], steps=15, **kw),
        "3d",
    ),
    "figure_histories": (lambda r, **kw: plot.figure_histories(r["runs"], **kw), None),
    "figure_line": (lambda r, **kw: plot.figure_line(r["line"], **kw), None),
    "figure_curve": (lambda r, **kw: plot.figure_curve(r["curve"], **kw), None),
    "figure_density": (lambda r, **kw: plot.figure_density(r["density"], **kw), None),
    "figure_edge": (lambda r, **kw: plot.figure_edge(r["edge"], **kw), None),
    "figure_monitor": (lambda r, **kw: plot.figure_monitor(r["monitor"], **kw), None),
    "figure_flat_vs_sharp": (lambda r, **kw: plot.figure_flat_vs_sharp(r["study"], **kw), None),
    "figure_interpolation": (
        lambda r, **kw: plot.figure_interpolation(r["interpolation"], **kw),
        None,
    ),
    "figure_barriers": (lambda r, **kw: plot.figure_barriers(r["barriers"], **kw), None),
    "figure_surface": (lambda r, **kw: plot.figure_surface(r["plane"], **kw), None),
    "figure_surface (1D)": (lambda r, **kw: plot.figure_surface(r["line"], log=True, **kw), None),
    "figure_input_surface": (lambda r, **kw: plot.figure_input_surface(r["inputs"], **kw), None),
}


def test_every_figure_function_is_covered() -> None:
    figures = {n for n in plot.__all__ if n.startswith("figure_")}
    assert figures == {name.split(" ")[0] for name in DRAW}


@pytest.fixture
def new_figures(monkeypatch) -> list[Figure]:
    """Every matplotlib Figure made from now on (pyplot or not)."""
    made: list[Figure] = []
    init = Figure.__init__

    def counting(self, *args, **kwargs) -> None:
        made.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "__init__", counting)
    return made


def drawn(ax) -> int:
    """How many lines, collections (contours, scatters, fills) and images the axes hold."""
    return len(ax.lines) + len(ax.collections) + len(ax.images)


def one_line_error(fn, *args, match: str, **kwargs) -> str:
    with pytest.raises(la.LossatlasError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


# -- ax= draws into the caller's axes; without it, a figure of its own ---------------------------
@pytest.mark.parametrize("name", list(DRAW))
def test_draws_into_the_given_axes(name, records, new_figures, tmp_path) -> None:
    draw, projection = DRAW[name]
    user = Figure(figsize=(6, 5))
    ax = user.add_subplot(projection=projection)
    assert drawn(ax) == 0
    before = len(new_figures)
    fig = draw(records, ax=ax)
    assert len(new_figures) == before  # no other Figure made
    assert fig is ax.figure is user
    assert drawn(ax) > 0
    assert user.get_layout_engine() is None  # the caller's layout is left alone
    assert not user.legends and user.get_suptitle() == ""  # nothing figure-level added
    assert png_size(plot.save(fig, tmp_path / "user.png", dpi=40)) == (240, 200)


@pytest.mark.parametrize("name", list(DRAW))
def test_without_axes_a_figure_of_its_own(name, records, new_figures) -> None:
    draw, projection = DRAW[name]
    fig = draw(records)
    assert new_figures == [fig]
    assert fig.get_layout_engine() is not None  # constrained, as before
    ax = fig.axes[0]
    assert drawn(ax) > 0
    assert ax.name == (projection or "rectilinear")


def test_axes_in_a_subfigure_return_the_figure_that_saves(records, tmp_path) -> None:
    root = Figure(figsize=(8, 4))
    left, right = root.subfigures(1, 2)
    a, b = left.add_subplot(), right.add_subplot()
    assert plot.figure_surface(records["plane"], ax=a) is root
    assert plot.figure_density(records["density"], ax=b) is root
    assert len(left.axes) == 2  # the colour bar went with its axes, into the subfigure
    assert png_size(plot.save(root, tmp_path / "sub.png", dpi=25)) == (200, 100)


# -- numbers: what is drawn into the given axes is the record ------------------------------------
def labelled(ax, label: str):
    return next(ln for ln in ax.lines if ln.get_label() == label)


def test_line_draws_the_loss_and_the_slope(records) -> None:
    line = records["line"]
    user = Figure()
    loss_ax, slope_ax = user.subplots(1, 2)
    assert plot.figure_line(line, ax=(loss_ax, slope_ax)) is user
    np.testing.assert_array_equal(labelled(loss_ax, "loss L").get_ydata(), line.loss)
    np.testing.assert_array_equal(labelled(loss_ax, "loss L").get_xdata(), line.coords[0])
    slope = next(ln for ln in slope_ax.lines if "autograd" in ln.get_label())
    np.testing.assert_array_equal(slope.get_ydata(), line.slopes[:, 0])
    zero = next(ln for ln in slope_ax.lines if "stationary" in ln.get_label())
    np.testing.assert_allclose(zero.get_xydata(), [[1.5, 0.0]], atol=1e-9)  # w = 2: c = 1.5
    assert loss_ax.get_legend() is not None and slope_ax.get_legend() is not None
    assert loss_ax.get_title().startswith("1D, 21 points")  # the description, as the title
    assert "weight[0, 0]" in loss_ax.get_xlabel()
    # One Axes: the loss alone, even with slopes.
    alone = Figure().add_subplot()
    plot.figure_line(line, ax=alone)
    np.testing.assert_array_equal(labelled(alone, "loss L").get_ydata(), line.loss)
    assert not any("autograd" in ln.get_label() for ln in alone.lines)
    assert len(alone.figure.axes) == 1


def test_surface_draws_the_loss(records) -> None:
    line, plane = records["line"], records["plane"]
    ax = Figure().add_subplot()
    plot.figure_surface(line, ax=ax)
    np.testing.assert_array_equal(labelled(ax, "loss").get_ydata(), line.loss)
    ax = Figure().add_subplot()
    plot.figure_surface(plane, ax=ax)
    assert len(ax.figure.axes) == 2  # and the colour bar beside it
    filled = ax.collections[0]
    assert filled.get_array().min() <= plane.loss.min()
    assert ax.get_legend() is not None and ax.get_xlabel() == "direction 1 (coefficient)"


def test_paths_and_3d_draw_the_runs(records) -> None:
    rosen, runs = records["rosen"], records["runs"]
    ax = Figure().add_subplot()
    plot.figure_paths(rosen, runs, ax=ax, steps=21)
    np.testing.assert_array_equal(labelled(ax, "sgd, lr=0.001").get_xydata(), runs[0].positions)
    assert ax.get_legend() is not None and len(ax.figure.axes) == 2  # legend, colour bar
    ax3 = Figure().add_subplot(projection="3d")
    plot.figure_surface_3d(rosen, runs, ax=ax3, steps=15)
    x, y, z = labelled(ax3, "adam, lr=0.05").get_data_3d()
    np.testing.assert_array_equal(np.c_[x, y], runs[1].positions)
    np.testing.assert_allclose(z, np.log10(runs[1].loss), rtol=1e-9)
    assert ax3.computed_zorder is False


def test_histories_density_edge_draw_their_records(records) -> None:
    runs = records["runs"]
    ax = Figure().add_subplot()
    plot.figure_histories(runs, ax=ax)
    np.testing.assert_array_equal(labelled(ax, "adam, lr=0.05").get_ydata(), runs[1].loss)
    assert ax.get_legend() is not None
    density = records["density"]
    ax = Figure().add_subplot()
    plot.figure_density(density, ax=ax, log=False)
    grid, values = density.density()
    smoothed = labelled(ax, "smoothed density").get_xydata()
    np.testing.assert_array_equal(smoothed, np.c_[grid, values])
    edge = records["edge"]
    ax = Figure().add_subplot()
    plot.figure_edge(edge, ax=ax)
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), edge.lambda_max)
    np.testing.assert_array_equal(labelled(ax, "2 / lr").get_ydata(), edge.threshold)


def test_curve_and_interpolation_panels(records) -> None:
    cl = records["curve"]
    user = Figure()
    loss_ax, metrics_ax = user.subplots(1, 2)
    plot.figure_curve(cl, ax=[loss_ax, metrics_ax])
    np.testing.assert_array_equal(labelled(loss_ax, "bezier curve").get_ydata(), cl.loss)
    np.testing.assert_array_equal(labelled(loss_ax, "straight line").get_ydata(), cl.line_loss)
    np.testing.assert_array_equal(
        labelled(metrics_ax, "accuracy, bezier curve").get_ydata(), cl.metrics["accuracy"]
    )
    alone = Figure().add_subplot()
    plot.figure_curve(cl, ax=alone)
    assert [ln.get_label() for ln in alone.lines][:2] == ["bezier curve", "straight line"]
    assert not any("accuracy" in ln.get_label() for ln in alone.lines)

    r = records["interpolation"]
    assert r.error is not None
    user = Figure()
    top, bottom = user.subplots(2, 1)
    plot.figure_interpolation(r, ax=np.array([top, bottom]))  # an array of Axes, as subplots give
    np.testing.assert_array_equal(top.lines[0].get_ydata(), r.loss)
    np.testing.assert_array_equal(bottom.lines[0].get_ydata(), r.error)
    assert top.get_legend() is not None and "chord" in top.get_title()
    assert bottom.get_ylabel() == "1 - accuracy"


def test_flat_sharp_barriers_and_inputs(records) -> None:
    study = records["study"]
    ax = Figure().add_subplot()
    plot.figure_flat_vs_sharp(study, ax=ax)
    np.testing.assert_array_equal(
        labelled(ax, "small batch, train").get_ydata(), study.small_train.loss
    )
    assert ax.get_legend() is not None
    m = records["barriers"]
    ax = Figure().add_subplot()
    plot.figure_barriers(m, ax=ax)
    np.testing.assert_array_equal(ax.images[0].get_array().filled(np.nan), m.loss_barrier)
    assert len(ax.figure.axes) == 2  # and its colour bar
    inputs = records["inputs"]
    assert inputs.prediction is not None
    user = Figure()
    loss_ax, pred_ax = user.subplots(1, 2)
    plot.figure_input_surface(inputs, ax=(loss_ax, pred_ax))
    assert len(user.axes) == 4  # two panels, two colour bars
    assert loss_ax.get_xlim() == (inputs.coords[0][0], inputs.coords[0][-1])
    assert pred_ax.get_title() == "prediction" and "input plane" in loss_ax.get_title()
    alone = Figure().add_subplot()
    plot.figure_input_surface(inputs, ax=alone)
    assert len(alone.figure.axes) == 2  # the loss and its colour bar


# -- what cannot be drawn where: one-line errors -------------------------------------------------
def test_wrong_axes_are_one_line_errors(records) -> None:
    rosen, runs = records["rosen"], records["runs"]
    flat = Figure().add_subplot()
    one_line_error(
        plot.figure_surface_3d, rosen, runs, ax=flat, steps=15, match="needs 3D axes.*'3d'"
    )
    assert drawn(flat) == 0
    solid = Figure().add_subplot(projection="3d")
    one_line_error(plot.figure_paths, rosen, runs, ax=solid, match="draws on 2D axes")
    one_line_error(plot.figure_density, records["density"], ax="left", match="got str")
    one_line_error(plot.figure_barriers, records["barriers"], ax=Figure(), match="got Figure")
    # Panels: one Axes, or one per panel the record has; all in one figure.
    three = Figure().subplots(1, 3)
    one_line_error(plot.figure_line, records["line"], ax=three, match=r"2 panel\(s\).*got 3")
    no_slopes = dataclasses.replace(records["line"], slopes=None)
    message = one_line_error(plot.figure_line, no_slopes, ax=three[:2], match="1 panel")
    assert "pass one Axes, got 2" in message
    no_prediction = dataclasses.replace(records["inputs"], prediction=None)
    one_line_error(plot.figure_input_surface, no_prediction, ax=three[:2], match="1 panel")
    apart = [Figure().add_subplot(), Figure().add_subplot()]
    one_line_error(plot.figure_curve, records["curve"], ax=apart, match="one figure")
    one_line_error(plot.figure_input_surface, records["plane"], match="an InputSurface")
    one_line_error(plot.figure_surface, records["inputs"], match="expected a Surface")


# -- save ----------------------------------------------------------------------------------------
def test_save_writes_png_svg_pdf_and_refuses_other_suffixes(records, tmp_path) -> None:
    fig = plot.figure_edge(records["edge"], figsize=(4, 3))
    png = plot.save(fig, tmp_path / "a" / "edge.png", dpi=50)
    assert png == tmp_path / "a" / "edge.png" and png_size(png) == (200, 150)
    svg = plot.save(fig, str(tmp_path / "edge.svg"))  # a str path too; a Path comes back
    assert svg == tmp_path / "edge.svg"
    text = svg.read_text()
    assert text.startswith("<?xml") and "largest Hessian eigenvalue" in text  # text stays text
    assert plot.save(fig, tmp_path / "edge.PDF").read_bytes().startswith(b"%PDF")
    for name in ("edge.jpg", "edge", "edge.html"):
        message = one_line_error(plot.save, fig, tmp_path / name, match="cannot save a figure")
        assert name in message and ".png" in message
    one_line_error(plot.save, fig, tmp_path / "x.png", dpi=0, match="dpi positive")
    one_line_error(plot.save, records["edge"], tmp_path / "x.png", match="needs a matplotlib")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "edge.PDF", "edge.svg"]


def test_plot_functions_are_save_of_figure(records, tmp_path) -> None:
    plane = records["plane"]
    out = plot.plot_surface(plane, tmp_path / "s.png", figsize=(4, 3), dpi=50)
    assert png_size(out) == (200, 150)
    assert png_size(plot.plot_edge(records["edge"], tmp_path / "e.png", dpi=20)) == (140, 90)
    # The older save_figure: a Surface, or a Figure saved as drawn.
    assert png_size(plot.save_figure(plane, tmp_path / "old.png", dpi=50)) == (320, 260)
    fig = plot.figure_surface(plane, figsize=(3, 2))
    assert png_size(plot.save_figure(fig, tmp_path / "fig.png", dpi=50)) == (150, 100)
    one_line_error(plot.save_figure, fig, tmp_path / "f.png", log=True, match="log applies")
    one_line_error(plot.save_figure, "x", tmp_path / "f.png", match="a Surface or a matplotlib")
    one_line_error(plot.plot_surface, plane, tmp_path / "s.jpg", match="cannot save")
    one_line_error(plot.plot_input_surface, records["inputs"], tmp_path / "i", match="cannot save")
