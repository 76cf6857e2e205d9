"""The Hessian's eigenvalue density by stochastic Lanczos quadrature (SLQ), and its plot.

For a unit start vector `v`, `m` Lanczos steps give a tridiagonal `T = S diag(theta) S^T`, and
`v^T f(H) v ~ sum_j tau_j^2 f(theta_j)` with `tau_j = S[0, j]`: the `m`-point Gauss quadrature
of the spectral measure `sum_i (q_i^T v)^2 delta(t - lambda_i)`, exact for polynomials of
degree up to `2m - 1` (Golub & Meurant, "Matrices, Moments and Quadrature", 1994). Averaging
over random `v` with `E[v v^T] = I / dim` estimates the density
`phi(t) = (1/dim) sum_i delta(t - lambda_i)`, which is then smoothed by a Gaussian
(Ubaru, Chen & Saad, SIAM J. Matrix Anal. Appl. 38(4), 2017; Ghorbani, Krishnan & Xiao,
"An investigation into neural net optimization via Hessian eigenvalue density", ICML 2019).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossatlas.core.cluster import RayOptions, as_ray_options
from lossatlas.core.planning import blas_on_one_thread
from lossatlas.core.progress import progress
from lossatlas.core.provenance import versions
from lossatlas.curvature.distributed import RayBlocks, seeded_tasks
from lossatlas.curvature.eigen import Source
from lossatlas.curvature.lanczos import gauss_quadrature, lanczos_columns
from lossatlas.curvature.operator import HessianOperator, as_operator
from lossatlas.curvature.solvers import lanczos_memory
from lossatlas.errors import LossatlasError, check_count, check_positive


def _check_grid(grid: Any) -> np.ndarray:
    try:
        grid = np.asarray(grid, dtype=np.float64)
    except (TypeError, ValueError):
        grid = np.zeros(0)
    if grid.ndim != 1 or grid.size == 0 or not np.isfinite(grid).all():
        raise LossatlasError("grid must be a non-empty 1-D sequence of finite numbers")
    return grid


@dataclass(frozen=True, eq=False)
class Density:
    """Gauss quadrature rules of the Hessian's spectral measure from random start vectors.

    Attributes:
        nodes: `(n_vectors, m)` Ritz values, ascending per row; NaN pads rows that stopped
            early (Lanczos breakdown), whose weights are 0.
        weights: `(n_vectors, m)` squared first components `tau^2`; every row sums to 1.
        hvps: Hessian-vector products used.
        seconds: wall-clock time.
        settings: n_vectors, steps, seed, start vectors, dim and the operator's settings;
            after a run with `ray=`, also `ray` (workers, requeued, replaced, startup_seconds,
            pools).
        versions: package versions.
        sigma, grid: defaults for `density` (None: chosen from the Ritz values).
    """

    nodes: np.ndarray
    weights: np.ndarray
    hvps: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    sigma: float | None = None
    grid: np.ndarray | None = None

    @property
    def extremes(self) -> tuple[float, float]:
        """The smallest and largest Ritz values (estimates of `lambda_min`, `lambda_max`)."""
        return float(np.nanmin(self.nodes)), float(np.nanmax(self.nodes))

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the smallest and largest Ritz values (estimates of `lambda_min`
        and `lambda_max`), the number of start vectors and Lanczos steps, and the cost."""
        lo, hi = self.extremes
        return {
            "lambda_min": lo,
            "lambda_max": hi,
            "n_vectors": int(self.nodes.shape[0]),
            "steps": int(self.nodes.shape[1]),
            "hvps": int(self.hvps),
            "seconds": float(self.seconds),
        }

    def moments(self, k: int) -> np.ndarray:
        """Per vector, `sum_j tau_j^2 theta_j^k = v^T H^k v / v^T v` (exact for `k < 2m`)."""
        k = check_count("k", k, 0)
        return (self.weights * np.nan_to_num(self.nodes) ** k).sum(axis=1)

    def moment(self, k: int) -> float:
        """The mean of `moments(k)`: an unbiased estimate of `tr(H^k) / dim` (for `k < 2m`)."""
        return float(self.moments(k).mean())

    def density(
        self, grid: Any = None, sigma: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The Gaussian-smoothed density `(grid, phi)`, which integrates to 1 over the line.

        `phi(t) = mean_i sum_j tau_ij^2 N(t; theta_ij, sigma^2)` (Ghorbani et al. 2019).

        Args:
            grid: points at which to evaluate it; default 1001 points over
                `[theta_min - 5 sigma, theta_max + 5 sigma]` (the integral on it is 1 to 1e-6).
            sigma: kernel width; default 1% of `theta_max - theta_min` (or of `|theta|`, or
                1e-3, when all Ritz values coincide).
        """
        lo, hi = self.extremes
        grid = self.grid if grid is None else grid
        sigma = self.sigma if sigma is None else sigma
        if sigma is None:
            width = hi - lo if hi > lo else max(abs(hi), abs(lo))
            sigma = 0.01 * width if width > 0 else 1e-3
        sigma = check_positive("sigma", sigma)
        if grid is None:
            grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, 1001)
        grid = _check_grid(grid)
        keep = self.weights > 0
        theta, tau2 = self.nodes[keep], self.weights[keep] / len(self.nodes)
        values = np.zeros_like(grid)
        for start in range(0, theta.size, 256):  # bounded memory for big grids
            z = (grid[:, None] - theta[None, start : start + 256]) / sigma
            values += np.exp(-0.5 * z**2) @ tau2[start : start + 256]
        return grid, values / (sigma * math.sqrt(2 * math.pi))


@blas_on_one_thread
def spectral_density(
    source: Source,
    *,
    n_vectors: int = 10,
    steps: int = 50,
    seed: int = 0,
    sigma: float | None = None,
    grid: Any = None,
    reorthogonalize: bool = True,
    block: int | None = None,
    quiet: bool | None = None,
    ray: str | RayOptions | None = None,
    **operator_options: Any,
) -> Density:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature (SLQ).

    Each of `n_vectors` Rademacher vectors (entries +-1 with equal probability, drawn one after
    the other by `torch.randint(0, 2, (dim,))` from a CPU generator seeded with `seed`, so
    `E[v v^T] / v^T v = I / dim`) starts `steps` Lanczos steps with full re-orthogonalisation;
    the eigen-decomposition of each tridiagonal gives quadrature nodes and weights. Costs
    `n_vectors * steps` products, `block` of them per data pass. The error of `moment(k)`
    falls like `1/sqrt(n_vectors)`; the resolution of the density grows with `steps`
    (Ubaru et al. 2017). Smooth and plot it with `Density.density` and `plot_density`.

    Args:
        source: a `Problem` or a `HessianOperator`.
        n_vectors: random start vectors.
        steps: Lanczos steps per vector (at most dim).
        seed: seed of the start vectors.
        sigma, grid: defaults kept for `Density.density` and `plot_density`.
        reorthogonalize: full re-orthogonalisation (keeps `block * steps` float64 vectors in
            memory; `block` is lowered to fit `solvers.lanczos_memory`, a one-line error if one
            vector's `steps` do not fit).
        block: vectors run side by side (default: `n_vectors`, at most the operator's
            `vectors_per_pass`; with `ray=`, `n_vectors` spread over the `in_flight` tasks of
            every worker, at most that); the result does not depend on it beyond rounding.
        quiet: progress bar over products off (default: the LOSSATLAS_QUIET environment variable).
        ray: run the Lanczos processes on a Ray cluster: its address (`"auto"`, `"host:port"`)
            or `RayOptions`. Each task is one `block` of start vectors: the worker gets the
            state of the seeded generator before the block's first vector, draws the vectors
            itself (the ones a local run draws) and returns their Lanczos coefficients; the
            quadrature is done here. The same result as a local run to rounding; a dead
            worker's blocks are requeued. Every worker builds the operator once (a
            `HessianOperator` source is rebuilt from `op.problem` and its options, see
            `hessian_trace`); the memory check above uses this machine's memory.
            `settings["ray"]` records the pool. Needs `pip install 'lossatlas[ray]'`.
        **operator_options: passed to `HessianOperator` (`params`, `data`, `at`, ...).
    """
    options = as_ray_options(ray)
    op = as_operator(source, **operator_options)
    n_vectors, steps = check_count("n_vectors", n_vectors), check_count("steps", steps)
    sigma = None if sigma is None else check_positive("sigma", sigma)
    grid = None if grid is None else _check_grid(grid)
    remote = None if options is None else RayBlocks(options, op)
    if block is None:
        most = min(n_vectors, op.vectors_per_pass)
        block = most if remote is None else remote.block_size(n_vectors, most)
    else:
        block = check_count("block", block)
    m = min(steps, op.dim)
    if reorthogonalize:  # each running vector keeps m float64 basis vectors
        per_vector, budget = m * op.dim * 8, lanczos_memory(op)
        if per_vector > budget:
            raise LossatlasError(
                f"spectral_density keeps {m} float64 vectors of {op.dim} weights per start "
                f"vector ({per_vector / 2**30:.1f} GiB), over the {budget / 2**30:.1f} GiB "
                "it may use; lower steps, or pass reorthogonalize=False"
            )
        block = min(block, budget // per_vector)
    start, hvps0 = time.perf_counter(), op.hvps
    gen = torch.Generator().manual_seed(int(seed))
    nodes, weights = np.full((n_vectors, m), np.nan), np.zeros((n_vectors, m))

    def record(first: int, coefficients: tuple[list, list]) -> None:
        for i, (alpha, beta) in enumerate(zip(*coefficients), start=first):
            theta, tau2 = gauss_quadrature(np.asarray(alpha), np.asarray(beta))
            nodes[i, : len(theta)], weights[i, : len(theta)] = theta, tau2

    with progress("spectral density (products)", n_vectors * m, quiet=quiet) as advance:
        if remote is None:
            for first in range(0, n_vectors, block):
                count = min(block, n_vectors - first)
                record(first, _lanczos_block(op, gen, count, m, reorthogonalize, advance))
        else:
            tasks = seeded_tasks(gen, n_vectors, block, _skip_starts(op.dim), (m, reorthogonalize))
            for i, done in remote.run(_lanczos_block, tasks):
                record(i * block, done.value)
                advance(done.hvps)
    settings = {
        "n_vectors": n_vectors,
        "steps": m,
        "seed": int(seed),
        "start": "rademacher",
        "reorthogonalize": bool(reorthogonalize),
        "block": block,
        "dim": op.dim,
        "operator": op.settings if remote is None else {**op.settings, **remote.operator},
        "sigma": sigma,
        "grid": None if grid is None else f"{grid.size} points in [{grid[0]:g}, {grid[-1]:g}]",
    }
    if remote is not None:
        settings["ray"] = remote.stats
    seconds = time.perf_counter() - start
    hvps = op.hvps - hvps0 if remote is None else remote.hvps
    return Density(nodes, weights, hvps, seconds, settings, versions(), sigma, grid)


def _start(generator: torch.Generator, dim: int) -> torch.Tensor:
    """The next Rademacher start vector: `torch.randint(0, 2, (dim,)) * 2.0 - 1`."""
    return torch.randint(0, 2, (dim,), generator=generator) * 2.0 - 1


def _skip_starts(dim: int) -> Callable[[torch.Generator, int], None]:
    """`skip(generator, k)`: draw and drop `k` start vectors (for `seeded_tasks`)."""

    def skip(generator: torch.Generator, k: int) -> None:
        for _ in range(k):
            _start(generator, dim)

    return skip


def _lanczos_block(
    op: HessianOperator,
    generator: torch.Generator,
    count: int,
    m: int,
    reorthogonalize: bool,
    advance: Callable[[int], Any] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Lanczos coefficients `(alphas, betas)` from the next `count` start vectors of
    `generator`, side by side: one block, here or on a Ray worker."""
    V0 = torch.stack([_start(generator, op.dim) for _ in range(count)], dim=1).double()
    alphas, betas, _ = lanczos_columns(op, m, V0, reorthogonalize=reorthogonalize, advance=advance)
    return alphas, betas
