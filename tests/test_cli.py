"""The command line (run in subprocesses, as a user would), the digits problem and the report."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lossatlas as la
from lossatlas import cli
from lossatlas.problems import DIGITS_VERSION, digits_mlp, get_problem
from lossatlas.report import headline, save_figure, write_report


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One weights cache for the module, so the digits MLP is trained once by the CLI runs."""
    return tmp_path_factory.mktemp("cache")


def run_cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOSSATLAS_CACHE": str(cache)}
    env.pop("LOSSATLAS_QUIET", None)
    return subprocess.run(
        [sys.executable, "-m", "lossatlas.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def quick_demo(cache: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("demo") / "nested" / "out"
    proc = run_cli("demo", "--quick", "--json", "--out", str(out), cache=cache)
    return proc, out


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_demo_quick_json(quick_demo) -> None:
    proc, out = quick_demo
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.count("\n") == 1  # one JSON object, nothing else on stdout
    result = json.loads(proc.stdout)
    files = {k: Path(v) for k, v in result["files"].items()}
    assert files == {
        "surface": out.resolve() / "digits-mlp.h5",
        "report": out.resolve() / "report.html",
        "figure": out.resolve() / "digits-mlp.png",
    }
    assert result["n_points"] == 121 and result["nonfinite"] == 0
    assert result["accuracy_center"] > 0.95
    assert 0 < result["loss_center"] < 0.2
    assert result["loss_min"] <= result["loss_center"]
    assert len(result["argmin"]) == 2 and result["seconds"] > 0

    land = la.load(files["surface"])
    assert land.loss.shape == (11, 11)
    assert land.loss[5, 5] == result["loss_center"]  # exact: JSON round-trips floats
    assert land.metrics["accuracy"][5, 5] == result["accuracy_center"]
    assert land.directions.settings["norm"] == "filter"
    assert land.directions.settings["ignore"] == "biasbn"

    page = files["report"].read_text(encoding="utf-8")
    assert files["report"].stat().st_size > 1_000_000  # plotly.js is inline
    assert "plotly.js v" in page and "Licensed under the MIT license" in page
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing fetched: works offline
    for div in ("la-s1-contour", "la-s1-surface3d", "la-s1-metric-accuracy"):
        assert f'id="{div}"' in page

    width, height = png_size(files["figure"])
    assert width >= 800 and height >= 600
    assert files["figure"].stat().st_size > 20_000


def test_second_run_reuses_cached_weights(quick_demo, cache: Path, tmp_path: Path) -> None:
    proc, _ = quick_demo
    assert "trained digits-mlp" in proc.stderr
    (weights,) = cache.glob("*.pt")
    stamp = weights.stat().st_mtime_ns
    again = run_cli("demo", "--quick", "--json", "--out", str(tmp_path), cache=cache)
    assert again.returncode == 0, again.stderr
    assert "using cached weights" in again.stderr and "trained" not in again.stderr
    assert weights.stat().st_mtime_ns == stamp
    first, second = json.loads(proc.stdout), json.loads(again.stdout)
    for key in ("loss_center", "loss_min", "argmin", "accuracy_center"):
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
    cli._show_warning(message, la.LossatlasWarning, "x.py", 1)
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


# -- the report -------------------------------------------------------------------------------
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
    for div in ("la-s1-contour", "la-s1-surface3d", "la-s1-metric-accuracy", "la-s2-line"):
        assert f'id="{div}"' in page
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
    with pytest.raises(la.LossatlasError, match="Surface"):
        write_report([], tmp_path / "r.html")


def test_headline() -> None:
    head = headline(synthetic(2))
    assert head["loss_center"] is None  # 4 steps over (-1, 1): 0 is not a grid point
    assert head["loss_min"] == pytest.approx(0.1 + 1 / 9)
    assert head["argmin"][0] == 0.0 and abs(head["argmin"][1]) == pytest.approx(1 / 3)
    assert head["nonfinite"] == 8 and head["n_points"] == 20
    one = headline(synthetic(1))
    assert one["loss_center"] == pytest.approx(0.1) and one["accuracy_center"] > 0.9
