"""What keeps eigenpairs and traces fast on large models, checked on small ones against float64
dense Hessians: the Lanczos solver's memory rule, its float32 basis and kept products, accurate
long inner products, and the trace estimators' blocks, draws and CholeskyQR2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from lossatlas.curvature import solvers
from lossatlas.curvature.eigen import hessian_eigen, power_iteration
from lossatlas.curvature.lanczos import dot, dot_products, norm
from lossatlas.curvature.operator import HessianOperator
from lossatlas.curvature.orthogonality import Orthogonality
from lossatlas.curvature.probes import gaussian, rademacher
from lossatlas.curvature.trace import _orthonormal, hessian_trace
from tests.oracles.cases import build_case
from tests.oracles.hessian import dense_hessian, planted_quadratic


def float32_case(name: str) -> tuple[la.Problem, np.ndarray]:
    """A float32 problem (58 samples in batches of 16) and its float64 dense Hessian."""
    case = build_case(name)
    problem = la.Problem(case.model, nn.CrossEntropyLoss(), case.batches(16))
    assert problem.dtype == torch.float32
    return problem, dense_hessian(case.model, nn.CrossEntropyLoss(), case.X, case.y).numpy()


# -- the solver's choice and memory --------------------------------------------------------------
def test_auto_takes_lanczos_where_the_old_float64_rule_refused_it(monkeypatch):
    """The old rule wanted `max(100, 20k)` float64 steps within 1 GiB (ResNet-18: 8.9 GB, so
    ARPACK). Now Lanczos is taken when ARPACK's default basis (20 vectors) fits the memory,
    and it stops when it has converged, long before the step cap."""
    problem, H = float32_case("cnn_bn")
    dim = H.shape[0]
    old_need = min(dim, 100) * dim * 8
    monkeypatch.setattr(solvers, "LANCZOS_MEMORY", old_need // 4)  # 4x short of the old rule
    op = HessianOperator(problem)
    eig = hessian_eigen(op, k=1, tol=1e-5)
    assert eig.settings["solver"].startswith("lanczos") and eig.settings["basis"] == "float32"
    assert eig.converged.all()
    top = np.linalg.eigvalsh(H).max()
    assert eig.eigenvalues[0] == pytest.approx(top, rel=1e-5)
    # Less room than ARPACK's basis: ARPACK, as before.
    monkeypatch.setattr(solvers, "LANCZOS_MEMORY", 19 * dim * 4)
    assert hessian_eigen(op, k=1, tol=1e-5).settings["solver"].startswith("arpack")


def test_memory_for_the_basis_but_not_the_products_costs_one_check_product(monkeypatch):
    problem, H = float32_case("mlp")
    dim = H.shape[0]
    roomy = hessian_eigen(problem, k=1, tol=1e-6)
    assert roomy.settings["check"] == "products kept by Lanczos"
    assert roomy.hvps == roomy.settings["steps"]  # no product for the check
    steps = roomy.settings["steps"]
    monkeypatch.setattr(solvers, "LANCZOS_MEMORY", (steps + 1) * dim * 4)  # the basis only
    tight = hessian_eigen(problem, k=1, tol=1e-6, solver="lanczos")
    assert tight.settings["check"] == "1 more products" and tight.hvps == steps + 1
    np.testing.assert_allclose(tight.eigenvalues, roomy.eigenvalues, rtol=1e-12)
    np.testing.assert_allclose(tight.residuals, roomy.residuals, rtol=0.05, atol=1e-7)


def test_available_memory_and_the_default_budget(monkeypatch):
    op = HessianOperator(float32_case("mlp")[0])
    free = solvers.available_memory(torch.device("cpu"))
    assert free > 0
    monkeypatch.setattr(solvers, "LANCZOS_MEMORY", None)
    budget = solvers.lanczos_memory(op)  # a quarter of what is free, at least 1 GiB
    assert budget >= 1 << 30 and budget <= max(1 << 30, free // 4 + (256 << 20))
    monkeypatch.setattr(solvers, "LANCZOS_MEMORY", 12345)
    assert solvers.lanczos_memory(op) == 12345


# -- accuracy of the float32 basis and of the kept products --------------------------------------
@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "rgb_cnn"])
@pytest.mark.parametrize("which", ["top", "bottom"])
def test_float32_basis_matches_the_float64_dense_hessian(name, which):
    """A float32 problem's extreme eigenvalues from the float32 basis agree with the float64
    dense Hessian to 1e-5 relative (of `||H||`): the float32 evaluation of the Hessian itself
    differs from the float64 one by about 1e-6 here."""
    problem, H = float32_case(name)
    values = np.linalg.eigvalsh(H)
    eig = hessian_eigen(problem, k=2, which=which, tol=1e-5, solver="lanczos")
    expected = values[::-1][:2] if which == "top" else values[:2]
    scale = np.abs(values).max()
    np.testing.assert_allclose(eig.eigenvalues, expected, rtol=0, atol=1e-5 * scale)
    assert eig.settings["basis"] == "float32" and eig.converged.all()
    # The residuals from the kept products are those of the returned vectors under H.
    explicit = np.linalg.norm(H @ eig.eigenvectors - eig.eigenvectors * eig.eigenvalues, axis=0)
    np.testing.assert_allclose(eig.residuals, explicit, rtol=0, atol=1e-5 * scale)


def test_kept_products_give_the_same_residuals_as_fresh_products_in_float64():
    spectrum = [-3.0, -1.0, 0.1, 0.4, 0.9, 1.7, 2.2, 3.5, 4.0, 6.0, 8.0]
    model, data, loss_fn, Q = planted_quadratic(spectrum, seed=21)
    problem = la.Problem(model, loss_fn, data)
    H = (Q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ Q.T).numpy()
    eig = hessian_eigen(problem, k=3, tol=1e-4, solver="lanczos")
    assert eig.settings["check"] == "products kept by Lanczos"
    assert eig.settings["basis"] == "float64"
    explicit = np.linalg.norm(H @ eig.eigenvectors - eig.eigenvectors * eig.eigenvalues, axis=0)
    np.testing.assert_allclose(eig.residuals, explicit, rtol=1e-8, atol=1e-14)
    assert eig.hvps == eig.settings["steps"]


def test_float32_solves_are_deterministic():
    problem, _ = float32_case("cnn_bn")
    a = hessian_eigen(problem, k=2, tol=1e-5)
    b = hessian_eigen(problem, k=2, tol=1e-5)
    np.testing.assert_array_equal(a.eigenvectors, b.eigenvectors)
    np.testing.assert_array_equal(a.residuals, b.residuals)


def test_power_iteration_in_float32_matches_float64():
    problem, H = float32_case("mlp")
    values = np.linalg.eigvalsh(H)
    lam = values[np.argmax(np.abs(values))]
    eig = power_iteration(problem, tol=1e-7, max_iter=2000)
    assert eig.eigenvalues[0] == pytest.approx(lam, rel=2e-4)  # its own 1e-7 change test
    v = eig.eigenvectors[:, 0]
    assert eig.residuals[0] == pytest.approx(
        np.linalg.norm(H @ v - eig.eigenvalues[0] * v), rel=1e-3, abs=1e-6 * abs(lam)
    )


def test_long_float32_inner_products_are_accurate():
    """11M positive terms put torch.mv off by 1.5e-3 relative; chunked float64 sums are not."""
    gen = torch.Generator().manual_seed(0)
    n = (1 << 22) + 77  # a tail shorter than a chunk
    a = torch.rand(n, generator=gen)
    B = torch.rand(n, 3, generator=gen)
    exact = a.double() @ B.double()
    got = dot_products(a[None], B)[0]
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), exact.numpy(), rtol=1e-7)
    assert dot(a, a) == pytest.approx(float(a.double() @ a.double()), rel=1e-7)
    assert norm(a) == pytest.approx(float(a.double().norm()), rel=1e-7)
    small = torch.randn(5, 7, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(dot_products(small, small.T), small @ small.T)


# -- trace: draws, blocks, CholeskyQR2 ------------------------------------------------------------
def test_trace_draws_are_the_documented_vectors():
    op = HessianOperator(float32_case("mlp")[0])
    gen = torch.Generator().manual_seed(3)
    signs = rademacher(op, gen, 4)
    gen = torch.Generator().manual_seed(3)
    expected = torch.stack([torch.randint(0, 2, (op.dim,), generator=gen) for _ in range(4)])
    assert signs.shape == (4, op.dim) and signs.dtype == torch.float32
    torch.testing.assert_close(signs, expected.float() * 2 - 1, rtol=0, atol=0)
    gen = torch.Generator().manual_seed(3)
    normal = gaussian(op, gen, 2)
    gen = torch.Generator().manual_seed(3)
    expected = torch.stack([torch.randn(op.dim, generator=gen) for _ in range(2)])
    torch.testing.assert_close(normal, expected, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_float64_trace_values_are_unchanged_for_a_seed(method):
    """The values the estimators gave before the float32 and block changes (same seed)."""
    case = build_case("mlp")
    problem = la.Problem(case.model, nn.CrossEntropyLoss(), case.batches(16), dtype=torch.float64)
    t = hessian_trace(HessianOperator(problem), n_vectors=30, method=method, seed=5, quiet=True)
    before = {"hutchinson": 2.0565419039596984, "hutch++": 1.9663885713637077}[method]
    assert t.estimate == pytest.approx(before, rel=1e-12)
    truth = float(np.trace(dense_hessian(case.model, nn.CrossEntropyLoss(), case.X, case.y)))
    assert abs(t.estimate - truth) < 4 * t.stderr


def test_float32_hutchinson_equals_float64_for_the_same_signs():
    case = build_case("cnn_bn")
    loss = nn.CrossEntropyLoss()
    p64 = la.Problem(case.model, loss, case.batches(16), dtype=torch.float64)
    p32 = la.Problem(case.model, loss, case.batches(16))
    a = hessian_trace(p64, n_vectors=20, method="hutchinson", seed=2, quiet=True)
    b = hessian_trace(p32, n_vectors=20, method="hutchinson", seed=2, quiet=True)
    assert b.estimate == pytest.approx(a.estimate, rel=1e-5)
    assert b.stderr == pytest.approx(a.stderr, rel=1e-4)


def test_cholesky_qr2_is_orthonormal_and_spans_the_same_space():
    gen = torch.Generator().manual_seed(0)
    dim, k = (1 << 19) + 3, 10  # above the 2^22 entries where CholeskyQR2 takes over
    scales = torch.logspace(0, -4, k)  # condition number 1e4
    A = (torch.randn(dim, k, generator=gen) * scales).contiguous()
    rows = _orthonormal(A)
    assert rows.shape == (k, dim) and rows.dtype == torch.float32 and rows.is_contiguous()
    gram = dot_products(rows, rows.T)
    np.testing.assert_allclose(gram.numpy(), np.eye(k), atol=1e-6)
    householder = torch.linalg.qr(A.double(), mode="reduced").Q.T
    overlap = dot_products(rows.double(), householder.T)  # an orthogonal matrix if same span
    np.testing.assert_allclose(torch.linalg.svdvals(overlap).numpy(), 1.0, atol=1e-5)


def test_cholesky_qr2_falls_back_to_householder_on_rank_deficiency():
    gen = torch.Generator().manual_seed(1)
    dim = (1 << 19) + 3
    base = torch.randn(dim, 3, generator=gen)
    A = torch.cat([base, base[:, :1] * 2.0, torch.zeros(dim, 1)], dim=1)  # rank 3 of 5
    rows = _orthonormal(A)
    np.testing.assert_allclose(dot_products(rows, rows.T).numpy(), np.eye(5), atol=1e-5)


def test_hutchpp_on_a_large_linear_model_meets_the_exact_trace(monkeypatch):
    """A linear least-squares model of 450k weights (CholeskyQR2's regime, checked by taking
    Householder QR away): the Hessian of `mean((X w + b - y)^2)` over `n` samples is
    `2/n [X 1]^T [X 1]`, with trace `2 (||X||_F^2 + n) / n`; rows of `X` scaled by `2^-i` give
    it a decaying spectrum of rank 16, whose top 10 Hutch++ computes exactly. In float32 the
    model itself is off by about 1e-4 along the top directions (its forward pass sums 450k
    positive terms in float32), hence the looser float32 tolerance."""

    def no_householder(*args, **kwargs):
        raise AssertionError("Householder QR was not expected here")

    gen = torch.Generator().manual_seed(0)
    n, d = 16, 450_000
    X = torch.randn(n, d, generator=gen) * 0.5 ** torch.arange(n, dtype=torch.float32)[:, None]
    Y = torch.randn(n, 1, generator=gen)
    model = nn.Linear(d, 1)
    truth = 2 * (float(X.double().pow(2).sum()) + n) / n
    monkeypatch.setattr(torch.linalg, "qr", no_householder)
    for dtype, rel in [(torch.float64, 2e-5), (torch.float32, 1e-3)]:
        problem = la.Problem(model, nn.MSELoss(), (X, Y), dtype=dtype)
        plus = hessian_trace(problem, n_vectors=30, method="hutch++", seed=0, quiet=True)
        assert plus.hvps == 30 and plus.rank == 10 and plus.low_rank > 0.99 * truth
        assert plus.estimate == pytest.approx(truth, rel=rel)
    plain = hessian_trace(problem, n_vectors=30, method="hutchinson", seed=0, quiet=True)
    assert abs(plain.estimate - truth) < 4 * plain.stderr and plain.stderr > 10 * plus.stderr
    assert math.isfinite(plain.stderr)


def test_spectral_density_fits_its_basis_in_memory_or_says_so(monkeypatch) -> None:
    """The float64 basis of `block x steps` vectors is kept under `lanczos_memory`: the block
    shrinks (same result to rounding), and a basis one vector cannot hold is a one-line error."""
    problem = la.linreg(n=20)
    whole = la.spectral_density(problem, n_vectors=3, steps=2, quiet=True)
    monkeypatch.setattr(solvers, "LANCZOS_MEMORY", 2 * 2 * 8)  # one vector's 2 steps of dim 2
    one_by_one = la.spectral_density(problem, n_vectors=3, steps=2, quiet=True)
    np.testing.assert_allclose(one_by_one.nodes, whole.nodes, rtol=1e-12)
    monkeypatch.setattr(solvers, "LANCZOS_MEMORY", 8)
    with pytest.raises(la.LossatlasError, match="lower steps, or pass reorthogonalize=False"):
        la.spectral_density(problem, n_vectors=3, steps=2, quiet=True)


# -- partial re-orthogonalisation ----------------------------------------------------------------
def float32_planted(spectrum: np.ndarray, seed: int = 3) -> tuple[la.Problem, np.ndarray]:
    model, (X, lam), loss_fn, Q = planted_quadratic(spectrum.tolist(), seed=seed)
    problem = la.Problem(model.float(), loss_fn, (X.float(), lam.float()))
    return problem, ((Q * lam) @ Q.T).numpy()


def lanczos_basis(H: np.ndarray, steps: int, *, partial: bool) -> tuple[np.ndarray, int]:
    """A float32 Lanczos basis of a dense `H`, with partial (Simon's estimates decide) or no
    re-orthogonalisation; returns the basis and how many steps were re-orthogonalised."""
    Hf = torch.from_numpy(H.astype(np.float32))
    q = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(0))
    Q, alpha, beta = [q / q.norm()], [], []
    omega, scale, fixed = Orthogonality(float(torch.finfo(torch.float32).eps)), 0.0, 0
    for j in range(steps):
        w = Hf @ Q[-1]
        alpha.append(float(Q[-1] @ w))
        w -= alpha[-1] * Q[-1] + (beta[-1] * Q[-2] if j else 0)
        b = float(w.norm())
        scale = max(scale, abs(alpha[-1]) + b)
        local = [float(Q[-1] @ w)] + ([float(Q[-2] @ w)] if j else [])
        if omega.advance(alpha, beta, b, scale, local) and partial:
            for _ in range(2):
                basis = torch.stack(Q)
                w -= basis.T @ (basis @ w)
            b, fixed = float(w.norm()), fixed + 1
            omega.reset()
        beta.append(b)
        Q.append(w / b)
    return torch.stack(Q).double().numpy(), fixed


def test_simons_estimates_keep_the_basis_semi_orthogonal():
    """A spectrum with well separated top eigenvalues: they converge fast and the plain
    recurrence loses orthogonality (far beyond sqrt(eps)); with the estimates deciding, the
    basis stays within a small multiple of sqrt(eps), re-orthogonalising only some steps."""
    spectrum = np.concatenate([[50.0, 40.0, 30.0], np.linspace(0.0, 1.0, 397)])
    H = np.diag(spectrum)
    limit = math.sqrt(float(torch.finfo(torch.float32).eps))
    plain, _ = lanczos_basis(H, 60, partial=False)
    assert np.abs(plain @ plain.T - np.eye(len(plain))).max() > 100 * limit
    basis, fixed = lanczos_basis(H, 60, partial=True)
    assert np.abs(basis @ basis.T - np.eye(len(basis))).max() < 3 * limit
    assert 0 < fixed < 40


def test_partial_reorthogonalisation_in_hessian_eigen_matches_the_planted_spectrum():
    """A loose `tol` needs no re-orthogonalisation at all; a tight one re-orthogonalises as
    the estimates demand; both agree with the planted float32 spectrum, and the Ritz
    vectors' residuals are checked from the kept products."""
    spectrum = np.concatenate([[9.0, 7.5, 6.0], np.linspace(-1.0, 3.0, 497)])
    problem, H = float32_planted(spectrum)
    loose = hessian_eigen(problem, k=1, tol=1e-3)
    assert loose.settings["reorthogonalized"] == 0
    assert loose.eigenvalues[0] == pytest.approx(9.0, rel=1e-3) and loose.converged.all()
    tight = hessian_eigen(problem, k=3, tol=1e-6)
    assert 0 < tight.settings["reorthogonalized"] < tight.settings["steps"]
    np.testing.assert_allclose(tight.eigenvalues, [9.0, 7.5, 6.0], rtol=1e-5)
    assert tight.converged.all()
    explicit = np.linalg.norm(
        H @ tight.eigenvectors - tight.eigenvectors * tight.eigenvalues, axis=0
    )
    np.testing.assert_allclose(tight.residuals, explicit, rtol=0, atol=1e-5 * 9.0)
