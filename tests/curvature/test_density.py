"""Lanczos and stochastic Lanczos quadrature against dense spectra and exact moments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import lossatlas as la
from lossatlas.curvature.density import Density, spectral_density
from lossatlas.curvature.lanczos import gauss_quadrature, lanczos, lanczos_columns
from lossatlas.curvature.operator import HessianOperator
from lossatlas.plot.density import plot_density
from tests.oracles.cases import build_case
from tests.oracles.hessian import dense_hessian, planted_quadratic


def planted(spectrum, seed: int = 0) -> tuple[la.Problem, np.ndarray]:
    """A problem whose Hessian is exactly `Q diag(spectrum) Q^T`, and that matrix (float64)."""
    model, (X, y), loss_fn, _ = planted_quadratic(spectrum, seed=seed)
    return la.Problem(model, loss_fn, (X, y)), dense_hessian(model, loss_fn, X, y).numpy()


def rademacher(n_vectors: int, dim: int, seed: int) -> list[np.ndarray]:
    """The start vectors `spectral_density` draws, as its docstring describes them."""
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randint(0, 2, (dim,), generator=gen, dtype=torch.float64) * 2 - 1).numpy()
        for _ in range(n_vectors)
    ]


def test_lanczos_with_m_equal_to_dim_reproduces_the_spectrum():
    spectrum = np.array([-2.5, -1.0, -0.2, 0.3, 0.7, 1.1, 1.9, 2.4, 3.3, 4.0, 6.0, 8.5])
    problem, H = planted(spectrum, seed=5)
    op = HessianOperator(problem)
    v0 = torch.randn(op.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alpha, beta, Q = lanczos(op, op.dim, v0=v0)
    assert alpha.shape == (12,) and beta.shape == (11,) and op.hvps == 12
    theta, tau2 = gauss_quadrature(alpha, beta)
    np.testing.assert_allclose(theta, spectrum, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tau2.sum(), 1.0, rtol=1e-12)
    Q = Q.numpy()
    np.testing.assert_allclose(Q.T @ Q, np.eye(12), atol=1e-13)
    T = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    np.testing.assert_allclose(Q.T @ H @ Q, T, atol=1e-12)
    np.testing.assert_allclose(Q[:, 0], (v0 / v0.norm()).numpy(), rtol=1e-14)
    plain = lanczos(op, 5, v0=v0, reorthogonalize=False)
    assert plain[2] is None
    np.testing.assert_allclose(plain[0], alpha[:5], rtol=1e-10)


def test_lanczos_stops_at_an_invariant_subspace():
    problem, _ = planted([1.0] * 6 + [3.0] * 6 + [-2.0] * 6, seed=6)  # three distinct values
    alpha, beta, Q = lanczos(HessianOperator(problem), 10, v0=torch.ones(18, dtype=torch.float64))
    assert len(alpha) == 3 and Q.shape == (18, 3)
    np.testing.assert_allclose(gauss_quadrature(alpha, beta)[0], [-2.0, 1.0, 3.0], rtol=1e-12)
    density = spectral_density(problem, n_vectors=3, steps=10, quiet=True)
    assert density.hvps == 9 and density.nodes.shape == (3, 10)
    assert np.isnan(density.nodes[:, 3:]).all() and (density.weights[:, 3:] == 0).all()
    np.testing.assert_allclose(density.weights.sum(axis=1), 1.0, rtol=1e-12)


def test_columns_run_side_by_side_and_drop_out_on_breakdown():
    spectrum = [-1.0, 0.5, 2.0, 3.0, 4.5, 6.0]
    model, (X, y), loss_fn, Q = planted_quadratic(spectrum, seed=12)
    op = HessianOperator(la.Problem(model, loss_fn, (X, y)))
    v = torch.randn(6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    V0 = torch.stack([Q[:, 2], v, Q[:, 0] + Q[:, 5]], dim=1)  # invariant after 1, 6, 2 steps
    alphas, betas, basis = lanczos_columns(op, 6, V0)
    assert [len(a) for a in alphas] == [1, 6, 2] and op.hvps == 9 and op.passes == 6
    np.testing.assert_allclose(alphas[0], [2.0], rtol=1e-12)
    np.testing.assert_allclose(gauss_quadrature(alphas[2], betas[2])[0], [-1.0, 6.0], rtol=1e-12)
    alone = lanczos(op, 6, v0=v)
    np.testing.assert_allclose(alphas[1], alone[0], rtol=1e-12)
    np.testing.assert_allclose(betas[1], alone[1], rtol=1e-12)
    torch.testing.assert_close(basis[1].T, alone[2], rtol=1e-10, atol=1e-12)
    problem = la.Problem(model, loss_fn, (X, y))
    one = spectral_density(problem, n_vectors=5, steps=4, block=1, quiet=True)
    together = spectral_density(problem, n_vectors=5, steps=4, quiet=True)
    assert together.settings["block"] == 5 and one.hvps == together.hvps == 20
    np.testing.assert_allclose(one.nodes, together.nodes, rtol=1e-12)
    np.testing.assert_allclose(one.weights, together.weights, rtol=1e-10, atol=1e-14)


def test_gauss_quadrature_is_exact_up_to_degree_2m_minus_1():
    spectrum = np.linspace(-1.5, 2.0, 40) + np.random.default_rng(0).normal(0, 0.05, 40)
    problem, H = planted(spectrum, seed=7)
    m, n_vectors, seed = 5, 4, 11
    density = spectral_density(problem, n_vectors=n_vectors, steps=m, seed=seed, quiet=True)
    assert density.hvps == n_vectors * m and density.nodes.shape == (n_vectors, m)
    for k in range(2 * m):
        Hk = np.linalg.matrix_power(H, k)
        direct = [v @ Hk @ v / (v @ v) for v in rademacher(n_vectors, 40, seed)]
        np.testing.assert_allclose(density.moments(k), direct, rtol=1e-9, atol=1e-12)
    # Degree 2m is not integrated exactly by an m-point rule.
    Hk = np.linalg.matrix_power(H, 2 * m)
    direct = [v @ Hk @ v / (v @ v) for v in rademacher(n_vectors, 40, seed)]
    assert np.abs(density.moments(2 * m) - direct).max() > 1e-6


def test_moments_estimate_normalised_traces_within_standard_errors():
    spectrum = np.concatenate([np.linspace(-1, 1, 30), [2.5, 3.0, 4.0]])
    problem, H = planted(spectrum, seed=8)
    density = spectral_density(problem, n_vectors=200, steps=4, seed=2, quiet=True)
    for k in [1, 2, 3, 4]:
        samples = density.moments(k)
        truth = np.trace(np.linalg.matrix_power(H, k)) / len(spectrum)
        stderr = samples.std(ddof=1) / np.sqrt(len(samples))
        assert abs(density.moment(k) - truth) < 4 * stderr
        assert stderr < 0.1 * abs(truth)  # the test has teeth
    assert density.moment(0) == pytest.approx(1.0, rel=1e-12)


def test_density_integrates_to_one_and_shows_two_clusters():
    rng = np.random.default_rng(3)
    spectrum = np.concatenate([rng.normal(0.0, 0.05, 40), rng.normal(5.0, 0.1, 20)])
    problem, _ = planted(spectrum, seed=9)
    density = spectral_density(problem, n_vectors=8, steps=20, quiet=True)
    grid, values = density.density()
    assert grid.shape == (1001,) and (values >= 0).all()
    assert np.trapezoid(values, grid) == pytest.approx(1.0, abs=1e-6)
    grid, values = density.density(grid=np.linspace(-2, 7, 2001), sigma=0.2)
    assert np.trapezoid(values, grid) == pytest.approx(1.0, abs=1e-6)
    peaks = [i for i in range(1, len(grid) - 1) if values[i - 1] < values[i] >= values[i + 1]]
    assert len(peaks) == 2
    np.testing.assert_allclose(grid[peaks], [0.0, 5.0], atol=0.1)
    valley = values[np.argmin(np.abs(grid - 2.5))]
    assert valley < 1e-6 * values[peaks].min()
    mass_high = np.trapezoid(values[grid > 2.5], grid[grid > 2.5])
    assert mass_high == pytest.approx(20 / 60, abs=0.1)  # a third of the eigenvalues
    lo, hi = density.extremes
    assert spectrum.min() <= lo < spectrum.min() + 1e-3  # Ritz values lie inside the spectrum
    assert spectrum.max() - 1e-3 < hi <= spectrum.max()


def test_slq_on_the_mlp_finds_the_extreme_eigenvalues():
    case = build_case("mlp")
    problem = la.Problem(case.model, nn.CrossEntropyLoss(), case.batches(16), dtype=torch.float64)
    values = torch.linalg.eigvalsh(
        dense_hessian(case.model, nn.CrossEntropyLoss(), case.X, case.y)
    ).numpy()
    density = spectral_density(problem, n_vectors=2, steps=40, quiet=True)
    np.testing.assert_allclose(density.extremes, [values.min(), values.max()], rtol=1e-6)
    assert density.settings["dim"] == 67 and density.settings["start"] == "rademacher"
    assert density.settings["operator"]["n_samples"] == 58
    again = spectral_density(problem, n_vectors=2, steps=40, quiet=True)
    np.testing.assert_array_equal(density.nodes, again.nodes)
    assert set(density.versions) >= {"lossatlas", "torch"} and density.seconds > 0


def test_plot_density_writes_png_and_svg(tmp_path):
    rng = np.random.default_rng(4)
    spectrum = np.concatenate([rng.normal(0.0, 0.05, 40), [-1.0, 3.0, 7.0]])
    problem, _ = planted(spectrum, seed=10)
    density = spectral_density(problem, n_vectors=4, steps=15, quiet=True)
    png = plot_density(density, tmp_path / "density.png")
    assert png == tmp_path / "density.png"
    with Image.open(png) as image:
        assert image.size[0] > 500 and image.size[1] > 300
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
    svg = plot_density(density, tmp_path / "sub" / "density.svg", log=False, sigma=0.1).read_text()
    for text in ["eigenvalue", "density", "dim 43", "4 vectors", "15 steps", "max Ritz value"]:
        assert text in svg
    log_svg = plot_density(density, tmp_path / "log.svg").read_text()
    assert "density (log scale)" in log_svg
    with pytest.raises(la.LossatlasError, match=r"cannot save a figure as 'density\.txt'"):
        plot_density(density, tmp_path / "density.txt")


def test_bad_input_is_one_line_errors():
    problem, _ = planted([1.0, 2.0, 3.0])
    bad = [
        ({"n_vectors": 0}, "n_vectors must be an integer of at least 1"),
        ({"steps": 1.5}, "steps must be an integer"),
        ({"block": 0}, "block must be an integer of at least 1"),
        ({"sigma": -1.0}, "sigma must be a positive"),
        ({"grid": [[0.0, 1.0]]}, "grid must be a non-empty 1-D"),
        ({"data": 0}, "data|subset"),
    ]
    for kwargs, message in bad:
        with pytest.raises(la.LossatlasError, match=message) as info:
            spectral_density(problem, quiet=True, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(la.LossatlasError, match="expected a Problem or a HessianOperator"):
        spectral_density("model.pt", quiet=True)
    density = spectral_density(problem, n_vectors=1, steps=2, quiet=True)
    assert isinstance(density, Density)
    with pytest.raises(la.LossatlasError, match="k must be an integer of at least 0"):
        density.moment(-1)
    with pytest.raises(la.LossatlasError, match="grid must be a non-empty 1-D"):
        density.density(grid=["a"])
    with pytest.raises(la.LossatlasError, match="expected a Density"):
        plot_density(problem, "x.png")
    with pytest.raises(la.LossatlasError, match="m must be an integer"):
        lanczos(HessianOperator(problem), 0, v0=torch.ones(3))
