"""The Lanczos process with full re-orthogonalisation, Gauss quadrature, and Lanczos eigenpairs.

Lanczos (1950) builds an orthonormal basis `Q` of the Krylov space `span{v, Hv, H^2 v, ...}` in
which `H` is tridiagonal, `Q^T H Q = T`; the eigenvalues of `T` (Ritz values) converge first to
the ends of the spectrum. Every step costs one Hessian-vector product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lossatlas.curvature.operator import HessianOperator
from lossatlas.errors import LossatlasError, check_count


def start_vector(op: HessianOperator, v0: Any, seed: int) -> np.ndarray:
    """`v0` (flat vector or `{name: tensor}`) as float64 NumPy; default seeded Gaussian."""
    if v0 is None:
        gen = torch.Generator().manual_seed(int(seed))
        return torch.randn(op.dim, generator=gen, dtype=torch.float64).numpy()
    if isinstance(v0, dict):
        missing = [n for n in op.names if n not in v0]
        if missing:
            raise LossatlasError(f"v0 lacks parameter {missing[0]!r}")
        v0 = op.flatten(v0)
    if isinstance(v0, torch.Tensor):
        v0 = v0.detach().to("cpu", torch.float64).numpy()
    v = np.asarray(v0, dtype=np.float64).reshape(-1)
    if v.shape != (op.dim,):
        raise LossatlasError(f"v0 has {v.size} entries, the operator has dim {op.dim}")
    if not np.isfinite(v).all() or not np.any(v):
        raise LossatlasError("v0 must be finite and non-zero")
    return v


def work_dtype(op: HessianOperator) -> torch.dtype:
    """float64 for vector arithmetic, except on Apple's MPS, which has no float64."""
    return torch.float32 if op.device.type == "mps" else torch.float64


BREAKDOWN = 1e-10  # beta_j below this times the largest |alpha| + beta seen: invariant subspace


def lanczos(
    op: HessianOperator, m: int, *, v0: Any, reorthogonalize: bool = True
) -> tuple[np.ndarray, np.ndarray, torch.Tensor | None]:
    """`m` steps of the Lanczos process (Lanczos 1950): `H Q = Q T + beta_m q_{m+1} e_m^T`.

    `T` is tridiagonal with diagonal `alpha` and off-diagonal `beta`; `Q` has orthonormal
    columns, the first `v0 / ||v0||`. In floating point the three-term recurrence loses
    orthogonality as Ritz values converge (Paige 1976), which creates spurious copies of them;
    with `reorthogonalize` every new vector is made orthogonal to all previous ones by two
    passes of classical Gram-Schmidt ("twice is enough": Parlett 1998; Giraud et al. 2005),
    at the price of keeping `Q`. The process stops early when `beta_j` falls below `1e-10`
    times the size of `T` so far: the Krylov space is invariant and `T`'s eigenvalues are
    exact eigenvalues.

    Args:
        op: the Hessian operator.
        m: steps (at most `dim`); each costs one Hessian-vector product.
        v0: the start vector (flat, `dim` entries, non-zero).
        reorthogonalize: full re-orthogonalisation (else only the three-term recurrence).

    Returns:
        `alpha` (`(m',)` float64), `beta` (`(m' - 1,)` float64) and `Q` (`(dim, m')` float64
        tensor on the operator's device; None without re-orthogonalisation), `m' <= m`.
    """
    v = torch.from_numpy(start_vector(op, v0, 0)).reshape(-1, 1)
    (alpha,), (beta,), Q = lanczos_columns(op, m, v, reorthogonalize=reorthogonalize)
    return alpha, beta, None if Q is None else Q[0, : len(alpha)].T


def lanczos_columns(
    op: HessianOperator,
    m: int,
    V0: torch.Tensor,
    *,
    reorthogonalize: bool = True,
    advance: Callable[[int], Any] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], torch.Tensor | None]:
    """Independent Lanczos processes from the columns of `V0`, side by side (see `lanczos`).

    Every step multiplies all still-running vectors in one `op.matmat` (one data pass), which
    is several times faster than one product at a time. A column that breaks down drops out.
    Columns must be non-zero. Returns per column `alpha` and `beta`, and `Q` as a
    `(columns, m, dim)` tensor (None without re-orthogonalisation).
    """
    m = min(check_count("m", m), op.dim)
    work = work_dtype(op)
    q = V0.T.to(op.device, work)
    q = q / q.norm(dim=1, keepdim=True)
    b = q.shape[0]
    Q = torch.empty(b, m, op.dim, dtype=work, device=op.device) if reorthogonalize else None
    on = {"dtype": work, "device": op.device}  # everything lives beside the vectors
    alpha, beta, scale = torch.zeros(b, m, **on), torch.zeros(b, m, **on), torch.zeros(b, **on)
    previous, lengths = torch.zeros_like(q), torch.zeros(b, dtype=torch.long)
    active = torch.arange(b, device=op.device)
    for j in range(m):
        qa = q[active]
        w = op.matmat(qa.T).T.to(work)
        a = (qa * w).sum(1)
        w = w - a[:, None] * qa - (beta[active, j - 1, None] * previous[active] if j else 0)
        if Q is not None:
            Q[active, j] = qa
            basis = Q[active, : j + 1]
            for _ in range(2):  # classical Gram-Schmidt, twice
                w = w - (basis.transpose(1, 2) @ (basis @ w[:, :, None]))[:, :, 0]
        norms = w.norm(dim=1)
        alpha[active, j], lengths[active.cpu()] = a, j + 1
        scale[active] = torch.maximum(scale[active], a.abs() + norms)
        if advance is not None:
            advance(len(active))
        going = norms > BREAKDOWN * scale[active]
        if j == m - 1 or not bool(going.any()):
            break
        beta[active[going], j] = norms[going]
        previous[active[going]] = qa[going]
        q[active[going]] = w[going] / norms[going, None]
        active = active[going]
    alpha, beta = alpha.to("cpu", torch.float64).numpy(), beta.to("cpu", torch.float64).numpy()
    alphas = [alpha[c, :n] for c, n in enumerate(lengths.tolist())]
    betas = [beta[c, : n - 1] for c, n in enumerate(lengths.tolist())]
    return alphas, betas, Q


def gauss_quadrature(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes `theta_j` (eigenvalues of T, ascending) and weights `tau_j^2` (Golub-Welsch 1969)."""
    from scipy.linalg import eigh_tridiagonal

    if len(alpha) == 1:
        return alpha.copy(), np.ones(1)
    theta, S = eigh_tridiagonal(alpha, beta)
    return theta, S[0] ** 2


def ritz_order(values: np.ndarray, which: str) -> np.ndarray:
    """Indices of `values` from the wanted end: "top", "bottom" or "magnitude" first."""
    key = {"top": -values, "bottom": values, "magnitude": -np.abs(values)}[which]
    return np.argsort(key, kind="stable")


def lanczos_eigen(
    op: HessianOperator, k: int, which: str, tol: float, v0: np.ndarray, max_steps: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The `k` wanted Ritz pairs of one Lanczos run, stopped as soon as they are accurate.

    After step `j` the Ritz pair `(theta_i, y_i = Q s_i)` has residual
    `||H y_i - theta_i y_i|| = beta_j |s_{j,i}|` (Parlett, "The Symmetric Eigenvalue Problem",
    1998, sec. 13.1); with full re-orthogonalisation this estimate holds to rounding. The run
    stops when it is at most `tol * max(|theta_i|, floor)` for all `k` wanted pairs, so some
    eigenvalue lies within `tol |theta_i|` of each (a symmetric matrix's residual bound). No
    restarts: `Q` keeps every step, so `max_steps` bounds memory. Like every single-vector
    Krylov method it finds one copy of a repeated eigenvalue.

    Returns:
        Ritz values and vectors (`(dim, k')`, possibly `k' < k` if the space was exhausted),
        whether they met the test, and settings (solver, steps).
    """
    from scipy.linalg import eigh_tridiagonal

    floor = np.finfo(np.float64).eps ** (2 / 3)
    work = work_dtype(op)
    q = torch.from_numpy(v0).to(op.device, work)
    q = q / q.norm()
    Q = torch.empty(max_steps, op.dim, dtype=work, device=op.device)
    alpha: list[float] = []
    beta: list[float] = []
    scale, met = 0.0, False
    for j in range(max_steps):
        Q[j] = q
        w = op.matvec(q).to(work)
        alpha.append(float(q @ w))
        basis = Q[: j + 1]
        for _ in range(2):  # classical Gram-Schmidt, twice
            w = w - basis.T @ (basis @ w)
        b = float(w.norm())
        scale = max(scale, abs(alpha[-1]) + b)
        if j:
            theta, S = eigh_tridiagonal(np.array(alpha), np.array(beta))
        else:
            theta, S = np.array(alpha), np.ones((1, 1))
        pick = ritz_order(theta, which)[:k]
        estimate = b * np.abs(S[-1, pick])
        exhausted = b <= BREAKDOWN * scale
        met = len(pick) == k and bool(
            np.all(estimate <= tol * np.maximum(np.abs(theta[pick]), floor))
        )
        if met or exhausted:
            break
        beta.append(b)
        q = w / b
    steps = len(alpha)
    vectors = (Q[:steps].T @ torch.from_numpy(S[:, pick]).to(Q)).to("cpu", torch.float64).numpy()
    settings: dict[str, Any] = {"solver": "lanczos (full re-orthogonalisation)", "steps": steps}
    if exhausted and len(pick) < k:
        settings["error"] = (
            f"the Krylov space is exhausted after {steps} steps: the Hessian has only "
            f"{steps} distinct eigenvalues reachable from v0 (repeated eigenvalues?)"
        )
    return theta[pick], vectors, {**settings, "met": met or exhausted}
