"""Static figures: files of the right size with real content, paths where the runs went."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import lossatlas as la
from lossatlas.plot import lines
from lossatlas.plot import paths as plots

BOX = ((-2.0, 2.0), (-1.0, 3.0))  # Rosenbrock's own box


def image(path, size: tuple[int, int]) -> np.ndarray:
    """The PNG's pixels, after checking its size and that it is not blank."""
    with Image.open(path) as im:
        assert im.size == size
        rgb = np.asarray(im.convert("RGB"), dtype=float)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 150
    assert rgb.std() > 15
    return rgb


def one_line_error(fn, *args, match: str, **kwargs) -> str:
    with pytest.raises(la.LossatlasError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.fixture(scope="module")
def rosen():
    return la.get_function("rosenbrock")


@pytest.fixture(scope="module")
def runs(rosen):
    """Three runs that stay on the board and one that diverges off it."""
    specs = [("sgd", 1e-3), ("momentum", 1e-3), ("adam", 0.1), ("sgd", 1e-2)]
    out = [la.descend(rosen, [-1.5, 2.0], optimizer=o, lr=lr, steps=150) for o, lr in specs]
    assert [t.status for t in out] == ["max_steps"] * 3 + ["diverged"]
    return out


@pytest.fixture(scope="module")
def swept(rosen):
    return la.sweep(
        rosen,
        starts=[[-1.5, 2.0], [1.5, -0.5]],
        optimizers=["sgd", "adam"],
        lrs=[1e-3, 0.05],
        steps=40,
        quiet=True,
    )


@pytest.fixture(scope="module")
def line():
    """L(w) = (2w - 4)^2 around w = 0.5, with dL/dw: the one-weight model."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.5)
    data = (torch.tensor([[2.0]]), torch.tensor([[4.0]]))
    problem = la.Problem(model, nn.MSELoss(), data, dtype=torch.float64)
    dirs = la.axis_directions(problem, ["weight[0, 0]"])
    return la.surface(problem, dirs, steps=41, span=(-1.5, 2.5), slopes=True, quiet=True)


@pytest.fixture(scope="module")
def plane():
    """A 2D surface of a tiny MLP."""
    with torch.random.fork_rng():  # seeded without touching other tests' generator
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1))
        x = torch.randn(24, 2)
    problem = la.Problem(model, nn.MSELoss(), (x, x[:, :1] * x[:, 1:]))
    dirs = la.random_directions(problem, 2, seed=0)
    return la.surface(problem, dirs, steps=15, span=(-1.0, 1.0), quiet=True)


def spiral(n: int = 25) -> np.ndarray:
    t = np.linspace(0, 1, n)
    return np.c_[0.8 * t * np.cos(8 * t), 0.8 * t * np.sin(8 * t)]


# -- paths --------------------------------------------------------------------------------------
def test_paths_png_has_the_requested_size_and_content(tmp_path, rosen, runs):
    out = plots.plot_paths(rosen, runs, tmp_path / "sub" / "paths.png", figsize=(6, 5), dpi=60)
    assert out == tmp_path / "sub" / "paths.png"
    image(out, (360, 300))


def test_paths_svg_names_runs_axes_and_scale(tmp_path, rosen, runs):
    svg = plots.plot_paths(rosen, runs, tmp_path / "paths.svg").read_text()
    for text in [
        "sgd, lr=0.001",
        "momentum, lr=0.001",
        "adam, lr=0.1",
        "sgd, lr=0.01 (diverged)",
        "global minimum",
        "loss, log scale",
        "rosenbrock",
        ">x<",
        ">y<",
    ]:
        assert text in svg, text


def test_paths_pdf(tmp_path, rosen, runs):
    out = plots.plot_paths(rosen, runs[:1], tmp_path / "paths.pdf")
    assert out.read_bytes().startswith(b"%PDF")


def test_drawn_path_is_the_run_and_the_axes_keep_the_box(rosen, runs):
    fig = plots.figure_paths(rosen, runs, steps=51)
    ax = fig.axes[0]
    by_label = {line.get_label(): line for line in ax.lines}
    np.testing.assert_array_equal(by_label["adam, lr=0.1"].get_xydata(), runs[2].positions)
    np.testing.assert_array_equal(by_label["momentum, lr=0.001"].get_xydata(), runs[1].positions)
    # The diverged run flies to |x| > 700: clipped, the axes still show the box.
    assert np.abs(runs[3].positions).max() > 100
    assert ax.get_xlim() == BOX[0] and ax.get_ylim() == BOX[1]
    cross = [ln for ln in ax.lines if ln.get_marker() == "X" and ln.get_label().startswith("_")]
    [[x, y]] = cross[0].get_xydata()
    assert BOX[0][0] <= x <= BOX[0][1] and BOX[1][0] <= y <= BOX[1][1]
    assert min(abs(x - b) for b in BOX[0]) < 1e-9 or min(abs(y - b) for b in BOX[1]) < 1e-9
    star = by_label["global minimum"]
    np.testing.assert_array_equal(star.get_xydata(), [[1.0, 1.0]])


def test_sweep_labels_tell_runs_apart(rosen, swept):
    fig = plots.figure_paths(rosen, swept, steps=51)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "sgd, lr=0.001, start 0" in texts and "adam, lr=0.05, start 1" in texts
    assert sum(t.startswith(("sgd", "adam")) for t in texts) == len(swept) == 8
    fig = plots.figure_paths(rosen, [swept[0].trajectory, swept[0].trajectory], steps=51)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[:2] == ["sgd, lr=0.001 #1", "sgd, lr=0.001 #2"]
    fig = plots.figure_paths(rosen, {"first": swept[0], "second": swept[1].trajectory}, steps=51)
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["first", "second"]


def test_labels_option(rosen, runs):
    fig = plots.figure_paths(rosen, runs[:2], labels=["plain", "heavy ball"], steps=51)
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["plain", "heavy ball"]
    one_line_error(plots.figure_paths, rosen, runs[:2], labels=["one"], match="2 runs")


def test_surface_background_with_coordinate_paths(tmp_path, plane):
    path = spiral()
    fig = plots.figure_paths(plane, {"spiral": path})
    ax = fig.axes[0]
    assert ax.get_xlabel() == "direction 1 (coefficient)"
    assert ax.get_ylabel() == "direction 2 (coefficient)"
    labels = {line.get_label() for line in ax.lines}
    assert {"spiral", "centre (the weights)"} <= labels
    np.testing.assert_array_equal(
        next(ln for ln in ax.lines if ln.get_label() == "spiral").get_xydata(), path
    )
    image(plots.plot_paths(plane, path, tmp_path / "plane.png", dpi=50), (350, 320))


def test_values_below_zero_shift_by_the_known_minimum_or_go_linear(rosen):
    tang = la.get_function("styblinski_tang")
    run = la.descend(tang, [0.5, 4.0], optimizer="adam", lr=0.05, steps=30)
    fig = plots.figure_paths(tang, run, steps=51)
    assert fig.axes[1].get_ylabel() == "loss − min (min = -78.33), log scale"
    fig = plots.figure_paths(
        la.get_function("saddle"), np.array([[1.0, 0.1], [0.5, 0.5]]), steps=51
    )
    assert fig.axes[1].get_ylabel() == "loss (linear: it goes below 0)"
    assert (
        plots.figure_paths(rosen, [[0.0, 0.0]], steps=51, log=False).axes[1].get_ylabel() == "loss"
    )


def test_nonfinite_values_do_not_break_plots(tmp_path, plane):
    loss = plane.loss.copy()
    loss[:3, :3], loss[-1, -1] = np.nan, np.inf
    holes = dataclasses.replace(plane, loss=loss)
    path = spiral()
    path[5], path[9] = np.nan, np.inf
    image(plots.plot_paths(holes, [path], tmp_path / "holes.png", dpi=50), (350, 320))
    image(plots.plot_surface_3d(holes, [path], tmp_path / "holes3d.png", dpi=40), (300, 256))


def test_bad_inputs_raise_one_line_errors(tmp_path, rosen, runs, line):
    for name in ["paths.jpg", "paths", "paths.html"]:
        one_line_error(plots.plot_paths, rosen, runs, tmp_path / name, match="cannot save")
    one_line_error(plots.plot_paths, line, runs, tmp_path / "p.png", match="a 1D Surface")
    one_line_error(plots.plot_paths, "rosenbrock", runs, tmp_path / "p.png", match="got str")
    one_line_error(plots.figure_paths, rosen, "sgd", match="runs must be")
    one_line_error(plots.figure_paths, rosen, runs, figsize=(0, 3), match="figsize")
    bowl3 = la.descend(lambda p: (p**2).sum(), [1.0, 2.0, 3.0], steps=3)
    one_line_error(plots.figure_paths, rosen, bowl3, match="3 coordinates, need 2; project")
    assert not list(tmp_path.iterdir())


# -- 3D -----------------------------------------------------------------------------------------
def test_surface_3d_draws_paths_at_their_loss(tmp_path, rosen, runs):
    image(
        plots.plot_surface_3d(rosen, runs, tmp_path / "s.png", figsize=(6, 5), dpi=50), (300, 250)
    )
    fig = plots.figure_surface_3d(rosen, runs[:3], steps=31)
    line = next(ln for ln in fig.axes[0].lines if ln.get_label() == "momentum, lr=0.001")
    x, y, z = line.get_data_3d()
    np.testing.assert_array_equal(np.c_[x, y], runs[1].positions)
    np.testing.assert_allclose(z, np.log10(runs[1].loss), rtol=1e-9)


# -- histories ----------------------------------------------------------------------------------
def test_histories_of_runs(tmp_path, runs):
    fig = lines.figure_histories(runs)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "step"
    adam = next(ln for ln in ax.lines if ln.get_label() == "adam, lr=0.1")
    np.testing.assert_array_equal(adam.get_ydata(), runs[2].loss)
    np.testing.assert_array_equal(adam.get_xdata(), np.arange(len(runs[2].loss)))
    # The diverged run ends in a cross, on the top edge: its 1e13 does not squash the others.
    cross = [ln for ln in ax.lines if ln.get_marker() == "X"]
    assert len(cross) == 1 and cross[0].get_ydata()[0] == ax.get_ylim()[1]
    assert ax.get_ylim()[1] < 1e5 < runs[3].loss[-1]
    image(lines.plot_histories(runs, tmp_path / "h.png", figsize=(6, 4), dpi=50), (300, 200))


def test_histories_of_a_sweep_and_a_dict(tmp_path, swept, runs):
    svg = lines.plot_histories(swept, tmp_path / "h.svg").read_text()
    assert "sgd, lr=0.05, start 1 (diverged)" in svg and "adam, lr=0.001, start 0" in svg
    assert "rosenbrock" in svg and ">step<" in svg
    fig = lines.figure_histories({"fast": runs[2], "slow": runs[0]}, x="distance")
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines] == ["fast", "slow"]
    assert ax.get_xlabel().startswith("distance travelled")
    hops = np.linalg.norm(np.diff(runs[2].positions, axis=0), axis=1).sum()
    assert ax.lines[0].get_xdata()[-1] == pytest.approx(hops)


def test_histories_go_linear_below_zero_and_reject_bad_input(tmp_path, runs):
    tang = la.get_function("styblinski_tang")
    run = la.descend(tang, [0.5, 4.0], optimizer="adam", lr=0.05, steps=30)
    ax = lines.figure_histories(run).axes[0]
    assert ax.get_yscale() == "linear" and "values ≤ 0" in ax.get_ylabel()
    one_line_error(lines.figure_histories, runs, x="time", match="x must be")
    one_line_error(lines.figure_histories, spiral(), match="needs runs with losses")
    one_line_error(lines.plot_histories, runs, tmp_path / "h.gif", match="cannot save")


# -- 1D line ------------------------------------------------------------------------------------
def test_line_png_and_svg(tmp_path, line):
    image(lines.plot_line(line, tmp_path / "line.png", figsize=(10, 4), dpi=50), (500, 200))
    svg = lines.plot_line(line, tmp_path / "line.svg").read_text()
    for text in [
        "loss decreases to the right",
        "loss decreases to the left",
        "L decreases →",
        "weight[0, 0]",
        "slope dL/dc",
        "stationary point",
        "lowest loss on the grid: L = 0 at c = 1.5",
    ]:
        assert text in svg, text
    assert lines.plot_line(line, tmp_path / "line.pdf").read_bytes().startswith(b"%PDF")


def test_line_marks_the_minimum_and_the_zero_of_the_slope(line):
    fig = lines.figure_line(line)
    loss_ax, slope_ax = fig.axes[:2]
    # L(w) = (2w - 4)^2 has its minimum at w = 2, i.e. c = 1.5 from w = 0.5.
    for ax in (loss_ax, slope_ax):
        dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
        assert dashed[0].get_xdata()[0] == pytest.approx(1.5)
    zero = next(ln for ln in slope_ax.lines if "stationary" in ln.get_label())
    np.testing.assert_allclose(zero.get_xydata(), [[1.5, 0.0]], atol=1e-9)
    slope = next(ln for ln in slope_ax.lines if "autograd" in ln.get_label())
    np.testing.assert_allclose(slope.get_ydata(), 4 * (2 * (0.5 + line.coords[0]) - 4))  # dL/dw
    # The top axis reads the weight itself.
    assert "w = weight[0, 0] = 0.5 + c" in [a.get_xlabel() for a in loss_ax.child_axes]


def test_line_without_slopes_and_with_nonfinite_values(tmp_path, line):
    fig = lines.figure_line(dataclasses.replace(line, slopes=None))
    assert len(fig.axes) == 1
    loss, slopes = line.loss.copy(), line.slopes.copy()
    loss[3], loss[5], slopes[7], slopes[30] = np.nan, np.inf, np.nan, -np.inf
    broken = dataclasses.replace(line, loss=loss, slopes=slopes)
    image(lines.plot_line(broken, tmp_path / "b.png", figsize=(10, 4), dpi=50), (500, 200))
    image(
        lines.plot_line(broken, tmp_path / "b.png", log=True, figsize=(10, 4), dpi=50), (500, 200)
    )


def test_line_rejects_what_it_cannot_draw(tmp_path, line, plane):
    one_line_error(lines.plot_line, plane, tmp_path / "l.png", match="needs a 1D Surface, got a 2D")
    one_line_error(lines.plot_line, line, tmp_path / "l.jpeg", match="cannot save")


def test_a_line_without_finite_or_positive_losses_is_drawn_and_says_so(tmp_path, line):
    empty = dataclasses.replace(line, loss=np.full_like(line.loss, np.nan))
    fig = lines.figure_line(empty)
    texts = [t.get_text() for t in fig.axes[0].texts]
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "no finite loss on this line" in texts
    assert f"{line.loss.size} of {line.loss.size} points have no finite loss (gaps)" in labels
    lines.plot_line(empty, tmp_path / "empty.png")
    negative = dataclasses.replace(line, loss=line.loss - line.loss.max() - 1.0)
    fig = lines.figure_line(negative, log=True)
    assert fig.axes[0].get_yscale() == "linear"
    assert "linear axis: some losses are not positive" in fig.axes[0].get_legend_handles_labels()[1]


def test_no_pyplot_and_the_backend_is_left_alone(tmp_path, rosen, runs):
    import matplotlib

    backend, had_pyplot = matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules
    plots.plot_paths(rosen, runs[:1], tmp_path / "p.png", steps=21, dpi=30)
    assert matplotlib.get_backend() == backend
    assert had_pyplot or "matplotlib.pyplot" not in sys.modules


def test_pca_planes_label_their_axes_with_the_explained_variance(plane):
    settings = {"kind": "pca", "explained_variance_ratio": [0.9412, 0.0501]}
    pca_plane = dataclasses.replace(
        plane, directions=dataclasses.replace(plane.directions, settings=settings)
    )
    ax = plots.figure_paths(pca_plane, spiral()).axes[0]
    assert ax.get_xlabel() == "PC1 (94.1% of the path's variance)"
    assert ax.get_ylabel() == "PC2 (5.0% of the path's variance)"
