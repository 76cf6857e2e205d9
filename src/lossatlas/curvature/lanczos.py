"""The Lanczos process (full or partial re-orthogonalisation), Gauss quadrature, Lanczos eigenpairs.

Lanczos (1950) builds an orthonormal basis `Q` of the Krylov space `span{v, Hv, H^2 v, ...}` in
which `H` is tridiagonal, `Q^T H Q = T`; the eigenvalues of `T` (Ritz values) converge first to
the ends of the spectrum. Every step costs one Hessian-vector product. In floating point the
three-term recurrence loses orthogonality as Ritz values converge (Paige 1976), hence the
re-orthogonalisation here: full in `lanczos` and `lanczos_columns` (the spectral density),
which keep float64 vectors; partial (Simon 1984: only when an estimate of the loss says so) in
`lanczos_eigen` (`hessian_eigen`), which keeps them in the operator's dtype and device, with
inner products accumulated accurately by `dot_products`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lossatlas.curvature.operator import HessianOperator
from lossatlas.curvature.orthogonality import Orthogonality
from lossatlas.errors import LossatlasError, check_count


def start_vector(op: HessianOperator, v0: Any, seed: int) -> torch.Tensor:
    """`v0` (flat vector or `{name: tensor}`) as a flat tensor in `basis_dtype(op)` on the
    operator's device; by default the unit gradient plus a unit Gaussian drawn with `seed`.

    The gradient lies mostly in the top eigenspace of the Hessian (Gur-Ari, Roberts & Dyer
    2018, "Gradient Descent Happens in a Tiny Subspace"), so a start with it converges to
    `lambda_max` in fewer products (ResNet-18: 11 instead of 14 at `tol=1e-3`); the Gaussian
    keeps every eigenvector in the start (a zero gradient at a minimum, or the bottom of the
    spectrum). With cached gradient graphs the gradient is free; otherwise one gradient pass.
    """
    dtype = basis_dtype(op)
    if v0 is None:
        gen = torch.Generator().manual_seed(int(seed))
        v = torch.randn(op.dim, generator=gen, dtype=dtype).to(op.device)
        v /= norm(v)
        g = op.gradient().to(dtype)
        size = norm(g)
        if math.isfinite(size) and size > 0:
            v.add_(g, alpha=1 / size)
        return v
    if isinstance(v0, dict):
        missing = [n for n in op.names if n not in v0]
        if missing:
            raise LossatlasError(f"v0 lacks parameter {missing[0]!r}")
        v0 = op.flatten(v0)
    v = torch.as_tensor(np.asarray(v0) if not isinstance(v0, torch.Tensor) else v0.detach())
    v = v.reshape(-1).to(op.device, dtype)
    if v.shape != (op.dim,):
        raise LossatlasError(f"v0 has {v.numel()} entries, the operator has dim {op.dim}")
    if not bool(torch.isfinite(v).all()) or not bool(v.any()):
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
    v = start_vector(op, v0, 0).to("cpu", torch.float64).reshape(-1, 1)
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


def eigenvalue_bounds(
    theta: np.ndarray, residuals: np.ndarray, pick: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Error bounds of the Ritz values `theta[pick]`, and the gaps they use.

    Each interval `[theta_j - r_j, theta_j + r_j]` holds an eigenvalue of `H` (the residual
    bound of a symmetric matrix). If no other eigenvalue lies within `gap_i` of `theta_i`,
    the one it approximates is within `r_i^2 / gap_i` (Kato 1949, Temple 1928; Parlett 1998,
    thm. 11.7.1), far below `r_i` once `r_i` is small: e.g. ResNet-18's `lambda_max` was
    1.3e-4 off when `r_1 = 7e-3 lambda_1`. `gap_i` is taken from the other Ritz values, each
    widened by its residual: `min_j (|theta_i - theta_j| - r_j)`. That is an estimate, as in
    every Krylov method: an eigenvalue that no Ritz value approximates yet (one beyond the
    end sought, reachable only through a tiny component of the start vector) is not seen.
    Without another Ritz value, or when the intervals overlap, the bound is `r_i`.

    Returns:
        `(bounds, gaps)` for the picked values (`gaps` 0 where only `r_i` applies).
    """
    bounds, gaps = [], []
    for i in pick:
        others = np.arange(len(theta)) != i
        gap = float(np.min(np.abs(theta[others] - theta[i]) - residuals[others], initial=np.inf))
        gap = gap if 0 < gap < np.inf else 0.0
        r = float(residuals[i])
        bounds.append(min(r, r * r / gap) if gap > 0 else r)
        gaps.append(gap)
    return np.array(bounds), np.array(gaps)


CHUNK = 1024  # entries per float32 partial sum in `dot_products`
SHORT = 1 << 18  # rows up to this length are multiplied in float64 by `dot_products`


def dot_products(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """`A @ B` for `(r, n)` and `(n, s)` matrices as float64, accurate for long `n`.

    The result is on the inputs' device (on the CPU for MPS: `float64_device`).

    BLAS accumulates a float32 dot product in a few float32 registers, so its error grows
    with the length: for 11M positive terms `torch.mv` was off by 1.5e-3 relative,
    `torch.linalg.vector_norm` by 4e-4 and `torch.dot` by 6e-5 (torch 2.13, CPU), enough to
    spoil the orthogonality of a float32 Lanczos basis. Here `n` is cut into chunks of
    `CHUNK`, multiplied chunk by chunk in one batched product in the inputs' dtype, and the
    partial sums are added in float64: about 1e-8 relative, at three times the time of a
    plain product (memory-bound either way). float64 inputs take a plain product, and so do
    short ones (at most `SHORT` entries per row, copied to float64: a copy costs less there
    than the batched product's set-up, 0.3 ms a call for the digits MLP's 26k weights).
    """
    if A.dtype == torch.float64 and B.dtype == torch.float64:
        return A @ B
    if A.shape[1] <= SHORT and A.device.type != "mps":
        return A.to(torch.float64) @ B.to(torch.float64)
    if A.dtype not in (torch.float32, torch.float64) or A.dtype != B.dtype:
        A, B = A.to(torch.float32), B.to(torch.float32)
    sums = float64_device(A.device)
    (r, n), s = A.shape, B.shape[1]
    full = n - n % CHUNK
    out = torch.zeros(r, s, dtype=torch.float64, device=sums)
    if full:  # (chunks, s, CHUNK) @ (chunks, CHUNK, r): the fastest arrangement on the CPU
        left = B[:full].reshape(-1, CHUNK, s).transpose(1, 2)
        right = A[:, :full].reshape(r, -1, CHUNK).permute(1, 2, 0)
        out += torch.bmm(left, right).to(sums).sum(0, dtype=torch.float64).T
    if full < n:
        out += A[:, full:].to(sums, torch.float64) @ B[full:].to(sums, torch.float64)
    return out


def float64_device(device: torch.device) -> torch.device:
    """Where float64 sums of tensors on `device` are taken: there, or on the CPU for Apple's
    MPS, which has no float64."""
    return torch.device("cpu") if device.type == "mps" else device


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """`a . b` for flat vectors, accurately (see `dot_products`)."""
    return float(dot_products(a.reshape(1, -1), b.reshape(-1, 1)))


def norm(a: torch.Tensor) -> float:
    """`||a||` for a flat vector, accurately (see `dot_products`)."""
    return math.sqrt(max(dot(a, a), 0.0))


def basis_dtype(op: HessianOperator) -> torch.dtype:
    """The dtype `lanczos_eigen` keeps its vectors in: the operator's own, at least float32.

    The products come in the operator's dtype, so a float64 basis for a float32 operator buys
    no accuracy in the Lanczos relation `H Q = Q T + r e^T`, only twice the memory and the
    conversions (see `lanczos_eigen` for the argument).
    """
    return torch.float64 if op.dtype == torch.float64 else torch.float32


class _Rows:
    """Vectors of one length kept as the rows of blocks allocated as they fill up.

    A block holds up to `rows` vectors (at most 256 MiB, 16 vectors), so memory grows with the
    vectors kept instead of a preallocated worst case, and the products with all of them are a
    few matrix-vector products (multi-threaded BLAS) instead of one loop step per vector.
    """

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device) -> None:
        self.dim, self.dtype, self.device = dim, dtype, device
        itemsize = torch.finfo(dtype).bits // 8
        self.rows = int(min(16, max(1, (256 << 20) // max(1, dim * itemsize))))
        self.blocks: list[torch.Tensor] = []
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def new_row(self) -> torch.Tensor:
        """The next row, uninitialised, to be written in place (no copy of a finished vector)."""
        if self.n == len(self.blocks) * self.rows:
            self.blocks.append(
                torch.empty(self.rows, self.dim, dtype=self.dtype, device=self.device)
            )
        self.n += 1
        return self.row(self.n - 1)

    def row(self, i: int) -> torch.Tensor:
        return self.blocks[i // self.rows][i % self.rows]

    def _used(self) -> list[torch.Tensor]:
        full, last = divmod(self.n, self.rows)
        used = self.blocks[:full]
        return [*used, self.blocks[full][:last]] if last else used

    def coefficients(self, w: torch.Tensor) -> torch.Tensor:
        """`V w` for the `(n, dim)` matrix `V` of the rows, in float64 (`dot_products`)."""
        return torch.cat([dot_products(block, w.reshape(-1, 1))[:, 0] for block in self._used()])

    def subtract(self, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """`w - V^T c`, in place."""
        c, start = c.to(self.device, self.dtype), 0
        for block in self._used():
            w.addmv_(block.T, c[start : start + len(block)], alpha=-1)
            start += len(block)
        return w

    def combine(self, S: torch.Tensor) -> torch.Tensor:
        """`V^T S` for an `(n, k)` matrix `S`: a `(dim, k)` matrix."""
        out = torch.zeros(self.dim, S.shape[1], dtype=self.dtype, device=self.device)
        start = 0
        for block in self._used():
            out.addmm_(block.T, S[start : start + len(block)])
            start += len(block)
        return out


def combine(vectors: list[torch.Tensor], S: torch.Tensor) -> torch.Tensor:
    """`sum_j S[j] vectors[j]`: a `(dim, k)` matrix from flat vectors and an `(n, k)` `S`."""
    out = torch.zeros(vectors[0].numel(), S.shape[1], dtype=vectors[0].dtype, device=S.device)
    for v, s in zip(vectors, S):
        out.addr_(v, s.to(v.dtype))
    return out


def lanczos_eigen(
    op: HessianOperator,
    k: int,
    which: str,
    tol: float,
    v0: torch.Tensor,
    max_steps: int,
    memory: int | None = None,
    refine: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """The `k` wanted Ritz pairs of one Lanczos run, stopped as soon as they are accurate.

    After step `j` the Ritz pair `(theta_i, y_i = Q s_i)` has residual
    `r_i = ||H y_i - theta_i y_i|| = beta_j |s_{j,i}|` (Parlett, "The Symmetric Eigenvalue
    Problem", 1998, sec. 13.1); with a semi-orthogonal basis this estimate holds to rounding.
    The run stops when every wanted Ritz value's error bound (`eigenvalue_bounds`:
    `min(r_i, r_i^2 / gap_i)`) is at most `tol * max(|theta_i|, floor)`. No restarts: `Q`
    keeps every step, so `max_steps` bounds memory. Like every single-vector Krylov method it
    finds one copy of a repeated eigenvalue.

    The vectors are kept in the operator's dtype (`basis_dtype`) and device. Each step takes
    the three-term recurrence `w = H q_j - alpha_j q_j - beta_{j-1} q_{j-1}` (Lanczos 1950).
    Partial re-orthogonalisation (Simon 1984; `Orthogonality`) estimates how far the new
    vector has drifted from orthogonality; only when that passes `sqrt(eps)` (or less, for a
    tight `tol`: `Orthogonality.aim`) is it orthogonalised against all previous vectors: one
    pass of classical Gram-Schmidt as two matrix-vector products (multi-threaded), repeated
    when the pass removed more than half of `||w||^2` (Daniel, Gragg, Kaufman & Stewart
    1976; "twice is enough": Giraud et al. 2005). The Ritz values are as accurate as with full
    re-orthogonalisation, at a few vector passes per step instead of two passes over the
    whole basis: ResNet-18's `lambda_max` to `tol=1e-3` spent 0.9 s instead of 1.3 s outside
    its 11 products, without re-orthogonalising once. All inner products are accumulated in
    float64 over chunks (`dot_products`): plain float32 BLAS sums over 11M entries lose 1e-4 to
    1e-3 relative.

    For a float32 operator a float32 basis costs no accuracy that the products have: each
    product `H q` is already rounded to float32, so the computed Lanczos relation
    `H Q = Q T + beta q e^T + F` has `||F|| ~ u ||H||` with `u = 2^-24` whatever the basis is
    kept in, and the basis is kept within the semi-orthogonality `sqrt(u)` under which `T` is
    the projection of `H` on an orthonormal basis up to `O(u ||H||)` (Paige 1976; Simon
    1984). The Ritz values are then accurate to about `u ||H||`, about `1e-7 lambda_max` for
    the top one, and in tests on float32 networks matched the float64 dense Hessian to 1e-5 of
    `||H||` (the float32 Hessian's own error); on ResNet-18 the float32 and float64 bases (then
    fully re-orthogonalised) gave the same `lambda_max` to 2e-8 relative (256 images, 30
    steps) and 3e-9 (8 images, 44 steps). The explicit residual check in `hessian_eigen`
    reports what was reached.

    While the basis and the products `H q_j` fit in `memory` bytes (all of it when None) the
    products are kept too, so the Ritz vectors' products `H y_i = sum_j s_{j,i} H q_j` come
    at no extra product (`H` is linear).

    Returns:
        Ritz values; Ritz vectors (`(dim, k')` float64, possibly `k' < k` if the space was
        exhausted); their products `H y` (`(dim, k')` float64, None if the products were not
        kept); settings (solver, steps, `reorthogonalized` (steps that were), basis dtype,
        `gaps` (see `eigenvalue_bounds`) and `met`: whether they met the test).
    """
    from scipy.linalg import eigh_tridiagonal

    floor = np.finfo(np.float64).eps ** (2 / 3)
    dtype = basis_dtype(op)
    eps = float(torch.finfo(dtype).eps)
    vector_bytes = op.dim * (torch.finfo(dtype).bits // 8)
    Q = _Rows(op.dim, dtype, op.device)
    q, v0 = Q.new_row(), v0.to(op.device, dtype)
    torch.div(v0, norm(v0), out=q)
    products: list[torch.Tensor] | None = []  # the products H q_j, as the operator gave them
    alpha: list[float] = []
    beta: list[float] = []
    omega = Orthogonality(eps)
    scale, met, reorthogonalized = 0.0, False, 0
    for j in range(max_steps):
        hq = op.matvec(q).to(dtype)
        kept = (len(Q) + len(products or ()) + 1) * vector_bytes
        if products is not None and memory is not None and kept > memory:
            products = None  # the basis has priority: the check will take its own products
        if products is not None:
            products.append(hq)
        alpha.append(dot(q, hq))
        # The three-term recurrence (into a new vector while the product is kept).
        w = hq.sub(q, alpha=alpha[-1]) if products is not None else hq.sub_(q, alpha=alpha[-1])
        if j:
            w.add_(Q.row(j - 1), alpha=-beta[-1])
        b = norm(w)
        scale = max(scale, abs(alpha[-1]) + b)
        local = [dot(q, w)] + ([dot(Q.row(j - 1), w)] if j else [])
        if omega.advance(alpha, beta, b, scale, local):
            c = Q.coefficients(w)
            Q.subtract(w, c)
            b = norm(w)
            if b * b < 0.5 * (b * b + float(c @ c)):  # much removed (Daniel et al. 1976): again
                Q.subtract(w, Q.coefficients(w))
                b = norm(w)
            omega.reset()
            reorthogonalized += 1
        if j:
            theta, S = eigh_tridiagonal(np.array(alpha), np.array(beta))
        else:
            theta, S = np.array(alpha), np.ones((1, 1))
        pick = ritz_order(theta, which)[:k]
        if scale > 0:
            omega.aim(tol * float(np.min(np.abs(theta[pick]))) / scale)
        bounds, gaps = eigenvalue_bounds(theta, b * np.abs(S[-1]), pick)
        if not refine:  # the residual alone (see `hessian_eigen`'s `refine`)
            bounds, gaps = b * np.abs(S[-1, pick]), np.zeros(len(pick))
        exhausted = b <= BREAKDOWN * scale
        met = len(pick) == k and bool(
            np.all(bounds <= tol * np.maximum(np.abs(theta[pick]), floor))
        )
        if met or exhausted or j == max_steps - 1:
            break
        beta.append(b)
        q = Q.new_row()
        torch.div(w, b, out=q)
    steps = len(alpha)
    coefficients = torch.from_numpy(np.ascontiguousarray(S[:, pick])).to(op.device, dtype)
    vectors = Q.combine(coefficients).to("cpu", torch.float64).numpy()
    if products is not None:
        products = combine(products, coefficients).to("cpu", torch.float64).numpy()
    settings: dict[str, Any] = {
        "solver": "lanczos (partial re-orthogonalisation)",
        "steps": steps,
        "reorthogonalized": reorthogonalized,
        "basis": str(dtype).removeprefix("torch."),
        "gaps": [float(g) for g in gaps],
    }
    if exhausted and len(pick) < k:
        settings["error"] = (
            f"the Krylov space is exhausted after {steps} steps: the Hessian has only "
            f"{steps} distinct eigenvalues reachable from v0 (repeated eigenvalues?)"
        )
    return theta[pick], vectors, products, {**settings, "met": met or exhausted}
