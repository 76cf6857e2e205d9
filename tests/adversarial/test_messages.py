"""Mistakes and degenerate results in the CLI and the library: one line, or a result that says
what it left out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lossatlas as la
from tests.support.cli import run_cli

NAN_SPEC = """
import torch
import lossatlas as la


def make():
    torch.manual_seed(0)
    data = (torch.randn(8, 2), torch.randn(8, 1))
    return la.Problem(torch.nn.Linear(2, 1), lambda out, y: out.sum() * float("nan"), data)
"""


def one_line(proc, *words: str) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("extra", [(), ("--start", "1,1")])
def test_a_misspelt_function_names_the_closest_and_every_choice(tmp_path, extra):
    line = one_line(
        run_cli("descend", "rosenbrok", *extra, cwd=tmp_path),
        "unknown test function or problem 'rosenbrok'",
        "did you mean 'rosenbrock'?",
        "digits-mlp",
    )
    assert "--start is for test functions" not in line


def test_a_line_with_no_finite_loss_still_gets_its_figure_and_report(tmp_path):
    (tmp_path / "spec.py").write_text(NAN_SPEC)
    args = ["surface", "spec.py:make", "--dims", "1", "--steps", "7", "--json"]
    proc = run_cli(*args, "--figure", "f.png", "--report", "r.html", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "7 for 'loss'" in proc.stderr  # the non-finite warning, one line
    summary = json.loads(proc.stdout)
    assert set(summary["files"]) >= {"figure", "report"}
    assert (tmp_path / "f.png").stat().st_size > 0 and (tmp_path / "r.html").stat().st_size > 0


def test_a_metric_that_is_nan_everywhere_is_counted_like_the_loss():
    data = (torch.randn(10, 3), torch.randn(10, 1))
    metrics = {"broken": lambda out, y: out.sum() * float("nan")}
    problem = la.Problem(torch.nn.Linear(3, 1), torch.nn.MSELoss(), data, metrics=metrics)
    dirs = la.random_directions(problem, 1, seed=0)
    with pytest.warns(la.LossatlasWarning, match="5 for 'broken' of 5 points"):
        land = la.surface(problem, dirs, steps=5, quiet=True)
    head = land.headline()
    assert head["nonfinite"] == 0 and head["broken_nonfinite"] == 5
    assert np.isnan(land.metrics["broken"]).all()


def test_the_default_output_of_another_problem_is_not_overwritten_silently(tmp_path):
    assert run_cli("surface", "linreg", "--steps", "5", cwd=tmp_path).returncode == 0
    line = one_line(
        run_cli("surface", "one-weight", "--dims", "1", "--steps", "5", cwd=tmp_path),
        "surface.h5 exists and holds a different result",
        "--overwrite",
    )
    assert "Traceback" not in line
    assert (
        run_cli(
            "surface", "one-weight", "--dims", "1", "--steps", "5", "--overwrite", cwd=tmp_path
        ).returncode
        == 0
    )


@pytest.mark.parametrize("hidden", [False, True])  # linear: the NaN gradient is constant
def test_curvature_at_a_nan_loss_is_an_error_not_a_zero(hidden):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)] if hidden else []
    model = torch.nn.Sequential(*(layers or [torch.nn.Linear(2, 1)]))
    data = (torch.randn(8, 2), torch.randn(8, 1))
    problem = la.Problem(model, lambda out, y: out.sum() * float("nan"), data)
    estimators = [
        lambda: la.hessian_eigen(problem, 1),
        lambda: la.power_iteration(problem),
        lambda: la.hessian_trace(problem, n_vectors=4, quiet=True),
        lambda: la.spectral_density(problem, n_vectors=2, steps=3, quiet=True),
        lambda: la.sharpness_report(problem, quiet=True),
    ]
    for estimate in estimators:
        with pytest.raises(la.LossatlasError, match=r"not finite .* curvature is undefined"):
            estimate()


def test_the_sharpness_command_at_a_nan_loss_exits_2(tmp_path):
    (tmp_path / "spec.py").write_text(NAN_SPEC)
    one_line(run_cli("sharpness", "spec.py:make", cwd=tmp_path), "not finite")


def test_a_plane_with_no_finite_or_positive_loss_is_drawn_and_reported(tmp_path):
    import dataclasses

    problem = la.linreg(n=20)
    land = la.surface(problem, la.random_directions(problem, 2, seed=0), steps=5, quiet=True)
    empty = dataclasses.replace(land, loss=np.full_like(land.loss, np.nan))
    fig = la.figure_surface(empty)
    assert "no finite loss on this surface" in [t.get_text() for t in fig.axes[0].texts]
    la.save_figure(fig, tmp_path / "empty.png")
    la.write_report(empty, tmp_path / "empty.html")
    holes = land.loss.copy()
    holes[0, :2] = np.nan
    holes[1, 1] = -1.0
    fig = la.figure_surface(dataclasses.replace(land, loss=holes), log=True)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "linear colours: some losses are not positive" in labels
    assert "2 of 25 points have no finite loss (blank)" in labels
