"""The edge-of-stability tracker: lambda_max at the live weights, against (2 + 2 beta) / lr."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import lossatlas as la
from lossatlas.curvature.edge import EdgeOfStability
from tests.oracles.cases import build_case
from tests.oracles.hessian import dense_hessian


def train(every: int, momentum: float = 0.0, scheduled: bool = False):
    case = build_case("mlp")
    model = case.model.double().train()
    X, y = case.X.double(), case.y
    problem = la.Problem(model, nn.CrossEntropyLoss(), (X, y))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=momentum)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=6, gamma=0.5) if scheduled else None
    tracker = EdgeOfStability(problem, model, every=every, optimizer=opt, tol=1e-8)
    exact = []
    for step in range(12):
        if tracker.record(step) is not None:
            h = dense_hessian(model, nn.CrossEntropyLoss(), X, y)
            exact.append(float(torch.linalg.eigvalsh(h)[-1]))
        loss = nn.functional.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched:
            sched.step()
    return tracker, np.array(exact), model


def test_estimates_are_the_top_eigenvalue_at_the_live_weights():
    tracker, exact, _ = train(every=4)
    h = tracker.history
    np.testing.assert_array_equal(h.steps, [0, 4, 8])
    np.testing.assert_allclose(h.lambda_max, exact, rtol=1e-6)
    np.testing.assert_allclose(h.threshold, 2 / 0.5)
    assert h.converged.all() and (h.hvps > 0).all()
    np.testing.assert_allclose(h.ratio, exact / 4.0, rtol=1e-6)


def test_threshold_follows_the_schedule_and_momentum():
    h = train(every=3, momentum=0.5, scheduled=True)[0].history
    np.testing.assert_allclose(h.lr, [0.5, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(h.threshold, 3 / h.lr)


def test_plot_and_bad_input(tmp_path):
    tracker, _, model = train(every=4)
    with Image.open(la.plot_edge(tracker, tmp_path / "eos.png", dpi=50)) as im:
        assert im.size == (350, 225)
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 20
    problem = la.Problem(
        model, nn.CrossEntropyLoss(), (torch.randn(4, 4).double(), torch.arange(4) % 3)
    )
    for kwargs, match in [
        ({"every": 0, "lr": 0.1}, "every"),
        ({}, "either optimizer"),
        ({"lr": -1.0}, "lr must be"),
        ({"lr": 0.1, "momentum": 1.5}, "momentum"),
        ({"lr": 0.1, "params": "nope"}, "no parameter or module"),
    ]:
        with pytest.raises(la.LossatlasError, match=match):
            EdgeOfStability(problem, model, **kwargs)
    with pytest.raises(la.LossatlasError, match="nothing recorded"):
        la.figure_edge(EdgeOfStability(problem, model, lr=0.1))
