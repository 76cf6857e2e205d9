"""The HTML report in real headless Chromium: every figure renders, offline, without errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

import lossatlas as la
from tests.support.browser import open_report, require_browser
from tests.support.cli import png_size


def surface(ndim: int) -> la.Surface:
    """A small bowl with a metric, a NaN and an infinity (gaps the report must cope with)."""
    coords = (np.linspace(-1.0, 1.0, 9), np.linspace(-0.5, 1.5, 7))[:ndim]
    mesh = np.meshgrid(*coords, indexing="ij")
    loss = 0.2 + sum((k + 1) * c**2 for k, c in enumerate(mesh))
    loss[(1,) * ndim] = np.nan
    loss[(-1,) * ndim] = np.inf
    vectors = tuple({"w": torch.full((3,), float(k + 1))} for k in range(ndim))
    return la.Surface(
        coords=coords,
        loss=loss,
        metrics={"accuracy": np.exp(-loss)},
        directions=la.Directions(vectors, {"kind": "random", "norm": "filter", "seed": 0}),
        settings={"steps": [len(c) for c in coords], "span": [[-1.0, 1.0]] * ndim},
        provenance={"n_samples": 10, "n_params": 3, "seconds": 0.5},
    )


def test_report_renders_offline_in_chromium(tmp_path: Path) -> None:
    require_browser()  # before the report is built: skip (or fail in CI) early
    path = la.write_report([surface(2), surface(1)], tmp_path / "report.html", log=True)
    page = path.read_text(encoding="utf-8")
    n_divs = len(re.findall(r"<div\b[^>]*\bclass=[\"'][^\"']*\bplotly-graph-div\b", page))
    assert n_divs >= 3  # at least a 2D and a 3D figure for the grid, a line for the 1D surface

    info = open_report(path, "report_browser.png")
    assert info["console_errors"] == [] and info["page_errors"] == [], info
    assert not info["timed_out"], info["details"]
    assert info["plot_divs"] == n_divs and info["plots"] == n_divs, info["details"]
    assert info["rendered"] == n_divs, info["details"]
    assert info["webgl"] >= 1, info["details"]  # the 3D surface drew on a WebGL canvas
    assert info["plotly"]

    # Offline: the page asked for nothing but itself (plotly.js is inline).
    assert info["blocked"] == [] and all(u.startswith("file:") for u in info["requests"])
    assert not [u for u in info["requests"] if u.startswith(("http:", "https:"))]

    shot = info["screenshot"]
    assert shot.exists() and shot.stat().st_size > 20_000
    width, height = png_size(shot)
    assert width == 1280 and height > 900  # the full page, not just the viewport
