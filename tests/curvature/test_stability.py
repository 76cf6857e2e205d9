"""The predicted largest stable learning rate, checked by running gradient descent on both sides."""

from __future__ import annotations

import math

import pytest
import torch

import lossatlas as la
from lossatlas.curvature.operator import HessianOperator
from lossatlas.curvature.stability import max_stable_lr, stable_lr
from lossatlas.problems.registry import linreg
from tests.oracles.hessian import planted_quadratic


def lambda_max(problem: la.Problem) -> float:
    op = HessianOperator(problem, method="double")
    return float(torch.linalg.eigvalsh(op.dense())[-1])


def run(problem: la.Problem, lr: float, momentum: float = 0.0) -> la.Trajectory:
    kwargs = {"momentum": momentum} if momentum else {}
    return la.descend(
        problem, optimizer="sgd", lr=lr, steps=600, optimizer_kwargs=kwargs, tol=1e-10
    )


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_quadratic_converges_below_and_diverges_above(momentum):
    model, data, loss, _ = planted_quadratic([4.0, 1.5, 0.3])
    problem = la.Problem(model, loss, data)
    bound = max_stable_lr(lambda_max(problem), momentum=momentum)
    assert bound == pytest.approx((2 + 2 * momentum) / 4.0, rel=1e-10)
    below, above = run(problem, 0.97 * bound, momentum), run(problem, 1.03 * bound, momentum)
    assert below.status == "converged", below.status
    assert above.status == "diverged", above.status


def test_linear_regression_threshold_is_two_over_lambda_max():
    problem = linreg()
    lam = lambda_max(problem)
    x = torch.linspace(0, 1, 100, dtype=torch.float64)
    A = torch.stack([x, torch.ones_like(x)], 1)
    assert lam == pytest.approx(float(torch.linalg.eigvalsh(2 / 100 * A.T @ A)[-1]), rel=1e-12)
    bound = max_stable_lr(lam)
    assert run(problem, 0.97 * bound).status == "converged"
    assert run(problem, 1.03 * bound).status == "diverged"


def test_record_compares_the_given_lr():
    r = stable_lr(4.0, lr=0.25, momentum=0.5)
    assert r.max_lr == 0.75 and r.ratio == pytest.approx(1 / 3) and r.stable
    assert "0.33 of it: stable" in r.describe()
    assert not stable_lr(4.0, lr=0.6).stable
    assert stable_lr(-1.0).max_lr == math.inf and stable_lr(2.0).stable is None


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"lambda_max": math.nan}, "finite"),
        ({"lambda_max": 1.0, "momentum": 1.0}, "momentum"),
        ({"lambda_max": 1.0, "momentum": -0.1}, "momentum"),
        ({"lambda_max": 1.0, "lr": 0.0}, "lr must be"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(la.LossatlasError, match=match):
        stable_lr(**args)
