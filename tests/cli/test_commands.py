"""`lossatlas surface`, `descend` and `report`, run in subprocesses as a user would."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import lossatlas as la
from lossatlas.problems.registry import linreg, one_weight
from tests.support.cli import run_cli


def ok_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.count("\n") == 1  # one JSON object, nothing else on stdout
    return json.loads(proc.stdout)


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_surface_1d_along_one_weight_is_the_closed_form(tmp_path: Path) -> None:
    proc = run_cli(
        "surface",
        "one-weight",
        "--dims",
        "1",
        "--directions",
        "axis",
        "--weight",
        "weight[0, 0]",
        "--steps",
        "9",
        "--span",
        "-1.5,2.5",
        "--slopes",
        "--out",
        "line.h5",
        "--figure",
        "line.png",
        "--report",
        "line.html",
        "--linear",
        "--json",
        cwd=tmp_path,
    )
    result = ok_json(proc)
    assert set(result["files"]) == {"surface", "figure", "report"}
    line = la.load(tmp_path / "line.h5")
    w = 0.5 + line.coords[0]  # the problem's weight is 0.5; x = 2, y = 4
    np.testing.assert_allclose(line.loss, (2 * w - 4) ** 2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(line.slopes[:, 0], 2 * (2 * w - 4) * 2, rtol=1e-12, atol=1e-12)
    assert result["loss_min"] == pytest.approx(0.0, abs=1e-12)
    assert result["argmin"] == [1.5]  # w = 2
    assert (tmp_path / "line.png").stat().st_size > 10_000
    assert "plotly" in (tmp_path / "line.html").read_text(encoding="utf-8")


def test_surface_2d_random_matches_the_library_and_resumes(tmp_path: Path) -> None:
    args = (
        "surface",
        "linreg",
        "--steps",
        "7",
        "--span",
        "-2,2",
        "--seed",
        "3",
        "--norm",
        "layer",
        "--ignore",
        "none",
        "--vtp",
        "s.vtp",
        "--json",
    )
    result = ok_json(run_cli(*args, cwd=tmp_path))
    problem = linreg()
    dirs = la.random_directions(problem, 2, norm="layer", ignore=None, seed=3)
    expected = la.surface(problem, dirs, 7, (-2.0, 2.0), quiet=True)
    land = la.load(tmp_path / "surface.h5")
    np.testing.assert_array_equal(land.loss, expected.loss)
    assert result["n_points"] == 49 and result["loss_center"] == float(land.loss[3, 3])
    assert (tmp_path / "s.vtp").read_text().startswith("<?xml")
    stamp = (tmp_path / "surface.h5").stat().st_mtime_ns
    again = ok_json(run_cli(*args, cwd=tmp_path))  # the finished file is returned as it is
    assert again["loss_center"] == result["loss_center"]
    assert (tmp_path / "surface.h5").stat().st_mtime_ns == stamp
    # A different surface into the same file needs --overwrite.
    one_line_error(run_cli("surface", "linreg", "--steps", "5", cwd=tmp_path), "overwrite")
    ok_json(run_cli("surface", "linreg", "--steps", "5", "--overwrite", "--json", cwd=tmp_path))


def test_surface_hessian_directions(tmp_path: Path) -> None:
    result = ok_json(
        run_cli(
            "surface",
            "linreg",
            "--directions",
            "hessian",
            "--dims",
            "1",
            "--steps",
            "5",
            "--span",
            "-1,1",
            "--json",
            cwd=tmp_path,
        )
    )
    line = la.load(tmp_path / "surface.h5")
    assert line.directions.settings["kind"] == "hessian"
    # Along the top eigenvector of a quadratic: L(c) = L(0) + g.v c + lambda c^2 / 2.
    lam = line.directions.settings["eigenvalues"][0]
    c, loss = line.coords[0], line.loss
    second = (loss[0] - 2 * loss[2] + loss[4]) / (c[1] - c[0]) ** 2 / 4
    assert second == pytest.approx(lam, rel=1e-6)
    assert result["n_points"] == 5


def test_descend_function_sweep(tmp_path: Path) -> None:
    proc = run_cli(
        "descend",
        "rosenbrock",
        "--optimizer",
        "sgd",
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--lr",
        "0.05",
        "--start",
        "-1.5,2",
        "--steps",
        "50",
        "--out",
        "runs.h5",
        "--figure",
        "paths.png",
        "--animate",
        "runs.gif",
        "--report",
        "runs.html",
        "--json",
        cwd=tmp_path,
    )
    result = ok_json(proc)
    assert result["runs"] == 4 and set(result["files"]) == {"runs", "figure", "animation", "report"}
    expected = la.sweep(
        la.get_function("rosenbrock"),
        starts=[[-1.5, 2.0]],
        optimizers=["sgd", "adam"],
        lrs=[0.001, 0.05],
        steps=50,
        quiet=True,
    )
    saved = la.load(tmp_path / "runs.h5")
    for got, want in zip(saved, expected):
        np.testing.assert_array_equal(got.trajectory.positions, want.trajectory.positions)
    rows = result["table"]
    assert [(r["optimizer"], r["lr"]) for r in rows] == [
        ("sgd", 0.001),
        ("sgd", 0.05),
        ("adam", 0.001),
        ("adam", 0.05),
    ]
    assert [r["status"] for r in rows] == [r.trajectory.status for r in expected]
    for row, run in zip(rows, expected):  # where each run ended, as the seed scenario asks
        assert row["final_position"] == run.trajectory.final_position.tolist()
    assert (tmp_path / "runs.gif").read_bytes()[:6] in (b"GIF89a", b"GIF87a")


def test_descend_problem_with_options(tmp_path: Path) -> None:
    result = ok_json(
        run_cli(
            "descend",
            "linreg",
            "--optimizer",
            "sgd",
            "--option",
            "momentum=0.5",
            "--lr",
            "0.1",
            "--steps",
            "20",
            "--schedule",
            "step",
            "--schedule-option",
            "step_size=5",
            "--schedule-option",
            "gamma=0.5",
            "--figure",
            "h.png",
            "--json",
            cwd=tmp_path,
        )
    )
    problem = linreg()
    run = la.descend(
        problem,
        optimizer="sgd",
        lr=0.1,
        steps=20,
        schedule="step",
        optimizer_kwargs={"momentum": 0.5},
        schedule_kwargs={"step_size": 5, "gamma": 0.5},
    )
    assert result["table"][0]["final_loss"] == run.final_loss
    assert (tmp_path / "h.png").stat().st_size > 10_000


def test_report_from_saved_results(tmp_path: Path) -> None:
    problem = one_weight()
    line = la.surface(problem, la.axis_directions(problem, ["weight[0, 0]"]), 5, quiet=True)
    line.save(tmp_path / "line.h5")
    la.save(
        la.sweep(la.get_function("bowl"), starts=[[-5.0, 5.0]], lrs=[0.2], steps=5, quiet=True),
        tmp_path / "runs.h5",
    )
    result = ok_json(
        run_cli(
            "report",
            "line.h5",
            "runs.h5",
            "--out",
            "r.html",
            "--title",
            "Two results",
            "--json",
            cwd=tmp_path,
        )
    )
    assert result["sections"] == ["Surface", "Sweep"]
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Two results" in page and page.count('class="plotly-graph-div"') == 4
    # Surfaces on one grid side by side: the same line on another problem's data.
    other = la.Problem(problem.model, torch.nn.MSELoss(), (torch.ones(3, 1), torch.ones(3, 1)))
    la.surface(other, line.directions, 5, quiet=True).save(tmp_path / "other.h5")
    both = ok_json(
        run_cli(
            "report", "line.h5", "other.h5", "runs.h5", "--side-by-side", "--json", cwd=tmp_path
        )
    )
    assert both["sections"] == ["Surfaces", "Sweep"]
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "line vs other" in page
    one_line_error(
        run_cli("report", "line.h5", "runs.h5", "--side-by-side", cwd=tmp_path), "at least two"
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("surface", "no-such-problem"), ("unknown problem", "linreg")),
        (("surface", "linreg", "--span", "1,-1"), ("--span",)),
        (("surface", "linreg", "--span", "a,b"), ("--span",)),
        (("surface", "linreg", "--dims", "3"), ("--dims",)),
        (("surface", "linreg", "--directions", "axis"), ("--weight",)),
        (
            ("surface", "linreg", "--directions", "axis", "--weight", "nope[0]", "--dims", "1"),
            ("nope",),
        ),
        (("surface", "linreg", "--figure", "f.jpg"), ("--figure",)),
        (("surface", "linreg", "--weights", "missing.pt"), ("missing.pt",)),
        (("surface", "linreg", "--steps", "many"), ("steps",)),
        (("surface", "linreg", "--compile", "maybe"), ("--compile", "auto, on or off")),
        (("surface",), ("Missing argument",)),
        (("descend", "rosenbrock", "--optimizer", "nope"), ("nope",)),
        (("descend", "rosenbrock", "--start", "1"), ("--start",)),
        (("descend", "rosenbrock", "--lr", "-1"), ("lr",)),
        (("descend", "linreg", "--animate", "a.gif"), ("--animate",)),
        (("descend", "rosenbrock", "--option", "momentum"), ("--option",)),
        (("report", "missing.h5"), ("missing.h5",)),
        (("report", "bad.h5"), ("bad.h5",)),
        (("sharpness", "broken.py:make"), ("ZeroDivisionError",)),
    ],
)
def test_user_mistakes_are_one_line_errors(tmp_path: Path, args: tuple, words: tuple) -> None:
    (tmp_path / "bad.h5").write_text("not HDF5")
    (tmp_path / "broken.py").write_text("def make():\n    return 1 / 0\n")
    one_line_error(run_cli(*args, cwd=tmp_path), *words)


def test_surface_of_a_spec_file_with_weights(tmp_path: Path) -> None:
    spec = tmp_path / "spec.py"
    spec.write_text(
        "import torch\nfrom torch import nn\nimport lossatlas as la\n"
        "torch.manual_seed(0)\nMODEL = nn.Linear(3, 1)\n"
        "def make():\n"
        "    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(1))\n"
        "    return la.Problem(MODEL, nn.MSELoss(), (x, x.sum(1, keepdim=True)))\n"
    )
    torch.save({"weight": torch.ones(1, 3), "bias": torch.zeros(1)}, tmp_path / "w.pt")
    result = ok_json(
        run_cli(
            "surface", "spec.py:make", "--weights", "w.pt", "--steps", "3", "--json", cwd=tmp_path
        )
    )
    assert result["loss_center"] == pytest.approx(0.0, abs=1e-12)  # the weights solve it


def test_minima_trains_compares_and_reports(tmp_path: Path) -> None:
    result = ok_json(
        run_cli(
            "minima",
            "linreg",
            "--seed",
            "0",
            "--seed",
            "1",
            "--steps",
            "50",
            "--batch-size",
            "20",
            "--lr",
            "0.1",
            "--out",
            "m",
            "--json",
            cwd=tmp_path,
        )
    )
    assert set(result["files"]) == {"minima", "barriers", "curve", "report"}
    problem = linreg()
    runs = la.train_runs(
        problem, seeds=[0, 1], batch_sizes=[20], lrs=[0.1], optimizers=["sgd"], steps=50, quiet=True
    )
    expected = la.compare_minima(problem, runs, quiet=True)
    assert [r["train_loss"] for r in result["models"]] == expected.train_loss.tolist()
    # Linear regression is convex: the loss on any segment stays under its chord.
    assert result["loss_barriers"] == [[0.0, 0.0], [0.0, 0.0]]
    assert result["curve_barrier"] == 0.0 and result["line_barrier"] == 0.0
    saved = la.load(tmp_path / "m" / "minima.h5")
    np.testing.assert_array_equal(saved.distances, expected.distances)
    # Checkpoints instead of training.
    for i, run in enumerate(runs):
        torch.save(run.params, tmp_path / f"w{i}.pt")
    again = ok_json(
        run_cli(
            "minima",
            "linreg",
            "--checkpoint",
            "w0.pt",
            "--checkpoint",
            "w1.pt",
            "--no-curve",
            "--no-barriers",
            "--json",
            cwd=tmp_path,
        )
    )
    assert [r["train_loss"] for r in again["models"]] == expected.train_loss.tolist()
    one_line_error(
        run_cli(
            "minima",
            "linreg",
            "--checkpoint",
            "w0.pt",
            "--checkpoint",
            "w1.pt",
            "--seed",
            "1",
            cwd=tmp_path,
        ),
        "--checkpoint",
    )
    one_line_error(run_cli("minima", "linreg", "--seed", "0", cwd=tmp_path), "at least two")
    one_line_error(run_cli("minima", "linreg", "--val", "test", cwd=tmp_path), "held-out")
