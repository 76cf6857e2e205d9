"""`headline()` of the minima records, against the records' own fields computed by hand."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from lossatlas.io import storage


def as_json(head: dict[str, Any]) -> dict[str, Any]:
    """The headline through JSON (NaN allowed): it must serialise, and keep its keys."""
    back = json.loads(json.dumps(head, allow_nan=True))
    assert list(back) == list(head)
    return back


def problem(seed: int = 0, n: int = 32) -> la.Problem:
    """A 1-4-1 tanh net fitting a sine: small, with minima that differ from seed to seed."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = 4 * torch.rand(n, 1, generator=gen, dtype=torch.float64) - 2
    y = torch.sin(2 * x) + 0.1 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    return la.Problem(model, nn.MSELoss(), (x, y), dtype="float64")


@pytest.fixture(scope="module")
def runs() -> list[la.TrainedModel]:
    return la.train_runs(problem(), seeds=[0, 1, 2], steps=60, batch_size=8, lr=0.2, quiet=True)


def chord_barrier(t: np.ndarray, loss: np.ndarray) -> float:
    """max over t in [0, 1] of the loss above the straight chord between its ends, by hand."""
    a, b = float(loss[t == 0][0]), float(loss[t == 1][0])
    return max(v - ((1 - s) * a + s * b) for s, v in zip(t.tolist(), loss.tolist()) if 0 <= s <= 1)


def test_interpolation_headline(runs: list[la.TrainedModel], tmp_path: Path) -> None:
    line = la.interpolate(problem(), runs[0], runs[1], steps=11, margin=0.2)
    head = as_json(line.headline())
    assert head["loss_barrier"] == pytest.approx(chord_barrier(line.t, line.loss), abs=1e-12)
    assert head["loss_barrier"] > 0  # two different minima of a non-convex loss
    inside = [(v, s) for s, v in zip(line.t.tolist(), line.loss.tolist()) if 0 <= s <= 1]
    assert head["loss_a"] == line.loss[line.t == 0][0] and head["loss_b"] == inside[-1][0]
    assert head["argmax_t"] == line.argmax_t and 0 <= head["argmax_t"] <= 1
    values = [v for v, _ in inside]
    assert head["monotonic"] == all(b <= a for a, b in pairwise(values))
    assert head["names"] == list(line.names) and head["error_barrier"] is None
    loaded = storage.load(storage.save(line, tmp_path / "line.h5"))
    assert as_json(loaded.headline()) == head


def test_barrier_matrix_headline(runs: list[la.TrainedModel]) -> None:
    matrix = la.barrier_matrix(problem(), runs, steps=11, quiet=True)
    head = as_json(matrix.headline())
    pairs = [matrix.loss_barrier[i, j] for i in range(3) for j in range(i + 1, 3)]
    assert head["models"] == 3
    assert head["loss_barrier_max"] == max(pairs) and head["loss_barrier_min"] == min(pairs)
    assert head["loss_barriers"] == matrix.loss_barrier.tolist()
    assert head["endpoint_loss"] == matrix.endpoint_loss.tolist()
    assert head["error_barrier_max"] is None  # a regression: no error metric
    one = la.BarrierMatrix(("a",), np.zeros((1, 1)), None, np.ones(1))
    assert as_json(one.headline())["loss_barrier_max"] is None


def test_curve_and_curve_losses_headlines(runs: list[la.TrainedModel], tmp_path: Path) -> None:
    curve = la.fit_curve(problem(), runs[0], runs[1], steps=5, lr=0.01, quiet=True)
    head = as_json(curve.headline())
    loss = curve.history["loss"]
    assert (head["kind"], head["bends"], head["steps"]) == ("bezier", 1, len(loss))
    assert head["first_loss"] == loss[0] and head["final_loss"] == loss[-1]

    along = la.curve_losses(problem(), curve, steps=9)
    head = as_json(along.headline())
    assert head["barrier"] == pytest.approx(chord_barrier(along.t, along.loss), abs=1e-12)
    assert head["line_barrier"] == pytest.approx(chord_barrier(along.t, along.line_loss), abs=1e-12)
    assert head["loss_max"] == max(along.loss.tolist())
    assert head["line_loss_max"] == max(along.line_loss.tolist())
    loaded = storage.load(storage.save(along, tmp_path / "along.h5"))
    assert as_json(loaded.headline()) == head


def test_minima_comparison_headline(runs: list[la.TrainedModel]) -> None:
    cmp = la.compare_minima(problem(), runs, val=problem(seed=5), samples=3, quiet=True)
    head = as_json(cmp.headline())
    rows = cmp.rows()
    assert head["models"] == 3 and head["names"] == [r["name"] for r in rows]
    for key in ("train_loss", "val_loss", "gap", "lambda_max", "epsilon_sharpness"):
        assert head[key] == [r[key] for r in rows]
    assert head["gap"] == [v - t for v, t in zip(head["val_loss"], head["train_loss"])]
    d = cmp.relative_distances
    assert head["max_relative_distance"] == max(d[0, 1], d[0, 2], d[1, 2]) > 0


def test_flat_sharp_headline() -> None:
    study = la.flat_vs_sharp(
        problem(), problem(seed=5), small_batch=4, steps=20, line_steps=5, quiet=True
    )
    head = as_json(study.headline())
    c = study.comparison
    assert (head["small_batch"], head["large_batch"]) == (4, 32)
    assert head["lambda_max"] == c.lambda_max.tolist() and head["gap"] == c.gap.tolist()
    assert head["train_loss"] == c.train_loss.tolist() and head["val_loss"] == c.val_loss.tolist()
    assert head["sharper"] == ("large" if c.lambda_max[1] > c.lambda_max[0] else "small")
    assert f"the {head['sharper']}-batch minimum is sharper" in study.summary()
