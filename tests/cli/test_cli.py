"""The command line (run in subprocesses, as a user would), the digits problem and the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import lossatlas as la
from lossatlas.cli import common as cli_common
from lossatlas.problems import gpt
from lossatlas.problems.registry import DIGITS_VERSION, digits_mlp, get_problem, linreg
from tests.support.cli import png_size, run_cli


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One weights cache for the module, so the digits MLP is trained once by the CLI runs."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def quick_demo(cache: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("demo") / "nested" / "out"
    proc = run_cli("demo", "--quick", "--json", "--out", str(out), cache=cache)
    return proc, out


def test_demo_quick_json(quick_demo) -> None:
    proc, out = quick_demo
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.count("\n") == 1  # one JSON object, nothing else on stdout
    result = json.loads(proc.stdout)
    files = {k: Path(v) for k, v in result["files"].items()}
    assert files["report"] == out.resolve() / "report.html"
    assert all(path.exists() for path in files.values())
    kinds = {k: type(la.load(p)).__name__ for k, p in files.items() if p.suffix == ".h5"}
    assert kinds == {
        "one-weight": "Surface",
        "linreg-lrs": "Sweep",
        "bowl-gd": "Sweep",
        "rosenbrock": "Comparison",
        "tiny-7": "Surface",
        "xy-input": "InputSurface",
        "digits-mlp": "Surface",
        "digits-pca": "Surface",
        "digits-sharpness": "SharpnessReport",
        "digits-density": "Density",
        "digits-train-test-train": "Surface",
        "digits-train-test-test": "Surface",
        "digits-minima": "MinimaComparison",
        "digits-barriers": "BarrierMatrix",
        "digits-curve": "CurveLosses",
        "digits-plane": "Surface",
        "digits-flat-sharp": "FlatSharpStudy",
        "digits-watch": "MonitorRecord",
        "digits-watch.plane": "Surface",
        "resnet-digits": "Surface",
        "gpt-plane": "Surface",
        "gpt-sharp-train": "Surface",
        "gpt-sharp-test": "Surface",
    }
    # One weight: autograd's slope is the closed form 2 (w x - y) x.
    assert result["one_weight_slope_error"] < 1e-12
    # Linear regression: the stable bound from the closed-form Hessian 2/n X^T X, and the runs
    # 5% below it settle while those 5% above it diverge.
    problem = linreg()
    (x, _), *_ = problem.batches()
    design = torch.cat([x, torch.ones_like(x)], 1).double()
    lam = torch.linalg.eigvalsh(2 / len(x) * design.T @ design).max().item()
    assert result["linreg_max_stable_lr"] == pytest.approx(2 / lam, rel=1e-8)
    statuses = list(result["linreg_status"].values())
    assert statuses[-1] == "diverged" and "diverged" not in statuses[:-1]
    # The bowl: each GD step multiplies the loss by (1 - 2 lr)^2 = 0.36.
    starts = np.array([[-5.0, 5.0], [5.0, 7.0], [-4.0, -7.0]])
    f0 = ((starts - [2.0, -3.0]) ** 2).sum(1)
    np.testing.assert_allclose(result["bowl_final_losses"], f0 * 0.36**15, rtol=1e-9)
    assert result["digits_accuracy_center"] > 0.95 and 0 < result["digits_loss_center"] < 0.2
    assert result["digits_lambda_max"] > 0
    land = la.load(files["digits-mlp"])
    assert land.loss.shape == (11, 11) and land.loss[5, 5] == result["digits_loss_center"]
    assert land.directions.settings["norm"] == "filter"
    pca = la.load(files["digits-pca"])
    assert pca.directions.settings["kind"] == "pca" and len(pca.paths) == 1

    page = files["report"].read_text(encoding="utf-8")
    assert "plotly.js v" in page and "Licensed under the MIT license" in page
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing fetched: works offline
    assert page.count("<section id=") == 21
    # Many minima: the trained curve's barrier is below the straight line's, which is the
    # largest entry of the barrier matrix for that pair or below it.
    # (the two straight lines are evaluated on different engine paths: equal to float rounding)
    assert (
        0 <= result["curve_barrier"] < result["line_barrier"] <= result["barrier_max"] * (1 + 1e-8)
    )
    assert all(g > 0 for g in result["minima_gap"]) and len(result["minima_lambda_max"]) == 3
    # Watching training: every record's threshold is (2 + 2 momentum) / lr = 2 * 1.9 / 0.05.
    watched = la.load(files["digits-watch"])
    assert result["watch_records"] == len(watched) == 6 and list(watched.step) == [
        20, 40, 60, 80, 100, 120,
    ]  # fmt: skip
    np.testing.assert_allclose(watched.threshold, 76.0)
    assert np.isfinite(watched.lambda_max).all() and np.isfinite(watched.gap).all()
    # The networks users bring: a trained ResNet and a language model that reads its context.
    assert 0 < result["resnet_loss_center"] < 0.05 and result["resnet_lambda_max"] > 0
    assert result["gpt_test_loss_center"] < gpt.unigram_entropy(gpt.encode(gpt.gpt_text()[0]))
    assert result["gpt_max_stable_lr"] == pytest.approx(2 / result["gpt_lambda_max"], rel=1e-12)
    sharp = la.load(files["gpt-sharp-train"])
    assert sharp.directions.settings["kind"] == "hessian"
    assert sharp.loss[4, 4] == pytest.approx(result["gpt_loss_center"], rel=1e-6)  # float32
    width, height = png_size(files["digits-mlp.png"])
    assert width >= 800 and height >= 600


def test_second_run_reuses_cached_weights(quick_demo, cache: Path, tmp_path: Path) -> None:
    proc, _ = quick_demo
    weights = sorted(cache.glob("*.pt"))
    assert [w.name.split("-v")[0] for w in weights] == [
        "digits-mlp",
        "resnet-digits",
        "tiny-7",
        "tiny-gpt",
        "xy-regression",
    ]
    stamps = [w.stat().st_mtime_ns for w in weights]
    again = run_cli("demo", "--quick", "--json", "--out", str(tmp_path), cache=cache)
    assert again.returncode == 0, again.stderr
    assert [w.stat().st_mtime_ns for w in weights] == stamps
    first, second = json.loads(proc.stdout), json.loads(again.stdout)
    for key in ("digits_loss_center", "digits_lambda_max", "linreg_max_stable_lr", "xy_mean_loss"):
        assert first[key] == second[key]


def test_quiet_prints_nothing(quick_demo, cache: Path, tmp_path: Path) -> None:
    proc = run_cli("demo", "--quick", "--quiet", "--out", str(tmp_path), cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    assert (tmp_path / "report.html").exists()


def test_out_is_a_file_is_a_user_error(tmp_path: Path) -> None:
    target = tmp_path / "taken.txt"
    target.write_text("not a directory")
    proc = run_cli("demo", "--quick", "--out", str(target), cache=tmp_path / "cache")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "taken.txt" in lines[0]
    assert proc.stdout == ""


def test_version(tmp_path: Path) -> None:
    proc = run_cli("version", cache=tmp_path)
    assert proc.returncode == 0
    assert f"lossatlas {la.__version__}" in proc.stdout
    assert f"torch {torch.__version__}" in proc.stdout


def test_warnings_print_as_one_line(capsys: pytest.CaptureFixture) -> None:
    message = la.LossatlasWarning("lossatlas: 3 of 9 points have a non-finite loss\ndetails")
    cli_common._show_warning(message, la.LossatlasWarning, "x.py", 1)
    assert capsys.readouterr().err == "warning: 3 of 9 points have a non-finite loss\n"


# -- the digits problem -----------------------------------------------------------------------
def test_digits_mlp_is_accurate_and_deterministic(tmp_path: Path, monkeypatch) -> None:
    rng = torch.get_rng_state()
    monkeypatch.setenv("LOSSATLAS_CACHE", str(tmp_path / "a"))
    first = digits_mlp(seed=0)
    # A corrupt cache file is ignored: the weights are trained again, to the same values.
    other = tmp_path / "b" / f"digits-mlp-v{DIGITS_VERSION}-seed0.pt"
    other.parent.mkdir()
    other.write_bytes(b"not a torch file")
    monkeypatch.setenv("LOSSATLAS_CACHE", str(other.parent))
    with pytest.warns(la.LossatlasWarning, match="retraining"):
        second = digits_mlp(seed=0)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is not touched
    assert first.n_samples == 1437 and first.n_params == 64 * 128 + 128 * 128 + 128 * 10 + 266
    assert list(first.params) == [f"fc{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")]
    for name, value in first.params.items():
        assert torch.equal(value, second.params[name]), name
    with torch.no_grad():
        (x, y), *_ = first.batches()
        assert la.accuracy(first.module(x), y) > 0.95
    stamp = other.stat().st_mtime_ns
    third = digits_mlp(seed=0)  # from the repaired cache
    assert other.stat().st_mtime_ns == stamp
    assert all(torch.equal(v, third.params[k]) for k, v in first.params.items())
    assert digits_mlp(seed=0, split="test").n_samples == 360


def test_digits_mlp_rejects_bad_arguments() -> None:
    with pytest.raises(la.LossatlasError, match="split"):
        digits_mlp(split="valid")
    with pytest.raises(la.LossatlasError, match="seed"):
        digits_mlp(seed=-1)
    with pytest.raises(la.LossatlasError, match="digits-mlp"):
        get_problem("digits")


def test_demo_report_renders_in_chromium(quick_demo) -> None:
    """Every figure of every kind of section draws in real Chromium, offline, without errors."""
    from tests.support.browser import open_report, require_browser

    require_browser()
    proc, out = quick_demo
    assert proc.returncode == 0, proc.stderr
    page = (out / "report.html").read_text(encoding="utf-8")
    n_divs = len(re.findall(r"<div\b[^>]*\bclass=[\"'][^\"']*\bplotly-graph-div\b", page))
    n_3d = page.count("drag to rotate")  # the caption of every 3D view
    assert n_divs >= 30 and n_3d == 10
    info = open_report(out / "report.html", "demo_report.png", timeout_s=90)
    assert info["console_errors"] == [] and info["page_errors"] == [], info
    assert not info["timed_out"], info["details"]
    assert info["plots"] == n_divs and info["rendered"] == n_divs, info["details"]
    assert sum(d["webgl"] > 0 for d in info["details"]) == n_3d  # every 3D view drew
    assert info["blocked"] == []
    assert info["screenshot"].stat().st_size > 100_000


def test_version_json_and_quiet(tmp_path: Path) -> None:
    proc = run_cli("version", "--json", cache=tmp_path)
    assert json.loads(proc.stdout)["torch"] == torch.__version__
    for command in ("version", "list"):
        quiet = run_cli(command, "--quiet", cache=tmp_path)
        assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
