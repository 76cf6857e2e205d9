"""Sharpness measures against brute force, closed forms and direct evaluation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from lossatlas.curvature.average import AverageSharpness, average_sharpness
from lossatlas.curvature.operator import HessianOperator
from lossatlas.curvature.sharpness import (
    AdaptiveSharpness,
    EpsilonSharpness,
    adaptive_sharpness,
    epsilon_sharpness,
)
from tests.oracles.cases import build_case


class ShiftedQuadraticLoss(nn.Module):
    """`0.5 sum_i y_i0 (x_i . w - y_i1)^2`: with rows `q_i`, `y = (lambda_i, q_i . m)` this is
    `0.5 (w - m)^T Q diag(lambda) Q^T (w - m)`."""

    reduction = "sum"

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * (y[:, 0] * (out.squeeze(-1) - y[:, 1]) ** 2).sum()


def quadratic(lam, *, at, minimum, Q=None):
    """A Problem whose loss is `0.5 (w - minimum)^T A (w - minimum)` at `w = at`, and `A`."""
    lam = torch.as_tensor(lam, dtype=torch.float64)
    d = len(lam)
    Q = torch.eye(d, dtype=torch.float64) if Q is None else Q
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(at, dtype=torch.float64).reshape(1, d))
    y = torch.stack([lam, Q.T @ torch.as_tensor(minimum, dtype=torch.float64)], dim=1)
    A = Q @ torch.diag(lam) @ Q.T
    return la.Problem(model, ShiftedQuadraticLoss(), (Q.T.contiguous(), y)), A


def q_loss(A, w, m) -> float:
    return float(0.5 * (w - m) @ A @ (w - m))


def rng_vectors(n: int, d: int, seed: int) -> torch.Tensor:
    """`n` standard normal vectors, drawn one at a time as `average_sharpness` draws them."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(d, generator=g, dtype=torch.float64) for _ in range(n)])


def classification(name: str = "mlp", batch: int = 16, train: int = 0) -> la.Problem:
    """A classification problem with error and accuracy, after `train` full-batch Adam steps."""
    case = build_case(name)
    if train:
        model = case.model.train()
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(train):
            opt.zero_grad()
            nn.functional.cross_entropy(model(case.X), case.y).backward()
            opt.step()
        model.eval()
    metrics = {"error": la.error, "accuracy": la.accuracy}
    return la.Problem(
        case.model, nn.CrossEntropyLoss(), case.batches(batch), metrics=metrics, dtype="float64"
    )


# -- epsilon-sharpness -------------------------------------------------------------------------
@pytest.mark.parametrize("d", [4, 6])
@pytest.mark.parametrize("at_minimum", [False, True])
def test_epsilon_sharpness_matches_brute_force_over_the_box_vertices(d, at_minimum):
    g = rng_vectors(3, d, seed=d)
    lam, m = g[0].abs() + 0.1, g[1]
    w0 = m if at_minimum else m + 0.3 * g[2]
    problem, A = quadratic(lam, at=w0, minimum=m)
    eps = 0.05
    r = eps * (w0.abs() + 1)
    best = max(
        q_loss(A, w0 + torch.tensor(s, dtype=torch.float64) * r, m)
        for s in itertools.product([-1.0, 1.0], repeat=d)
    )
    s = epsilon_sharpness(problem, epsilon=eps)
    base = q_loss(A, w0, m)
    assert isinstance(s, EpsilonSharpness) and s.random_start == at_minimum
    assert s.loss == pytest.approx(base, rel=1e-12, abs=1e-15)
    assert s.loss_increase == pytest.approx(best - base, rel=1e-8)
    assert s.value == pytest.approx(100 * (best - base) / (1 + base), rel=1e-8)
    assert s.z_norm == pytest.approx(float(r.norm()), rel=1e-8)
    assert s.iterations <= 10 and s.evaluations >= 3 and s.metric_change == {}


def test_epsilon_sharpness_reports_metric_changes_at_the_maximiser():
    problem = classification(train=200)
    s = epsilon_sharpness(problem, epsilon=0.5, max_iter=5)
    assert s.loss_increase > 0 and s.value > 0
    assert set(s.metric_change) == {"error", "accuracy"}
    assert s.metric_change["error"] == pytest.approx(-s.metric_change["accuracy"], abs=1e-12)
    assert s.metric_change["error"] > 0  # a large worst-case box breaks some predictions
    assert s.metrics["error"] == pytest.approx(1 - s.metrics["accuracy"], abs=1e-12)
    assert s.settings["epsilon"] == 0.5 and "L-BFGS-B" in s.settings["optimizer"]


# -- average sharpness -------------------------------------------------------------------------
def planted(d=12, seed=0, at_minimum=False):
    """A quadratic with a planted spectrum (0.2 ... 5) and random eigenvectors."""
    g = rng_vectors(3, d, seed=seed)
    Q = torch.linalg.qr(rng_vectors(d, d, seed=seed + 1)).Q
    lam = torch.linspace(0.2, 5.0, d, dtype=torch.float64)
    m = g[0]
    w0 = m if at_minimum else m + 0.5 * g[1]
    problem, A = quadratic(lam, at=w0, minimum=m, Q=Q)
    return problem, A, w0, m


@pytest.mark.parametrize("adaptive", [False, True])
def test_average_sharpness_closed_form_on_a_quadratic(adaptive):
    problem, A, w0, _ = planted()
    sigma = 0.1
    expected = sigma**2 / 2 * (float((torch.diag(A) * w0**2).sum()) if adaptive else trace(A))
    small = average_sharpness(problem, sigma=sigma, n_samples=100, adaptive=adaptive, seed=1)
    large = average_sharpness(problem, sigma=sigma, n_samples=1600, adaptive=adaptive, seed=2)
    for s in (small, large):
        assert isinstance(s, AverageSharpness)
        assert abs(s.value - expected) < 4 * s.stderr
        assert s.ci[0] < s.value < s.ci[1] and s.evaluations == s.n_samples + 1
    assert 3.0 < small.stderr / large.stderr < 5.3  # 1/sqrt(n): sqrt(16) = 4


def trace(A: torch.Tensor) -> float:
    return float(torch.trace(A))


def test_average_sharpness_evaluates_exactly_the_drawn_points():
    problem, A, w0, m = planted(d=6)
    s = average_sharpness(problem, sigma=0.3, n_samples=7, seed=5, adaptive=True)
    noise = rng_vectors(7, 6, seed=5)  # one vector per sample from the seeded generator
    rises = [q_loss(A, w0 + w0.abs() * 0.3 * e, m) - q_loss(A, w0, m) for e in noise]
    assert s.value == pytest.approx(float(np.mean(rises)), rel=1e-10)
    assert s.stderr == pytest.approx(float(np.std(rises, ddof=1)) / math.sqrt(7), rel=1e-8)


@pytest.mark.parametrize(("name", "options"), [("cnn_bn", {}), ("mlp", {"data": 20})])
def test_average_sharpness_agrees_with_direct_evaluation_and_reports_metrics(name, options):
    problem = classification(name)
    op = HessianOperator(problem, **options)
    s = average_sharpness(op, sigma=0.3, n_samples=6, seed=3, memory_budget="1MB")
    center = op.metrics()
    values = [op.metrics(0.3 * e) for e in rng_vectors(6, op.dim, seed=3)]
    for key in ("loss", "error", "accuracy"):
        expected = np.mean([v[key] for v in values]) - center[key]
        got = s.value if key == "loss" else s.metric_change[key]
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), key
    assert s.metrics["error"] == pytest.approx(center["error"])
    assert s.settings["n_samples"] == 6 and s.settings["operator"]["dim"] == op.dim


def test_average_sharpness_perturbs_only_the_chosen_parameters():
    problem = classification()
    s = average_sharpness(problem, sigma=0.5, n_samples=4, seed=0, params="2")
    op = HessianOperator(problem, params="2")
    rises = [op.metrics(0.5 * e)["loss"] for e in rng_vectors(4, op.dim, seed=0)]
    assert s.value == pytest.approx(np.mean(rises) - op.metrics()["loss"], rel=1e-10)
    assert s.settings["operator"]["params"] == ["2.weight", "2.bias"]


# -- worst-case adaptive sharpness -------------------------------------------------------------
def test_adaptive_sharpness_at_a_minimum_is_the_top_eigenvalue_of_T_A_T():
    problem, A, w0, _ = planted(d=8, at_minimum=True)
    T = torch.diag(w0.abs())
    rho = 0.05
    expected = rho**2 / 2 * float(torch.linalg.eigvalsh(T @ A @ T)[-1])
    # Near the maximum, p = 2 steps are shifted power iterations on T A T; its eigenvalue ratio
    # here is 0.76, so 20 steps leave a 3e-3 relative error and 50 steps 1e-6.
    s = adaptive_sharpness(problem, rho=rho, steps=50)
    assert isinstance(s, AdaptiveSharpness) and s.random_start
    assert s.value == pytest.approx(expected, rel=1e-5)
    assert adaptive_sharpness(problem, rho=rho).value == pytest.approx(expected, rel=5e-3)
    assert s.epsilon_norm == pytest.approx(rho, rel=1e-12) and s.steps == 50
    assert s.evaluations == 50 + 4  # centre: metrics and gradient; the start; the best point


@pytest.mark.parametrize("at_minimum", [True, False])
def test_adaptive_sharpness_with_p_inf_matches_brute_force_on_a_separable_quadratic(at_minimum):
    d, rho = 5, 0.1
    g = rng_vectors(3, d, seed=11)
    lam, m = g[0].abs() + 0.1, g[1]
    w0 = m if at_minimum else m + 0.3 * g[2]
    problem, A = quadratic(lam, at=w0, minimum=m)
    T = w0.abs()
    best = max(
        q_loss(A, w0 + T * rho * torch.tensor(s, dtype=torch.float64), m)
        for s in itertools.product([-1.0, 1.0], repeat=d)
    )
    s = adaptive_sharpness(problem, rho=rho, p=math.inf, steps=5)
    assert s.value == pytest.approx(best - q_loss(A, w0, m), rel=1e-10)
    assert s.epsilon_norm == pytest.approx(rho) and s.random_start == at_minimum


def test_adaptive_sharpness_reports_metric_changes_and_grows_with_rho():
    problem = classification(train=200)
    small = adaptive_sharpness(problem, rho=0.05, steps=5)
    large = adaptive_sharpness(problem, rho=1.0, steps=5)
    assert 0 < small.value < large.value and not large.random_start
    assert set(large.metric_change) == {"error", "accuracy"}
    assert large.metric_change["error"] == pytest.approx(-large.metric_change["accuracy"])
    assert large.metric_change["error"] > 0
    assert large.epsilon_norm <= 1.0 + 1e-12 and large.delta_norm > 0


# -- re-parametrisation invariance (Dinh et al. 2017) ------------------------------------------
def relu_mlp_problem(alpha: float) -> la.Problem:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    X, y = torch.randn(58, 4, dtype=torch.float64), torch.randint(0, 3, (58,))
    with torch.no_grad():
        model[0].weight.mul_(alpha)
        model[0].bias.mul_(alpha)
        model[2].weight.div_(alpha)
    return la.Problem(model, nn.CrossEntropyLoss(), (X, y))


def test_adaptive_measures_are_invariant_to_relu_rescaling_while_lambda_max_is_not():
    problems = {a: relu_mlp_problem(a) for a in (1.0, 4.0, 0.3)}
    ops = {a: HessianOperator(p) for a, p in problems.items()}
    lam_max = {a: float(torch.linalg.eigvalsh(op.dense())[-1]) for a, op in ops.items()}
    losses = {a: op.metrics()["loss"] for a, op in ops.items()}
    measures = {
        "worst-case p=2": lambda p: adaptive_sharpness(p, rho=0.1).value,
        "worst-case p=inf": lambda p: adaptive_sharpness(p, rho=0.05, p=math.inf).value,
        "adaptive average": lambda p: (
            average_sharpness(p, sigma=0.1, n_samples=20, adaptive=True).value
        ),
    }
    values = {k: {a: f(p) for a, p in problems.items()} for k, f in measures.items()}
    plain = {a: average_sharpness(p, sigma=0.1, n_samples=20).value for a, p in problems.items()}
    for a in (4.0, 0.3):
        assert losses[a] == pytest.approx(losses[1.0], rel=1e-12)  # the same function
        assert abs(lam_max[a] / lam_max[1.0] - 1) > 0.2  # but not the same curvature
        assert abs(plain[a] / plain[1.0] - 1) > 0.2
        for k, v in values.items():
            assert v[a] == pytest.approx(v[1.0], rel=1e-6), k
    assert all(v[1.0] > 0 for v in values.values())


# -- the user's model and bad input ------------------------------------------------------------
def test_the_users_model_is_untouched():
    case = build_case("cnn_bn")
    before = {k: v.clone() for k, v in case.model.state_dict().items()}
    problem = la.Problem(case.model, nn.CrossEntropyLoss(), (case.X, case.y), dtype="float64")
    epsilon_sharpness(problem, max_iter=2)
    average_sharpness(problem, n_samples=3, quiet=True)
    adaptive_sharpness(problem, steps=2)
    for k, v in case.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert case.model.conv1.weight.dtype == torch.float32 and not case.model.training


@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        (epsilon_sharpness, {"epsilon": 0}, "epsilon must be a positive"),
        (epsilon_sharpness, {"epsilon": -1e-3}, "epsilon must be a positive"),
        (epsilon_sharpness, {"epsilon": math.nan}, "epsilon must be a positive"),
        (epsilon_sharpness, {"max_iter": 0}, "max_iter must be an integer"),
        (adaptive_sharpness, {"rho": 0}, "rho must be a positive"),
        (adaptive_sharpness, {"rho": "big"}, "rho must be a positive"),
        (adaptive_sharpness, {"p": 1}, "p must be 2 or math.inf"),
        (adaptive_sharpness, {"p": "inf"}, "p must be 2 or math.inf"),
        (adaptive_sharpness, {"steps": 0}, "steps must be an integer"),
        (adaptive_sharpness, {"step_size": -1.0}, "step_size must be a positive"),
        (adaptive_sharpness, {"eta": -0.1}, "eta must be a non-negative"),
        (average_sharpness, {"n_samples": 1}, "n_samples must be an integer of at least 2"),
        (average_sharpness, {"n_samples": 2.5}, "n_samples must be an integer"),
        (average_sharpness, {"sigma": 0.0}, "sigma must be a positive"),
        (average_sharpness, {"params": "nope"}, "no parameter or module named 'nope'"),
    ],
)
def test_bad_input_is_refused_in_one_line(fn, kwargs, match):
    problem, *_ = planted(d=3)
    with pytest.raises(la.LossatlasError, match=match) as info:
        fn(problem, **kwargs)
    assert "\n" not in str(info.value)
