"""Extreme Hessian eigenpairs by Lanczos, implicitly restarted Lanczos (ARPACK), or power
iteration.

`hessian_eigen` runs the Lanczos process (Lanczos 1950) with partial re-orthogonalisation for a
few eigenpairs at one end of the spectrum, keeping its vectors in the operator's dtype and
device, or asks ARPACK's implicitly restarted Lanczos method (Sorensen 1992; Lehoucq, Sorensen
& Yang, "ARPACK Users' Guide", SIAM 1998) through `scipy.sparse.linalg.eigsh` (which one:
`lossatlas.curvature.solvers`), using only Hessian-vector products, and then checks every pair
by a bound of its eigenvalue's error from its residual `||H v - lambda v||`.
`power_iteration` is the baseline PyHessian uses (Yao, Gholami, Keutzer & Mahoney, "PyHessian:
Neural Networks Through the Lens of the Hessian", 2020). The plain Lanczos process is in
`lossatlas.curvature.lanczos`, the spectral density in `lossatlas.curvature.density`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossatlas.core.directions import Directions
from lossatlas.core.planning import blas_on_one_thread
from lossatlas.core.problem import Problem
from lossatlas.core.provenance import versions
from lossatlas.curvature.lanczos import (
    basis_dtype,
    dot,
    norm,
    ritz_order,
    start_vector,
)
from lossatlas.curvature.operator import HessianOperator, as_operator
from lossatlas.curvature.solvers import WHICH, solve
from lossatlas.errors import LossatlasError, LossatlasWarning, check_count, check_positive

RESIDUAL_SLACK = 10.0  # the explicit check allows 10x the solver's own tolerance
FLOOR = np.finfo(np.float64).eps ** (2 / 3)  # ARPACK's floor on |lambda| in its test
Source = Problem | HessianOperator


@dataclass(frozen=True, eq=False)
class Eigen:
    """Eigenpairs of a Hessian, with their residuals and how they were found.

    Attributes:
        eigenvalues: `(k,)` float64, descending for `"top"`, ascending for `"bottom"`, by
            descending `|lambda|` for `"magnitude"`. NaN for pairs a solver gave up on.
        eigenvectors: `(dim, k)` float64 unit columns, in the operator's parameter order; the
            sign is fixed so that the largest-magnitude entry is positive.
        residuals: `||H v - lambda v||` from explicit products: one after the solve, or the
            Lanczos products combined (`settings["check"]`).
        converged: whether each pair passed the solver's test (see `settings["test"]`).
        hvps: Hessian-vector products used, including the residual check.
        seconds: wall-clock time.
        settings: which, k, tol, solver, seed, the operator's settings, the test applied;
            for Lanczos its steps and `basis` (the dtype of its vectors), and `check`: where
            the products for the residuals came from.
        versions: package versions (`lossatlas.landscape.record.versions`).
        names: the differentiated parameters, in vector order.
        layout: `(name, shape)` of every model parameter, to build full directions.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residuals: np.ndarray
    converged: np.ndarray
    hvps: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    layout: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def headline(self) -> dict[str, Any]:
        """Headline numbers: which end of the spectrum, the eigenvalues in the record's order
        (`eigenvalues[0]` is `lambda_max` for `which="top"`), their residuals and error bounds,
        which pairs converged, and the cost."""
        return {
            "which": self.settings.get("which"),
            "eigenvalues": [float(v) for v in self.eigenvalues],
            "residuals": [float(r) for r in self.residuals],
            "error_bounds": self.settings.get("error_bounds"),
            "converged": [bool(c) for c in self.converged],
            "hvps": int(self.hvps),
            "seconds": float(self.seconds),
        }

    def vector(self, i: int = 0) -> dict[str, torch.Tensor]:
        """Eigenvector `i` as a `{name: tensor}` dict over all parameters (zeros off `params`)."""
        if not -len(self.eigenvalues) <= i < len(self.eigenvalues):
            raise LossatlasError(f"there are {len(self.eigenvalues)} eigenpairs, not index {i}")
        column = self.eigenvectors[:, i]
        if not np.isfinite(column).all():
            raise LossatlasError(f"eigenpair {i} was not found (the solver did not converge)")
        shapes = dict(self.layout)
        sizes = [int(np.prod(shapes[n], dtype=np.int64)) for n in self.names]
        parts = torch.split(torch.from_numpy(column.copy()), sizes)
        chosen = {n: p.reshape(shapes[n]) for n, p in zip(self.names, parts)}
        return {
            n: chosen[n] if n in chosen else torch.zeros(s, dtype=torch.float64)
            for n, s in self.layout
        }

    def directions(self, n: int | None = None) -> Directions:
        """The first `n` eigenvectors (all by default) as `Directions` for `surface`.

        Vectors are unit-norm float64 CPU tensors (surface moves them to the problem's device
        and dtype), so surface coordinates are Euclidean distances along eigenvectors. They
        were computed at the operator's point: pass the same point as the surface's `center`.
        """
        k = len(self.eigenvalues)
        n = k if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= k:
            raise LossatlasError(f"n must be an integer from 1 to {k}, got {n!r}")
        keys = ("which", "solver", "operator", "at")
        settings = {"kind": "hessian", **{key: self.settings.get(key) for key in keys}}
        settings["eigenvalues"] = [float(v) for v in self.eigenvalues[:n]]
        settings["residuals"] = [float(r) for r in self.residuals[:n]]
        return Directions(tuple(self.vector(i) for i in range(n)), settings)


def _unit_signs(V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column norms and signs that make `V / norms * signs` unit columns whose
    largest-magnitude entry is positive (a deterministic sign)."""
    norms = np.linalg.norm(V, axis=0, keepdims=True)
    peaks = V[np.argmax(np.abs(V), axis=0), np.arange(V.shape[1])]
    return norms, np.where(peaks < 0, -1.0, 1.0)


def _fix_signs(V: np.ndarray) -> np.ndarray:
    """Unit columns whose largest-magnitude entry is positive (a deterministic sign)."""
    norms, signs = _unit_signs(V)
    return V / norms * signs


def _point_of(op: HessianOperator) -> str:
    point = {**op.fixed, **op.point}
    same = all(torch.equal(point[n], w) for n, w in op.problem.params.items())
    return "problem weights" if same else "given point"


def _record(
    op: HessianOperator, arrays: tuple[np.ndarray, ...], hvps0: int, start: float, settings: dict
) -> Eigen:
    settings = {**settings, "operator": op.settings, "at": _point_of(op)}
    layout = tuple((n, tuple(w.shape)) for n, w in op.problem.params.items())
    seconds = time.perf_counter() - start
    names = tuple(op.names)
    return Eigen(*arrays, op.hvps - hvps0, seconds, settings, versions(), names, layout)


@blas_on_one_thread
def hessian_eigen(
    source: Source,
    k: int = 1,
    *,
    which: str = "top",
    tol: float = 1e-3,
    max_hvps: int | None = None,
    v0: Any = None,
    seed: int = 0,
    ncv: int | None = None,
    solver: str = "auto",
    refine: bool = True,
    **operator_options: Any,
) -> Eigen:
    """The `k` extreme eigenpairs of the Hessian by Lanczos, with a residual check.

    `solver="lanczos"` runs one Lanczos process with partial re-orthogonalisation and stops as
    soon as the wanted Ritz pairs meet `tol` (see `lossatlas.curvature.lanczos.lanczos_eigen`):
    the fewest products, at the memory of one vector per step, kept in the operator's dtype
    and device (Paige 1976 and Simon 1984 for why a float32 basis is enough for a float32
    operator). `"arpack"` restarts to keep the basis at `ncv` float64 vectors. `"auto"` takes
    Lanczos for `k <= 8` when at least ARPACK's default basis (`max(2k + 1, 20)` vectors, at
    most the step cap `max(100, 20 k)`) fits in `lanczos_memory` (a quarter of the available
    memory, at least 1 GiB), ARPACK otherwise, and hands a Lanczos run that used up its steps
    or memory over to ARPACK, warm-started from its Ritz vectors.

    Lanczos (1950) builds an orthonormal basis of the Krylov space `span{v0, H v0, ...}` in
    which `H` is tridiagonal; its eigenvalues (Ritz values) converge first to the ends of the
    spectrum. `tol` is the relative accuracy asked of the eigenvalues. A Ritz pair with residual
    `r = ||H v - lambda v||` has an eigenvalue within `r`, and within `r^2 / gap` when no other
    eigenvalue is within `gap` of it (Kato-Temple; Parlett 1998, thm. 11.7.1), with the gap
    estimated from the other Ritz values (`lanczos.eigenvalue_bounds`). Lanczos stops when every
    wanted value's bound is at most `tol * max(|lambda|, eps^(2/3))`. The default start is the
    gradient plus a Gaussian (`lanczos.start_vector`). For ResNet-18's `lambda_max` the default
    `tol=1e-3` stopped after 11 products at a measured error of 2.0e-4 (a residual test from a
    Gaussian start needed 20); PyHessian's rule (the estimate changed by less than 1e-3) stopped
    after 12 at 3.7e-3; `tol=1e-6` took 19 at 2.1e-7. ARPACK (Lehoucq, Sorensen & Yang 1998)
    keeps the basis at `ncv` vectors by implicit restarts (Sorensen 1992) and applies the
    stricter `r <= tol |lambda|`. Afterwards every pair is checked with explicit products:
    `converged` means its bound, from the explicit residual, is at most `10 tol max(|lambda|,
    eps^(2/3))` (the slack covers rounding in the products; in float32 small eigenvalues may
    fail it, which is honest: they are not known to that accuracy); `settings["error_bounds"]`
    holds the bounds. `H v` is one block product after the solve, or, when Lanczos kept its
    products `H q_j` (while they fit its memory), their combination `sum_j s_j H q_j`, which is
    `H v` by linearity and costs no product (`settings["check"]` says which). The eigenvectors
    are accurate to about `r / gap` in angle.

    Args:
        source: a `Problem` or a `HessianOperator`.
        k: number of eigenpairs. `k == dim` computes the dense Hessian (dim products) instead.
        which: `"top"` (largest algebraic: `lambda_max`), `"bottom"` (smallest algebraic, the
            most negative) or `"magnitude"` (largest `|lambda|`).
        tol: relative accuracy asked of the eigenvalues (see above); 1e-3 gives 2/lambda_max
            (the largest stable learning rate) to 0.1%.
        max_hvps: budget of products for the solve (about; the k of the check come on top).
            If it runs out, converged pairs are returned, the rest are NaN, with a warning.
        v0: start vector (flat or `{name: tensor}`), e.g. a previous eigenvector to warm start;
            default the unit gradient plus a unit Gaussian drawn with `seed` (deterministic).
        seed: seed of the default start vector.
        ncv: Lanczos basis size (default SciPy's `max(2k + 1, 20)`, at most dim).
        refine: bound the error by `min(r, r^2 / gap)` (default). False: by the residual `r`
            alone, the safe test for a `v0` that is nearly an eigenvector (a warm start after
            the Hessian changed): Lanczos then resolves the top Ritz value within two or three
            products while the other Ritz values have not yet seen the next eigenvalue, so the
            estimated gap is too large; measured on a small network, a 1.3% error under a
            0.3% "bound". `Monitor` warm-starts this way.
        **operator_options: passed to `HessianOperator` (`params`, `data`, `at`, `method`, ...).
    """
    op = as_operator(source, **operator_options)
    if which not in WHICH:
        raise LossatlasError(f"which must be one of {tuple(WHICH)}, got {which!r}")
    k = check_count("k", k)
    tol = check_positive("tol", tol)
    if max_hvps is not None:
        check_count("max_hvps", max_hvps, k + 3)
    if ncv is not None:
        check_count("ncv", ncv, k + 1)
    if k > op.dim:
        raise LossatlasError(f"k={k} exceeds the number of parameters differentiated ({op.dim})")
    start, hvps0 = time.perf_counter(), op.hvps
    v = start_vector(op, v0, seed)
    settings: dict[str, Any] = {"which": which, "k": k, "tol": tol, "seed": int(seed)}
    products = None
    if k == op.dim:
        H = op.dense().to("cpu", torch.float64).numpy()
        values, vectors = np.linalg.eigh((H + H.T) / 2)
        settings["solver"] = "dense (numpy.linalg.eigh, k == dim)"
    else:
        values, vectors, products, solved = solve(
            op, k, which, tol, v, ncv, max_hvps, solver, refine
        )
        settings.update(solved)
    order = ritz_order(values, which)
    same = np.array_equal(order, np.arange(len(order)))  # no copies of model-sized columns
    values = values[order]
    gaps = np.array(settings.pop("gaps", np.zeros(len(order))), dtype=np.float64)[order]
    vectors = vectors if same else vectors[:, order]
    norms, signs = _unit_signs(vectors)
    vectors *= signs / norms  # the solvers' arrays are fresh: scaled in place
    if k == op.dim:  # the dense matrix is at hand: no more products for the check
        HV = H @ vectors
    elif products is not None:  # Lanczos kept its products: H y = sum_j s_j H q_j
        HV = products if same else products[:, order]
        HV *= signs / norms
        settings["check"] = "products kept by Lanczos"
    elif len(values):
        # (k, dim) rows, passed as their (dim, k) transpose: every column is contiguous.
        V = torch.from_numpy(np.ascontiguousarray(vectors.T)).to(op.device, op.dtype).T
        HV = op.matmat(V).to("cpu", torch.float64).numpy()
        settings["check"] = f"{len(values)} more products"
    else:
        HV = vectors.copy()
    HV -= vectors * values  # the residuals H v - lambda v, in place
    residual = np.linalg.norm(HV, axis=0)
    bounds, isolated = residual.copy(), (gaps > 0) & refine
    bounds[isolated] = np.minimum(residual, residual**2 / np.where(isolated, gaps, 1.0))[isolated]
    ok = bounds <= RESIDUAL_SLACK * tol * np.maximum(np.abs(values), FLOOR)
    settings["error_bounds"] = [float(b) for b in bounds]
    pad = np.full(k - len(values), np.nan)  # pairs ARPACK did not converge
    if len(pad):
        vectors = np.concatenate([vectors, np.full((op.dim, len(pad)), np.nan)], axis=1)
    arrays = (
        np.concatenate([values, pad]),
        vectors,
        np.concatenate([residual, pad]),
        np.concatenate([ok, pad > 0]),
    )
    test = f"min(r, r^2 / gap) <= {RESIDUAL_SLACK:g} tol max(|lambda|, eps^(2/3))"
    test += ", r = ||Hv - lambda v||"
    record = _record(op, arrays, hvps0, start, {**settings, "test": test})
    if not record.converged.all():
        why = f" ({settings['error']})" if "error" in settings else "; raise max_hvps or tol"
        warnings.warn(
            f"hessian_eigen: {int(record.converged.sum())} of {k} eigenpairs converged after "
            f"{record.hvps} Hessian-vector products{why}",
            LossatlasWarning,
            stacklevel=2,
        )
    return record


@blas_on_one_thread
def power_iteration(
    source: Source,
    *,
    tol: float = 1e-3,
    max_iter: int = 1000,
    seed: int = 0,
    v0: Any = None,
    **operator_options: Any,
) -> Eigen:
    """The largest-magnitude eigenpair by power iteration, as PyHessian computes `lambda_max`.

    `v <- H v / ||H v||` from a unit `v0`; the Rayleigh quotient `lambda = v^T H v` is taken
    at every step and the iteration stops when `|lambda - lambda_prev| <= tol |lambda|`
    (Yao et al. 2020). It converges to the eigenvalue of largest `|lambda|`, which is not
    `lambda_max` when the most negative eigenvalue is larger in magnitude, and its error falls
    like `(|lambda_2| / |lambda_1|)^(2t)`, slowly when the two are close; Lanczos
    (`hessian_eigen`) needs fewer products for the same accuracy. Here `converged` means the
    stopping rule was met; the residual comes from the last product at no extra cost.

    Args:
        source: a `Problem` or a `HessianOperator`.
        tol: relative change of the Rayleigh quotient at which to stop.
        max_iter: most products.
        seed: seed of the default start vector's Gaussian.
        v0: start vector (flat or `{name: tensor}`); default as in `hessian_eigen`.
        **operator_options: passed to `HessianOperator`.
    """
    op = as_operator(source, **operator_options)
    tol = check_positive("tol", tol)
    max_iter = check_count("max_iter", max_iter)
    start, hvps0 = time.perf_counter(), op.hvps
    work = basis_dtype(op)  # the products' own precision: no conversions per step
    v = start_vector(op, v0, seed).to(op.device, work)
    v = v / norm(v)
    previous, converged, steps = None, False, 0
    for steps in range(1, max_iter + 1):  # noqa: B007 (the count is kept)
        w = op.matvec(v).to(work)
        value = dot(v, w)  # inner products summed accurately (see `dot_products`)
        residual = norm(w - value * v)
        size = norm(w)
        if size == 0 or (previous is not None and abs(value - previous) <= tol * abs(value)):
            converged = True
            break
        v, previous = w / size, value
    settings = {"which": "magnitude", "k": 1, "tol": tol, "seed": int(seed), "max_iter": max_iter}
    settings.update(solver="power iteration", iterations=steps)
    settings["test"] = "|lambda - lambda_prev| <= tol |lambda| (Rayleigh quotients)"
    vector = _fix_signs(v.to("cpu", torch.float64).numpy().reshape(-1, 1))
    arrays = (np.array([value]), vector, np.array([residual]), np.array([converged]))
    record = _record(op, arrays, hvps0, start, settings)
    if not converged:
        change = abs(value - previous) / abs(value) if previous is not None and value else None
        warnings.warn(
            f"power_iteration: no convergence in {max_iter} products (last relative change "
            f"{change if change is None else f'{change:.2g}'}); raise max_iter or tol",
            LossatlasWarning,
            stacklevel=2,
        )
    return record


def hessian_directions(
    source: Source, n: int = 2, *, which: str = "top", **options: Any
) -> Directions:
    """The `n` extreme Hessian eigenvectors as `Directions` (see `hessian_eigen`, `Eigen`).

    Along a unit eigenvector `v` with eigenvalue `lambda`, `L(theta + c v)` has second
    derivative `lambda` at `c = 0`: the sharpest (top) or most negative (bottom) curvature.
    """
    return hessian_eigen(source, n, which=which, **options).directions()
