"""Built-in teaching problems against their closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lossatlas as la
from lossatlas.problems.registry import PROBLEMS, get_problem, linreg, one_weight


def test_one_weight_loss_and_slope_are_the_closed_forms():
    problem = one_weight()
    dirs = la.axis_directions(problem, ["weight[0, 0]"])
    land = la.surface(problem, dirs, steps=9, span=(-1.5, 2.5), slopes=True, quiet=True)
    w = 0.5 + land.coords[0]
    np.testing.assert_allclose(land.loss, (w * 2 - 4) ** 2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(land.slopes[:, 0], 2 * (2 * w - 4) * 2, rtol=1e-12, atol=1e-12)
    assert land.argmin() == (1.5,)  # w = y / x = 2


def test_linreg_data_model_and_descent():
    problem = linreg()
    x, y = next(problem.batches())
    assert x.shape == (100, 1) and problem.dtype == torch.float64
    coef = np.polyfit(x[:, 0].numpy(), y[:, 0].numpy(), 1)
    assert abs(coef[0] - 2) < 0.1 and abs(coef[1] - 1) < 0.1  # the generating line
    state = torch.random.get_rng_state()
    again = linreg()
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert all(torch.equal(a, b) for a, b in zip(problem.params.values(), again.params.values()))
    # lambda_max of the MSE Hessian 2/n X^T X with X = [x, 1]; GD converges below 2/lambda_max.
    design = torch.cat([x, torch.ones_like(x)], 1)
    lam = float(torch.linalg.eigvalsh(2 / len(x) * design.T @ design).max())
    assert la.descend(problem, lr=0.95 * 2 / lam, steps=3000, tol=1e-9).status == "converged"
    assert la.descend(problem, lr=1.05 * 2 / lam, steps=3000).status == "diverged"


def test_registry_and_bad_arguments():
    assert {"one-weight", "linreg", "digits-mlp"} <= set(PROBLEMS)
    assert get_problem("one-weight").n_params == 1
    for make, kwargs in ((one_weight, {"x": float("nan")}), (linreg, {"n": 1})):
        with pytest.raises(la.LossatlasError) as info:
            make(**kwargs)
        assert "\n" not in str(info.value)
