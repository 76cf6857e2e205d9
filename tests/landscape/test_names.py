"""Metric names and path labels round-trip exactly through surface files and resumes."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

import lossatlas as la

# TensorBoard-style, rooted, HDF5-special, NUL, non-ASCII and lone-surrogate names
NAMES = ["acc/top1", "/abs", ".", "..", "a\0b", "ü ß", "\ud800", "metrics/0"]


def _problem() -> la.Problem:
    base = la.linreg(n=8)
    metrics = {
        name: (lambda o, y, i=i: ((o - y) ** 2).mean() * (i + 1)) for i, name in enumerate(NAMES)
    }
    return la.Problem(base.model, nn.MSELoss(), next(base.batches()), metrics=metrics)


def test_any_metric_name_round_trips_and_resumes(tmp_path) -> None:
    problem = _problem()
    dirs = la.random_directions(problem, 1, seed=0)
    out = tmp_path / "s.h5"
    first = la.surface(problem, dirs, steps=3, quiet=True, out=out)
    again = la.surface(problem, dirs, steps=3, quiet=True, out=out)  # reads the file back
    loaded = la.load(out)
    assert list(loaded.metrics) == NAMES == list(again.metrics)
    for i, name in enumerate(NAMES):
        np.testing.assert_array_equal(loaded.metrics[name], first.metrics[name])
        np.testing.assert_allclose(loaded.metrics[name], first.loss * (i + 1), rtol=1e-12)
    labelled = la.with_paths(loaded, {name: np.zeros((2, 1)) for name in NAMES})
    assert list(la.load(labelled.save(tmp_path / "p.h5")).paths) == NAMES


@pytest.mark.parametrize("name", ["", 3, None])
def test_an_empty_or_non_string_metric_name_is_refused_up_front(name) -> None:
    base = la.linreg(n=8)
    with pytest.raises(la.LossatlasError, match="metric names must be non-empty strings"):
        la.Problem(base.model, nn.MSELoss(), next(base.batches()), metrics={name: la.accuracy})
