"""Hessian eigenpairs (ARPACK Lanczos, power iteration) against float64 dense eigensolvers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from lossatlas.curvature.eigen import Eigen, hessian_directions, hessian_eigen, power_iteration
from lossatlas.curvature.lanczos import gauss_quadrature, lanczos, start_vector
from lossatlas.curvature.operator import HessianOperator
from tests.oracles.cases import build_case
from tests.oracles.hessian import dense_hessian, planted_quadratic

# Indefinite, with a double eigenvalue (1.0) inside the spectrum and distinct ends.
PLANTED = [-3.0, -1.7, -0.9, -0.3, 0.05, 0.2, 0.6, 1.0, 1.0, 1.4, 2.1, 2.9, 3.8, 5.0, 6.5]


def case_problem(name: str) -> tuple[la.Problem, torch.Tensor]:
    """A float64 problem and its dense reference Hessian."""
    if name == "planted":
        model, (X, y), loss_fn, _ = planted_quadratic(PLANTED, seed=1)
        H = dense_hessian(model, loss_fn, X, y)
        torch.testing.assert_close(torch.linalg.eigvalsh(H), torch.tensor(PLANTED).double())
        return la.Problem(model, loss_fn, (X, y)), H
    case = build_case(name)
    data = case.batches(16) if name == "cnn_bn" else (case.X, case.y)  # 58 = 3 x 16 + 10
    problem = la.Problem(case.model, nn.CrossEntropyLoss(), data, dtype=torch.float64)
    return problem, dense_hessian(case.model, nn.CrossEntropyLoss(), case.X, case.y)


@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "planted"])
@pytest.mark.parametrize("which", ["top", "bottom"])
@pytest.mark.parametrize("solver", ["lanczos", "arpack"])
def test_extreme_eigenpairs_match_the_dense_hessian(name, which, solver):
    problem, H = case_problem(name)
    values, vectors = torch.linalg.eigh(H)
    values, vectors = values.numpy(), vectors.numpy()
    order = np.argsort(-values if which == "top" else values)[:3]
    op = HessianOperator(problem)
    eig = hessian_eigen(op, 3, which=which, tol=1e-10, solver=solver)
    np.testing.assert_allclose(eig.eigenvalues, values[order], rtol=1e-4)
    np.testing.assert_allclose(eig.eigenvalues, values[order], rtol=1e-8, atol=1e-10)
    gaps = np.abs(values[order][:, None] - values[None, :])
    gaps[np.arange(3), order] = np.inf
    for j, i in enumerate(order):
        if gaps[j].min() > 1e-3 * np.abs(values).max():  # an isolated eigenvalue
            assert abs(eig.eigenvectors[:, j] @ vectors[:, i]) > 1 - 1e-6
    np.testing.assert_allclose(np.linalg.norm(eig.eigenvectors, axis=0), 1.0, rtol=1e-12)
    # Each eigenvalue is within its stated bound, and the bounds meet the tolerance.
    bounds = np.array(eig.settings["error_bounds"])
    assert np.all(np.abs(eig.eigenvalues - values[order]) <= bounds + 1e-14)
    assert eig.converged.all() and np.all(bounds <= 10 * 1e-10 * np.abs(eig.eigenvalues))
    assert np.all(bounds <= eig.residuals)
    assert eig.hvps == op.hvps and eig.hvps > 3
    assert solver == "arpack" or eig.hvps <= 3 + eig.settings["steps"]
    assert eig.settings["which"] == which and eig.settings["operator"]["dim"] == op.dim
    assert eig.settings["solver"].startswith(solver)
    assert set(eig.versions) >= {"lossatlas", "torch", "numpy"} and eig.seconds > 0


def test_magnitude_finds_a_negative_eigenvalue_and_top_does_not():
    spectrum = [-8.0, -2.0, -0.5, 0.1, 0.3, 1.0, 2.0, 3.0, 5.0, 7.0]
    model, data, loss_fn, Q = planted_quadratic(spectrum, seed=2)
    problem = la.Problem(model, loss_fn, data)
    magnitude = hessian_eigen(problem, 2, which="magnitude", tol=1e-10)
    np.testing.assert_allclose(magnitude.eigenvalues, [-8.0, 7.0], rtol=1e-8)
    assert abs(magnitude.eigenvectors[:, 0] @ Q[:, 0].numpy()) > 1 - 1e-8
    top = hessian_eigen(problem, 1, which="top", tol=1e-10)
    np.testing.assert_allclose(top.eigenvalues, [7.0], rtol=1e-8)
    bottom = hessian_eigen(problem, 2, which="bottom", tol=1e-10)
    np.testing.assert_allclose(bottom.eigenvalues, [-8.0, -2.0], rtol=1e-8)


@pytest.mark.parametrize("dominant", [-6.0, 6.0])
def test_power_iteration_finds_the_largest_magnitude_to_its_tolerance(dominant):
    spectrum = [dominant, -3.0, -1.0, 0.2, 0.5, 1.0, 2.0, 3.0]  # |lambda_2| / |lambda_1| = 1/2
    model, data, loss_fn, Q = planted_quadratic(spectrum, seed=3)
    problem = la.Problem(model, loss_fn, data)
    for tol in [1e-3, 1e-6]:
        eig = power_iteration(problem, tol=tol)
        assert abs(eig.eigenvalues[0] - dominant) <= tol * abs(dominant)
        assert eig.converged.all() and eig.hvps == eig.settings["iterations"]
        v = eig.eigenvectors[:, 0]
        H = (Q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ Q.T).numpy()
        np.testing.assert_allclose(eig.residuals[0], np.linalg.norm(H @ v - eig.eigenvalues[0] * v))
    assert eig.settings["which"] == "magnitude" and eig.settings["solver"] == "power iteration"
    with pytest.warns(la.LossatlasWarning, match="power_iteration: no convergence in 3"):
        stuck = power_iteration(problem, tol=1e-12, max_iter=3)
    assert not stuck.converged[0] and stuck.hvps == 3


def test_lanczos_needs_fewer_products_than_power_iteration_on_the_mlp():
    problem, H = case_problem("mlp")
    values = torch.linalg.eigvalsh(H).numpy()
    lam = values[np.argmax(np.abs(values))]
    assert lam == values.max() and values[-2] / lam > 0.75  # a slow case for power iteration
    # Products until the Rayleigh quotient of power iteration is within 1e-3 of lambda_max.
    op = HessianOperator(problem)
    start = torch.randn(op.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v, power = start / start.norm(), 0
    while power < 100:
        w, power = op.matvec(v), power + 1
        if abs(float(v @ w) - lam) <= 1e-3 * lam:
            break
        v = w / w.norm()
    for m in range(1, 20):  # Lanczos steps from the same start until the top Ritz value is too
        theta, _ = gauss_quadrature(*lanczos(HessianOperator(problem), m, v0=start)[:2])
        if abs(theta[-1] - lam) <= 1e-3 * lam:
            break
    assert m < power
    # ARPACK's default basis (20 vectors) overshoots 1e-3 but is cheaper than power iteration
    # at high accuracy.
    precise = hessian_eigen(problem, tol=1e-9)
    slow = power_iteration(problem, tol=1e-9)
    assert abs(precise.eigenvalues[0] - lam) <= 1e-9 * lam
    assert abs(slow.eigenvalues[0] - lam) <= 1e-7
    assert precise.hvps < slow.hvps


def test_k_equal_to_dim_is_dense_and_k_above_dim_is_an_error():
    model, data, loss_fn, _ = planted_quadratic([-1.0, 0.5, 2.0, 3.0], seed=4)
    problem = la.Problem(model, loss_fn, data)
    eig = hessian_eigen(problem, 4, which="bottom")
    np.testing.assert_allclose(eig.eigenvalues, [-1.0, 0.5, 2.0, 3.0], rtol=1e-12)
    assert eig.settings["solver"].startswith("dense") and eig.hvps == 4 and eig.converged.all()
    with pytest.raises(la.LossatlasError, match="k=5 exceeds the number of parameters"):
        hessian_eigen(problem, 5)


def test_budget_exhausted_returns_what_converged_with_a_warning():
    problem, H = case_problem("cnn_bn")
    values = torch.linalg.eigvalsh(H).numpy()
    with pytest.warns(la.LossatlasWarning, match="hessian_eigen: 2 of 4 eigenpairs converged"):
        eig = hessian_eigen(problem, 4, which="bottom", tol=1e-10, max_hvps=30, solver="arpack")
    assert eig.hvps <= 30 + 2 and eig.settings["maxiter"] == 1
    np.testing.assert_array_equal(eig.converged, [True, True, False, False])
    np.testing.assert_allclose(eig.eigenvalues[:2], values[:2], rtol=1e-8)
    assert np.isnan(eig.eigenvalues[2:]).all() and np.isnan(eig.eigenvectors[:, 2:]).all()
    assert len(eig.directions(2)) == 2
    with pytest.raises(la.LossatlasError, match="eigenpair 2 was not found"):
        eig.directions()


def test_a_zero_hessian_is_reported_not_raised():
    model, data, loss_fn, _ = planted_quadratic([0.0] * 30, seed=6)
    problem = la.Problem(model, loss_fn, data)
    with pytest.warns(la.LossatlasWarning, match=r"0 of 2 eigenpairs .*\(ARPACK error -9"):
        eig = hessian_eigen(problem, 2, solver="arpack")
    assert np.isnan(eig.eigenvalues).all() and "error" in eig.settings
    with pytest.warns(la.LossatlasWarning, match=r"1 of 2 eigenpairs .*Krylov space is exhausted"):
        eig = hessian_eigen(problem, 2, solver="lanczos")
    assert eig.eigenvalues[0] == 0.0 and np.isnan(eig.eigenvalues[1])
    power = power_iteration(problem)
    assert power.eigenvalues[0] == 0.0 and power.converged[0] and power.hvps == 1


def test_the_default_start_is_the_unit_gradient_plus_a_unit_gaussian():
    problem, _ = case_problem("mlp")
    op = HessianOperator(problem)
    r = torch.randn(op.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    g = op.loss_and_grad()[1]
    expected = (r / r.norm() + g / g.norm()).numpy()
    np.testing.assert_allclose(start_vector(op, None, 3).numpy(), expected, rtol=1e-12, atol=1e-15)
    model, data, loss_fn, _ = planted_quadratic([0.0] * 5, seed=6)  # a flat loss: g = 0
    flat = HessianOperator(la.Problem(model, loss_fn, data))
    assert not flat.gradient().any()
    r = torch.randn(flat.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = start_vector(flat, None, 3).numpy()
    np.testing.assert_allclose(got, (r / r.norm()).numpy(), rtol=1e-12)


def test_deterministic_warm_start_and_params_subset():
    problem, H = case_problem("mlp")
    first = hessian_eigen(problem, 2, tol=1e-10)
    again = hessian_eigen(problem, 2, tol=1e-10)
    np.testing.assert_array_equal(first.eigenvectors, again.eigenvectors)
    assert first.hvps == again.hvps
    warm = hessian_eigen(problem, 1, tol=1e-10, v0=first.vector(0), ncv=6)
    cold = hessian_eigen(problem, 1, tol=1e-10, ncv=6)
    assert warm.hvps < cold.hvps
    np.testing.assert_allclose(warm.eigenvalues, first.eigenvalues[:1], rtol=1e-10)
    block = hessian_eigen(problem, 1, params="2", tol=1e-10)  # the head's block of H
    start = 4 * 8 + 8
    top = torch.linalg.eigvalsh(H[start:, start:]).max().item()
    np.testing.assert_allclose(block.eigenvalues, [top], rtol=1e-8)
    d = block.directions()
    assert list(d[0]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert float(d[0]["0.weight"].abs().max()) == 0.0 and d.settings["operator"]["params"] == [
        "2.weight",
        "2.bias",
    ]


def test_directions_feed_surface_and_curvature_along_them_is_the_eigenvalue():
    case = build_case("mlp")
    before = {k: p.detach().clone() for k, p in case.model.named_parameters()}
    problem = la.Problem(case.model, nn.CrossEntropyLoss(), (case.X, case.y), dtype=torch.float64)
    eig = hessian_eigen(problem, 2, tol=1e-10)
    dirs = eig.directions()
    assert dirs.settings["kind"] == "hessian" and dirs.settings["which"] == "top"
    assert dirs.settings["eigenvalues"] == [float(v) for v in eig.eigenvalues]
    assert abs(dirs.cosine()) < 1e-10
    grid = la.surface(problem, dirs, steps=5, span=(-0.1, 0.1), quiet=True)
    assert grid.loss.shape == (5, 5) and grid.directions.settings["kind"] == "hessian"
    for j, h in enumerate([1e-3, 1e-3]):
        line = la.surface(problem, eig.directions(2)[j : j + 1], steps=3, span=(-h, h), quiet=True)
        curvature = (line.loss[0] - 2 * line.loss[1] + line.loss[2]) / h**2
        np.testing.assert_allclose(curvature, eig.eigenvalues[j], rtol=1e-4)
    for k, p in case.model.named_parameters():
        torch.testing.assert_close(p.detach(), before[k], rtol=0, atol=0)
    bottom = hessian_directions(problem, n=1, which="bottom", tol=1e-10)
    assert bottom.settings["which"] == "bottom" and bottom.settings["eigenvalues"][0] < 0


def test_bad_input_is_one_line_errors():
    problem, _ = case_problem("mlp")
    bad = [
        ({"k": 0}, "k must be an integer of at least 1"),
        ({"k": 2.5}, "k must be an integer"),
        ({"which": "middle"}, "which must be one of"),
        ({"tol": -1.0}, "tol must be a positive"),
        ({"v0": torch.ones(3)}, "v0 has 3 entries"),
        ({"v0": torch.zeros(67)}, "v0 must be finite and non-zero"),
        ({"max_hvps": 2}, "max_hvps must be an integer of at least 4"),
        ({"ncv": 1}, "ncv must be an integer of at least 2"),
        ({"data": "some"}, "data"),
    ]
    for kwargs, message in bad:
        with pytest.raises(la.LossatlasError, match=message) as info:
            hessian_eigen(problem, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(la.LossatlasError, match="expected a Problem or a HessianOperator"):
        hessian_eigen(nn.Linear(2, 2))
    with pytest.raises(la.LossatlasError, match="max_iter must be an integer"):
        power_iteration(problem, max_iter=0)
    eig = hessian_eigen(problem, 2)
    assert isinstance(eig, Eigen)
    for n in [0, 3, True]:
        with pytest.raises(la.LossatlasError, match="n must be an integer from 1 to 2"):
            eig.directions(n)
    with pytest.raises(la.LossatlasError, match="there are 2 eigenpairs"):
        eig.vector(2)
