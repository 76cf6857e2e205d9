"""Optimizer runs (`descend`, `sweep`, `compare`) against closed forms and hand-written updates."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from lossatlas.descent.comparison import compare
from lossatlas.descent.run import POSITION_BUDGET, Trajectory, descend
from lossatlas.descent.sweeps import sweep
from tests.oracles.cases import build_case
from tests.oracles.landscape import evaluate

# -- objectives and their hand-written gradients ---------------------------------------------
M = np.array([2.0, -3.0])


def bowl(p: torch.Tensor) -> torch.Tensor:
    """(x - 2)^2 + (y + 3)^2, minimum at (2, -3)."""
    return (p[..., 0] - 2) ** 2 + (p[..., 1] + 3) ** 2


def rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


LAMBDAS = (1.0, 10.0)
A = rotation(0.6) @ np.diag(LAMBDAS) @ rotation(0.6).T  # eigenvalues 1 and 10, not axis-aligned
A_T = torch.from_numpy(A)


def quadratic(p: torch.Tensor) -> torch.Tensor:
    """0.5 p^T A p."""
    return 0.5 * p @ A_T @ p


def banana(p: torch.Tensor) -> torch.Tensor:
    """(1 - x)^2 + 5 (y - x^2)^2: curved, so update rules are tested off the quadratic case."""
    return (1 - p[0]) ** 2 + 5 * (p[1] - p[0] ** 2) ** 2


def banana_grad(p: np.ndarray) -> np.ndarray:
    x, y = p
    return np.array([-2 * (1 - x) - 20 * x * (y - x**2), 10 * (y - x**2)])


def banana_np(p: np.ndarray) -> float:
    return float((1 - p[0]) ** 2 + 5 * (p[1] - p[0] ** 2) ** 2)


# -- plain gradient descent: closed forms ----------------------------------------------------
def test_gradient_descent_matches_closed_form():
    lr, p0 = 0.2, np.array([-5.0, 5.0])
    t = descend(bowl, [-5.0, 5.0], optimizer="sgd", lr=lr, steps=15, tol=0.0)
    k = np.arange(16)[:, None]
    expected = M + (1 - 2 * lr) ** k * (p0 - M)
    assert t.positions.shape == (16, 2) and t.positions.dtype == np.float64
    np.testing.assert_allclose(t.positions, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(t.loss, ((expected - M) ** 2).sum(1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(t.grad_norm, 2 * np.linalg.norm(expected - M, axis=1), atol=1e-12)
    np.testing.assert_array_equal(t.lr, np.full(15, lr))
    assert t.status == "max_steps" and t.steps_taken == 15 and len(t.loss) == 16
    np.testing.assert_array_equal(t.final_position, t.positions[-1])
    assert t.final_loss == t.loss[-1]


@pytest.mark.parametrize(
    ("optimizer", "beta"), [("sgd", 0.0), ("momentum", 0.9), (torch.optim.SGD, 0.5)]
)
def test_stability_threshold_of_a_quadratic(optimizer, beta):
    """GD / heavy ball on 0.5 p^T A p is stable iff lr < (2 + 2 beta) / lambda_max."""
    kwargs = {"momentum": 0.5} if optimizer is torch.optim.SGD else None
    threshold = (2 + 2 * beta) / max(LAMBDAS)
    start = [3.0, -1.0]
    ok = descend(
        quadratic,
        start,
        optimizer=optimizer,
        optimizer_kwargs=kwargs,
        lr=0.95 * threshold,
        steps=3000,
        tol=1e-9,
    )
    assert ok.status == "converged", ok
    assert ok.grad_norm[-1] <= 1e-9 < ok.grad_norm[-2]
    assert np.linalg.norm(ok.final_position) < 1e-8  # |p| <= |grad| / lambda_min

    bad = descend(
        quadratic,
        start,
        optimizer=optimizer,
        optimizer_kwargs=kwargs,
        lr=1.05 * threshold,
        steps=3000,
    )
    assert bad.status == "diverged", bad
    assert bad.steps_taken < 3000 and len(bad.positions) == len(bad.loss) == bad.steps_taken + 1
    limit = 1e6 * max(1.0, bad.loss[0])
    assert not bad.loss[-1] <= limit and (bad.loss[:-1] <= limit).all()
    # The kept history is the heavy-ball iteration p+ = p - lr A p + beta (p - p-), by hand.
    lr, p, prev = 1.05 * threshold, np.array(start), np.array(start)
    for k in range(1, bad.steps_taken + 1):
        p, prev = p - lr * A @ p + beta * (p - prev), p
        np.testing.assert_allclose(bad.positions[k], p, rtol=1e-9)


# -- update rules against hand-written references --------------------------------------------
def ref_momentum(lr, mu=0.9, nesterov=False):
    buf = None

    def step(p, g):
        nonlocal buf
        buf = g.copy() if buf is None else mu * buf + g
        return p - lr * (g + mu * buf if nesterov else buf)

    return step


def ref_adam(lr, b1=0.9, b2=0.999, eps=1e-8, decoupled_wd=0.0):
    m = v = 0.0
    t = 0

    def step(p, g):
        nonlocal m, v, t
        t += 1
        p = p * (1 - lr * decoupled_wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        return p - lr * m_hat / (np.sqrt(v_hat) + eps)

    return step


def ref_rmsprop(lr, alpha=0.99, eps=1e-8):
    sq = 0.0

    def step(p, g):
        nonlocal sq
        sq = alpha * sq + (1 - alpha) * g * g
        return p - lr * g / (np.sqrt(sq) + eps)

    return step


def ref_adagrad(lr, eps=1e-10):
    acc = 0.0

    def step(p, g):
        nonlocal acc
        acc = acc + g * g
        return p - lr * g / (np.sqrt(acc) + eps)

    return step


@pytest.mark.parametrize(
    ("name", "kwargs", "reference"),
    [
        ("momentum", None, ref_momentum(0.02)),
        ("Nesterov", None, ref_momentum(0.02, nesterov=True)),
        ("momentum", {"momentum": 0.5}, ref_momentum(0.02, mu=0.5)),
        ("adam", None, ref_adam(0.02)),
        ("adam", {"betas": (0.8, 0.99)}, ref_adam(0.02, b1=0.8, b2=0.99)),
        ("adamw", {"weight_decay": 0.1}, ref_adam(0.02, decoupled_wd=0.1)),
        ("rmsprop", None, ref_rmsprop(0.02)),
        ("adagrad", None, ref_adagrad(0.02)),
    ],
)
def test_update_rules_match_textbook_formulas(name, kwargs, reference):
    t = descend(banana, [-1.2, 1.0], optimizer=name, optimizer_kwargs=kwargs, lr=0.02, steps=12)
    p = np.array([-1.2, 1.0])
    expected, losses = [p], [banana_np(p)]
    for _ in range(12):
        p = reference(p, banana_grad(p))
        expected.append(p)
        losses.append(banana_np(p))
    np.testing.assert_allclose(t.positions, np.array(expected), rtol=0, atol=1e-12)
    np.testing.assert_allclose(t.loss, losses, rtol=1e-12, atol=1e-13)
    grads = np.array([np.linalg.norm(banana_grad(q)) for q in expected])
    np.testing.assert_allclose(t.grad_norm, grads, rtol=1e-12)


def test_lbfgs_one_iteration_per_step():
    t = descend(
        quadratic,
        [3.0, -1.0],
        optimizer="lbfgs",
        lr=1.0,
        optimizer_kwargs={"line_search_fn": "strong_wolfe"},
        steps=50,
    )
    assert t.status == "converged" and t.steps_taken <= 10  # gradient descent needs ~200
    np.testing.assert_allclose(t.final_position, 0.0, atol=1e-8)
    assert t.provenance["n_evals"] >= t.steps_taken + 1  # the line search evaluates more
    r = descend(
        banana,
        [-1.2, 1.0],
        optimizer="LBFGS",
        lr=1.0,
        optimizer_kwargs={"line_search_fn": "strong_wolfe"},
        steps=200,
    )
    assert r.status == "converged"
    np.testing.assert_allclose(r.final_position, [1.0, 1.0], atol=1e-7)


# -- schedules -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("schedule", "kwargs", "closed_form"),
    [
        ("step", {"step_size": 3, "gamma": 0.5}, lambda k: 0.4 * 0.5 ** (k // 3)),
        ("exponential", {"gamma": 0.9}, lambda k: 0.4 * 0.9**k),
        (torch.optim.lr_scheduler.ExponentialLR, {"gamma": 0.8}, lambda k: 0.4 * 0.8**k),
        ("cosine", None, lambda k: 0.4 * (1 + np.cos(np.pi * k / 10)) / 2),  # T_max = steps
        (
            lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, [2, 5], gamma=0.1),
            None,
            lambda k: 0.4 * 0.1 ** ((k >= 2).astype(int) + (k >= 5)),
        ),
    ],
)
def test_recorded_lr_follows_the_schedule(schedule, kwargs, closed_form):
    t = descend(bowl, [-5.0, 5.0], lr=0.4, steps=10, schedule=schedule, schedule_kwargs=kwargs)
    k = np.arange(10)
    lrs = closed_form(k)
    np.testing.assert_allclose(t.lr, lrs, rtol=1e-12)
    # ... and is the one used: on the bowl, p_{k+1} - m = (1 - 2 lr_k) (p_k - m).
    expected = M + np.cumprod(np.r_[1.0, 1 - 2 * lrs])[:, None] * (np.array([-5.0, 5.0]) - M)
    np.testing.assert_allclose(t.positions, expected, atol=1e-12)


def test_onecycle_spans_the_run_and_peaks_at_lr():
    t = descend(bowl, [-5.0, 5.0], lr=0.3, steps=40, schedule="OneCycle", tol=0.0)
    assert t.steps_taken == 40 and t.settings["schedule"] == "onecycle"
    assert math.isclose(t.lr.max(), 0.3, rel_tol=1e-9) and t.lr[0] < t.lr.max() > t.lr[-1]
    np.testing.assert_allclose(t.lr[0], 0.3 / 25)  # torch's div_factor


# -- Problems --------------------------------------------------------------------------------
def regression_data():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(100, 1, generator=gen, dtype=torch.float64)
    y = 2 * x + 1 + 0.3 * torch.randn(100, 1, generator=gen, dtype=torch.float64)
    return x, y


def regression_model(seed=11):
    torch.manual_seed(seed)
    return nn.Linear(1, 1).double()


def numpy_descent(x, y, w, b, lr, steps):
    """Gradient descent on the mean squared error of y ~ w x + b, with closed-form gradients."""
    x, y = x.numpy().ravel(), y.numpy().ravel()
    losses, points = [], []
    for _ in range(steps + 1):
        resid = y - (w * x + b)
        losses.append(np.mean(resid**2))
        points.append((w, b))
        dw, db = -2 * np.mean(resid * x), -2 * np.mean(resid)
        w, b = w - lr * dw, b - lr * db
    return np.array(losses), np.array(points)


@pytest.mark.parametrize("lr", [0.01, 0.1, 0.5])
def test_problem_matches_numpy_gradient_descent(lr):
    x, y = regression_data()
    model = regression_model()
    before = copy.deepcopy(model.state_dict())
    w0, b0 = model.weight.item(), model.bias.item()
    problem = la.Problem(model, nn.MSELoss(), (x, y))
    t = descend(problem, optimizer="sgd", lr=lr, steps=40, tol=0.0)
    losses, points = numpy_descent(x, y, w0, b0, lr, 40)
    assert t.status == "max_steps" and t.steps_taken == 40
    np.testing.assert_allclose(t.loss, losses, rtol=1e-10, atol=1e-6)
    np.testing.assert_allclose(t.positions, points, rtol=1e-10, atol=1e-10)
    assert t.param_shapes == (("weight", (1, 1)), ("bias", (1,)))
    assert t.settings["start"] == "weights" and t.provenance["n_samples"] == 100

    # Uneven batches give the same run: the gradient is weighted by sample count.
    sizes = [32, 32, 32, 4]
    batches = [(x[i : i + n], y[i : i + n]) for i, n in zip(np.cumsum([0, *sizes[:-1]]), sizes)]
    for data, kw in [(batches, {}), ((x, y), {"batch_size": 30})]:
        split = descend(la.Problem(model, nn.MSELoss(), data, **kw), lr=lr, steps=40, tol=0.0)
        np.testing.assert_allclose(split.loss, t.loss, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(split.positions, t.positions, rtol=1e-12, atol=1e-15)

    # The user's model, and the problem's own weights, are untouched.
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])
    assert float(problem.params["weight"]) == w0 and float(problem.params["bias"]) == b0
    assert not any(p.grad is not None for p in model.parameters())


def test_problem_sum_reduction_and_custom_start():
    x, y = regression_data()
    problem = la.Problem(
        regression_model(), nn.MSELoss(reduction="sum"), [(x[:70], y[:70]), (x[70:], y[70:])]
    )
    start = {"weight": torch.tensor([[0.5]]), "bias": torch.tensor([-1.0])}
    t = descend(problem, start, lr=1e-3, steps=10, tol=0.0)
    losses, points = numpy_descent(x, y, 0.5, -1.0, 1e-3 * 100, 10)  # sum = 100 x mean
    np.testing.assert_allclose(t.loss, 100 * losses, rtol=1e-12)
    np.testing.assert_allclose(t.positions, points, rtol=1e-12, atol=1e-14)
    assert t.settings["start"] == "custom"
    again = descend(problem, t.final_position, lr=1e-3, steps=2, tol=0.0)  # a flat vector
    assert again.loss[0] == t.loss[-1]


def test_batchnorm_model_stays_in_eval_mode_and_final_params_load():
    case = build_case("cnn_bn")
    model = case.model
    before = copy.deepcopy(model.state_dict())
    ce = nn.CrossEntropyLoss()
    batches = case.batches(24)
    problem = la.Problem(model, ce, batches)
    buffers = {k: v.clone() for k, v in problem.buffers.items()}
    t = descend(problem, optimizer="adam", lr=1e-2, steps=5)
    # The loss at the start and at the end equal a plain eval-mode pass of a loaded copy.
    assert math.isclose(t.loss[0], evaluate(model, ce, batches)[0], rel_tol=1e-6)
    moved = copy.deepcopy(model)
    moved.load_state_dict({**moved.state_dict(), **t.final_params()})
    assert math.isclose(t.loss[-1], evaluate(moved, ce, batches)[0], rel_tol=1e-6)
    assert t.loss[-1] < t.loss[0]
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])
    for name, value in problem.buffers.items():
        assert torch.equal(value, buffers[name])  # running statistics not updated
    assert t.positions.shape == (6, problem.n_params)


def test_large_problem_records_only_the_final_position(monkeypatch):
    monkeypatch.setattr("lossatlas.descent.run.POSITION_BUDGET", 10)
    x, y = regression_data()
    problem = la.Problem(regression_model(), nn.MSELoss(), (x, y))
    with pytest.warns(la.LossatlasWarning, match="not recording positions"):
        t = descend(problem, lr=0.1, steps=10)
    assert t.positions is None and t.final_position.shape == (2,)
    quiet = descend(problem, lr=0.1, steps=10, record_positions=False)
    assert quiet.positions is None and POSITION_BUDGET > 10
    np.testing.assert_array_equal(quiet.final_position, t.final_position)


# -- stopping ----------------------------------------------------------------------------------
def test_nan_after_some_steps_is_a_divergence():
    calls = []

    def flaky(p):
        calls.append(1)
        return bowl(p) * (math.nan if len(calls) > 5 else 1.0)

    t = descend(flaky, [-5.0, 5.0], lr=0.1, steps=50)
    assert t.status == "diverged" and t.steps_taken == 5
    assert np.isfinite(t.loss[:5]).all() and np.isnan(t.loss[5])
    assert t.positions.shape == (6, 2) and len(t.lr) == 5


@pytest.mark.parametrize(
    "objective",
    [
        lambda p: bowl(p) + torch.where(p[0] > 0, math.inf, 0.0),  # infinite loss
        lambda p: torch.tensor(math.nan) if p[0] > 0 else bowl(p),  # a detached NaN
        lambda p: bowl(p) + (torch.sqrt(p[0] * 0) if p[0] > 0 else 0),  # finite loss, NaN grad
    ],
)
def test_non_finite_values_stop_the_run(objective):
    t = descend(objective, [-5.0, 0.0], lr=0.3, steps=50)
    assert t.status == "diverged" and 0 < t.steps_taken < 50
    assert np.isfinite(t.loss[:-1]).all() and np.isfinite(t.grad_norm[:-1]).all()
    assert not (np.isfinite(t.loss[-1]) and np.isfinite(t.grad_norm[-1]))


def test_blowup_limit():
    t = descend(quadratic, [3.0, -1.0], lr=0.25, steps=500, blowup=10.0)
    limit = 10 * max(1.0, t.loss[0])
    assert t.status == "diverged" and t.loss[-1] > limit and (t.loss[:-1] <= limit).all()
    off = descend(quadratic, [3.0, -1.0], lr=0.25, steps=30, blowup=math.inf)
    assert off.status == "max_steps" and off.loss[-1] > 1e10


def test_convergence_by_gradient_norm_and_by_step_length():
    lr, tol = 0.2, 1e-6
    t = descend(bowl, [-5.0, 5.0], lr=lr, steps=1000, tol=tol)
    # |grad_k| = 2 (1 - 2 lr)^k |p0 - m|: the first k where it is at most tol.
    g0 = 2 * np.linalg.norm(np.array([-5.0, 5.0]) - M)
    assert t.status == "converged"
    assert t.steps_taken == math.ceil(math.log(tol / g0) / math.log(1 - 2 * lr))
    assert t.grad_norm[-1] <= tol < t.grad_norm[-2]

    x = descend(bowl, [-5.0, 5.0], lr=lr, steps=1000, tol=0.0, xtol=1e-3)
    moved = np.linalg.norm(np.diff(x.positions, axis=0), axis=1)
    assert x.status == "converged" and moved[-1] <= 1e-3 < moved[-2]
    assert descend(bowl, M, lr=lr).steps_taken == 0  # already at the minimum


# -- determinism ---------------------------------------------------------------------------------
def test_runs_are_deterministic_and_leave_the_global_generator_alone():
    state = torch.get_rng_state()
    a = descend(banana, [-1.2, 1.0], optimizer="adam", lr=0.05, steps=30, noise=0.5, seed=3)
    b = descend(banana, [-1.2, 1.0], optimizer="adam", lr=0.05, steps=30, noise=0.5, seed=3)
    c = descend(banana, [-1.2, 1.0], optimizer="adam", lr=0.05, steps=30, noise=0.5, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for field in ("positions", "loss", "grad_norm", "lr"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.positions, c.positions)
    clean = descend(banana, [-1.2, 1.0], optimizer="adam", lr=0.05, steps=30)
    assert not np.array_equal(a.positions, clean.positions)
    # The recorded gradient norm is the true one, not the noisy one the optimizer saw.
    np.testing.assert_allclose(
        a.grad_norm, [np.linalg.norm(banana_grad(p)) for p in a.positions], rtol=1e-12
    )


# -- bad input -----------------------------------------------------------------------------------
def failing(p):
    raise ZeroDivisionError("the test function broke")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: descend(bowl, [0.0, 0.0], optimizer="adma"), "did you mean 'adam'"),
        (lambda: descend(bowl, [0.0, 0.0], optimizer=nn.Linear), "optimizer must be"),
        (lambda: descend(bowl, [0.0, 0.0], lr=0), "lr must be finite and positive"),
        (lambda: descend(bowl, [0.0, 0.0], lr=-0.1), "lr must be finite and positive"),
        (lambda: descend(bowl, [0.0, 0.0], lr=math.nan), "lr must be finite and positive"),
        (lambda: descend(bowl, [0.0, 0.0], lr=math.inf), "lr must be finite and positive"),
        (lambda: descend(bowl, [0.0, 0.0], lr="0.1"), "lr must be a positive"),
        (lambda: descend(bowl, [0.0, 0.0], steps=0), "steps must be an integer of at least 1"),
        (lambda: descend(bowl, [0.0, 0.0], steps=2.5), "steps must be an integer"),
        (lambda: descend(bowl, [[0.0, 0.0]]), r"start must be a 1-D vector, got shape \(1, 2\)"),
        (lambda: descend(bowl, "a"), "start must be a vector of numbers, got str"),
        (lambda: descend(bowl, [0.0, math.nan]), "start has 1 non-finite entries"),
        (lambda: descend(bowl), "needs a start point"),
        (lambda: descend(failing, [0.0, 0.0]), "ZeroDivisionError: the test function broke"),
        (lambda: descend(lambda p: p * 2, [0.0, 0.0]), r"scalar loss, got shape \(2,\)"),
        (lambda: descend(lambda p: 1.0, [0.0, 0.0]), "must return a torch tensor, got float"),
        (lambda: descend(lambda p: torch.tensor(1.0), [0.0]), "has no gradient"),
        (lambda: descend(42, [0.0]), "objective must be a function"),
        (
            lambda: descend(bowl, [0.0, 0.0], optimizer_kwargs={"momentom": 0.9}),
            "optimizer 'sgd' rejects its options: TypeError: .*unexpected keyword .*momentom",
        ),
        (
            lambda: descend(
                bowl, [0.0, 0.0], optimizer="momentum", optimizer_kwargs={"momentum": -1}
            ),
            "rejects its options: ValueError: Invalid momentum",
        ),
        (lambda: descend(bowl, [0.0, 0.0], optimizer_kwargs={"lr": 1}), "lr=..., not in"),
        (lambda: descend(bowl, [0.0, 0.0], schedule="cosin"), "did you mean 'cosine'"),
        (lambda: descend(bowl, [0.0, 0.0], schedule="step"), "schedule 'step' rejects.*step_size"),
        (lambda: descend(bowl, [0.0, 0.0], schedule=3), "schedule must be None"),
        (lambda: descend(bowl, [0.0, 0.0], tol=-1), "tol must be a number of at least 0"),
        (lambda: descend(bowl, [0.0, 0.0], blowup=0), "blowup must be a number above 0"),
        (lambda: descend(bowl, [0.0, 0.0], seed=1.5), "seed must be an integer"),
    ],
)
def test_bad_input_raises_one_line_errors(call, match):
    with pytest.raises(la.LossatlasError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("start", "match"),
    [
        ({"weight": torch.zeros(1, 1)}, "start lacks parameter 'bias'"),
        ({"weight": torch.zeros(2), "bias": torch.zeros(1)}, r"shape \(2,\) for 'weight'"),
        ({"weight": torch.zeros(1, 1), "bias": torch.tensor([math.inf])}, "non-finite.*'bias'"),
        (np.zeros(3), "start has 3 values, the model has 2 parameters"),
        ("weights", "start for a Problem must be"),
    ],
)
def test_bad_problem_start(start, match):
    x, y = regression_data()
    problem = la.Problem(regression_model(), nn.MSELoss(), (x, y))
    with pytest.raises(la.LossatlasError, match=match) as info:
        descend(problem, start)
    assert "\n" not in str(info.value)


def test_a_failing_model_is_reported_in_one_line():
    x, y = regression_data()
    problem = la.Problem(regression_model(), nn.MSELoss(), (x.repeat(1, 3), y))  # 3 features
    with pytest.raises(la.LossatlasError, match="the model fails on the data") as info:
        descend(problem)
    assert "\n" not in str(info.value)


# -- sweeps and comparisons ------------------------------------------------------------------------
def test_sweep_covers_the_full_product():
    starts = np.array([[-1.2, 1.0], [0.5, -0.5]])
    result = sweep(
        banana,
        starts=starts,
        optimizers=["sgd", "adam", ("momentum", {"momentum": 0.5})],
        lrs=[0.001, 0.01],
        seeds=[0, 1],
        steps=20,
        noise=0.1,
        quiet=True,
    )
    assert len(result) == 3 * 2 * 2 * 2
    coords = [(r.optimizer, r.lr, r.start, r.seed) for r in result]
    labels = ["sgd", "adam", "momentum(momentum=0.5)"]
    assert coords == [
        (o, lr, s, seed) for o in labels for lr in (0.001, 0.01) for s in (0, 1) for seed in (0, 1)
    ]
    adam = result.runs(optimizer="adam")
    assert len(adam) == 8 and all(r.trajectory.optimizer == "adam" for r in adam)
    one = result.runs(optimizer="adam", lr=0.01, start=1, seed=1)
    assert len(one) == 1
    direct = descend(banana, starts[1], optimizer="adam", lr=0.01, steps=20, noise=0.1, seed=1)
    np.testing.assert_array_equal(one[0].trajectory.positions, direct.positions)
    mom = result.runs(optimizer="momentum(momentum=0.5)")[0].trajectory
    assert mom.settings["optimizer_kwargs"] == {"momentum": 0.5}

    rows = result.table(minimum=[[1.0, 1.0], [-9.0, -9.0]])  # the nearest minimum counts
    assert len(rows) == len(result)
    for row, run in zip(rows, result):
        t = run.trajectory
        assert row["status"] == t.status and row["steps"] == t.steps_taken
        assert row["final_loss"] == t.final_loss
        assert row["distance"] == pytest.approx(np.linalg.norm(t.final_position - [1.0, 1.0]))
    assert "distance" not in result.table()[0]


def test_sweep_checks_its_grid_before_running():
    with pytest.raises(la.LossatlasError, match="did you mean 'adam'"):
        sweep(banana, starts=[[0.0, 0.0]], optimizers=["sgd", "adma"], quiet=True)
    with pytest.raises(la.LossatlasError, match="wrap a single start in a list"):
        sweep(banana, starts=[0.0, 0.0], quiet=True)
    with pytest.raises(la.LossatlasError, match="lr must be finite"):
        sweep(banana, starts=[[0.0, 0.0]], lrs=[0.1, 0.0], quiet=True)
    with pytest.raises(la.LossatlasError, match="labels repeat"):
        sweep(banana, starts=[[0.0, 0.0]], optimizers=["sgd", "SGD"], quiet=True)


def test_compare_on_an_ill_conditioned_quadratic():
    starts = [[3.0, -1.0], [-2.0, -2.0]]
    kw = {
        "optimizers": {"gd": "sgd", "heavy ball": "momentum", "adam": "adam"},
        "starts": starts,
        "steps": 150,
        "quiet": True,
        "minimum": [0.0, 0.0],
    }
    result = compare(quadratic, **kw)
    lam_max = max(LAMBDAS)
    assert result.best_lr["gd"] < 2 / lam_max
    assert result.best_lr["heavy ball"] < (2 + 2 * 0.9) / lam_max
    # The same budget for every run; the grid is the default 13 log-spaced values.
    assert all(r.trajectory.settings["steps"] == 150 for r in result.sweep)
    assert all(r.trajectory.steps_taken <= 150 for r in result.sweep)
    assert len(result.sweep) == 3 * 13 * 2 and result.settings["lrs"][0] == pytest.approx(1e-4)
    # Unstable learning rates diverge, and are not chosen.
    assert all(r.trajectory.diverged for r in result.sweep.runs(optimizer="gd", lr=1.0))

    rows = result.table()
    assert [r["criterion"] for r in rows] == ["final_loss"] * 3
    assert result.settings["criterion"] == "final_loss"
    assert "final loss" in result.settings["criterion_description"]
    for row in rows:  # the value is the mean final loss at the best lr, recomputed here
        finals = [
            t.final_loss
            for t in result.sweep.trajectories(optimizer=row["optimizer"], lr=row["best_lr"])
        ]
        assert row["value"] == pytest.approx(np.mean(finals))
        assert row["median_final_loss"] == pytest.approx(np.median(finals))
        assert row["diverged"] == 0 and row["runs"] == 2
        # No other learning rate without divergence has a lower mean final loss.
        for score in result.scores:
            if score["optimizer"] == row["optimizer"] and score["diverged"] == 0:
                assert score["value"] >= row["value"]
    assert [r["value"] for r in rows] == sorted(r["value"] for r in rows)

    again = compare(quadratic, **kw)
    assert again.table() == rows


@pytest.mark.parametrize("criterion", ["auc", "steps_to_tol"])
def test_compare_other_criteria(criterion):
    result = compare(
        quadratic,
        optimizers=["sgd", "nesterov"],
        starts=[[3.0, -1.0]],
        lrs=[0.01, 0.05, 0.15, 0.3],
        steps=120,
        criterion=criterion,
        tol=1e-6,
        quiet=True,
    )
    assert result.settings["criterion"] == criterion
    gd = {s["lr"]: s["value"] for s in result.scores if s["optimizer"] == "sgd"}
    assert gd[0.3] == math.inf  # diverged: worst
    t = result.sweep.runs(optimizer="sgd", lr=0.15)[0].trajectory
    if criterion == "steps_to_tol":
        assert t.converged and gd[0.15] == t.steps_taken
        assert gd[0.01] == 121  # did not converge within the budget
    else:
        padded = np.r_[t.loss, np.full(120 - t.steps_taken, t.loss[-1])]
        assert gd[0.15] == pytest.approx(np.mean(np.log10(padded + 1e-12)))
    assert result.best_lr["sgd"] == 0.15


def test_trajectory_record():
    t = descend(bowl, [0.0, 0.0], lr=0.1, steps=3)
    assert isinstance(t, Trajectory) and "status='max_steps'" in repr(t)
    for key in ("optimizer", "optimizer_kwargs", "lr", "schedule", "start", "seed", "objective"):
        assert key in t.settings
    assert t.settings["start"] == [0.0, 0.0] and t.provenance["versions"]["torch"]
    assert t.provenance["seconds"] >= 0 and t.provenance["n_evals"] == 4
    with pytest.raises(la.LossatlasError, match="final_params"):
        t.final_params()


class NamedBowl:
    """A stand-in for a catalogue test function: a name, known minima and the minimum value."""

    name = "bowl"
    minima = ((2.0, -3.0),)
    min_value = 0.0

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        return bowl(p) + self.min_value


def test_objective_name_and_known_minima_are_used():
    f = NamedBowl()
    t = descend(f, [0.0, 0.0], lr=0.1, steps=5)
    assert t.settings["objective"] == "bowl"
    result = sweep(f, starts=[[0.0, 0.0], [5.0, 5.0]], steps=5, quiet=True)
    assert result.settings["minimum"] == [[2.0, -3.0]]
    for row, run in zip(result.table(), result):
        assert row["distance"] == pytest.approx(np.linalg.norm(run.trajectory.final_position - M))
    with pytest.raises(la.LossatlasError, match="the known minimum has 3 coordinates"):
        result.table(minimum=[1.0, 2.0, 3.0])
    f.min_value = 5.0  # the auc floor: log10(loss - min_value + eps)
    c = compare(
        f, optimizers=["sgd"], starts=[[0.0, 0.0]], lrs=[0.1], steps=8, criterion="auc", quiet=True
    )
    t = c.sweep[0].trajectory
    assert c.settings["floor"] == 5.0
    assert c.scores[0]["value"] == pytest.approx(np.mean(np.log10(t.loss - 5.0 + 5e-12)))


def test_compare_on_a_problem(capsys):
    x, y = regression_data()
    model = regression_model()
    before = copy.deepcopy(model.state_dict())
    problem = la.Problem(model, nn.MSELoss(), (x, y))
    # The Hessian of the mean squared error is 2 [[mean x^2, mean x], [mean x, 1]].
    xs = x.numpy().ravel()
    lam_max = np.linalg.eigvalsh(2 * np.array([[np.mean(xs**2), xs.mean()], [xs.mean(), 1]]))[-1]
    lrs = [0.03, 0.3, 0.9 * 2 / lam_max, 1.5 * 2 / lam_max]
    c = compare(problem, optimizers=["sgd", "adam"], starts=None, lrs=lrs, steps=30, quiet=False)
    assert "descent, 8 runs" in capsys.readouterr().err
    assert c.best_lr["sgd"] < 2 / lam_max
    # At its best lr, gradient descent reaches the least-squares optimum.
    design = np.c_[xs, np.ones_like(xs)]
    coef = np.linalg.lstsq(design, y.numpy().ravel(), rcond=None)[0]
    optimum = np.mean((design @ coef - y.numpy().ravel()) ** 2)
    assert c.table()[0]["optimizer"] == "sgd"
    assert c.table()[0]["median_final_loss"] == pytest.approx(optimum, rel=1e-6)
    assert c.sweep.runs(optimizer="sgd", lr=lrs[3])[0].trajectory.diverged
    assert all(r.trajectory.positions is None for r in c.sweep)  # compare keeps losses only
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])
