"""`headline()` of the landscape records, against the records' own fields computed by hand."""

from __future__ import annotations

import json
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


def test_surface_headline_matches_its_grid() -> None:
    problem = la.linreg()
    land = la.surface(problem, la.random_directions(problem, 2, seed=0), 5, quiet=True)
    head = as_json(land.headline())
    i, j = np.unravel_index(np.argmin(land.loss), land.loss.shape)
    assert head["loss_center"] == land.loss[2, 2]
    assert head["loss_min"] == land.loss.min()
    assert head["argmin"] == [land.coords[0][i], land.coords[1][j]]
    assert head["n_points"] == 25 and head["nonfinite"] == 0


def two_input_problem() -> la.Problem:
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(20, 2, generator=gen, dtype=torch.float64)
    return la.Problem(model, nn.MSELoss(), (x, x.sum(1, keepdim=True)), dtype="float64")


def test_input_surface_headline() -> None:
    land = la.input_surface(two_input_problem(), plane="random", steps=(5, 4), quiet=True)
    head = as_json(land.headline())
    i, j = np.unravel_index(np.argmin(land.loss), land.loss.shape)
    assert head["loss_min"] == land.loss.min() and head["loss_max"] == land.loss.max()
    assert head["argmin"] == [land.coords[0][i], land.coords[1][j]]
    assert head["n_points"] == 20 and head["nonfinite"] == 0 and head["plane"] == "random"


def test_input_surface_headline_skips_non_finite_points() -> None:
    loss = np.array([[np.nan, 3.0], [np.inf, 2.0]])
    coords = (np.array([0.0, 1.0]), np.array([5.0, 6.0]))
    land = la.InputSurface(coords, loss, None, ("x", "y"), None)
    head = as_json(land.headline())
    assert (head["loss_min"], head["loss_max"], head["argmin"]) == (2.0, 3.0, [1.0, 6.0])
    assert head["nonfinite"] == 2
    empty = la.InputSurface(coords, np.full((2, 2), np.nan), None, ("x", "y"), None)
    assert as_json(empty.headline())["loss_min"] is None


def test_pca_and_path_losses_headlines(tmp_path: Path) -> None:
    problem = la.linreg()
    run = la.descend(problem, optimizer="sgd", lr=0.05, steps=12)
    pca = la.pca_directions(run, n=2)
    head = as_json(pca.headline())
    ratio = pca.explained_variance_ratio
    assert head["explained_variance_ratio"] == ratio.tolist()
    assert head["explained_total"] == pytest.approx(ratio[0] + ratio[1], rel=1e-15)
    assert head["n_checkpoints"] == len(run.loss) == 13
    assert head["max_off_plane"] == max(pca.off_plane.tolist())
    assert head["n_params"] == problem.n_params

    path = la.path_losses(problem, pca)
    head = as_json(path.headline())
    gaps = [abs(a - b) for a, b in zip(path.true_loss.tolist(), path.plane_loss.tolist())]
    assert head["max_loss_gap"] == max(gaps)
    assert (
        head["true_loss_start"] == path.true_loss[0] and head["true_loss_end"] == path.true_loss[-1]
    )
    assert head["plane_loss_end"] == path.plane_loss[-1]
    assert head["true_loss_end"] == pytest.approx(run.loss[-1], rel=1e-12)  # the trained model
    assert head["n_checkpoints"] == 13

    loaded = storage.load(storage.save(path, tmp_path / "path.h5"))
    assert as_json(loaded.headline()) == head


def test_headlines_survive_storage(tmp_path: Path) -> None:
    land = la.input_surface(
        two_input_problem(),
        plane="features",
        steps=4,
        quiet=True,
        target=lambda x: x.sum(1, keepdim=True),
    )
    loaded = storage.load(storage.save(land, tmp_path / "in.h5"))
    assert as_json(loaded.headline()) == as_json(land.headline())
