"""The HTML report (every kind of section) and static surface figures."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import lossatlas as la
from lossatlas.report import headline, save_figure, write_report


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


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
    head = headline(synthetic(2))
    assert head["loss_center"] is None  # 4 steps over (-1, 1): 0 is not a grid point
    assert head["loss_min"] == pytest.approx(0.1 + 1 / 9)
    assert head["argmin"][0] == 0.0 and abs(head["argmin"][1]) == pytest.approx(1 / 3)
    assert head["nonfinite"] == 8 and head["n_points"] == 20
    one = headline(synthetic(1))
    assert one["loss_center"] == pytest.approx(0.1) and one["accuracy_center"] > 0.9
