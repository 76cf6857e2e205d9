"""Which eigensolver `hessian_eigen` runs, and the memory its Lanczos vectors may take.

`solve` takes Lanczos (`lossatlas.curvature.lanczos.lanczos_eigen`) for a few pairs when its
basis fits `lanczos_memory`, and ARPACK's implicitly restarted Lanczos (Sorensen 1992;
Lehoucq, Sorensen & Yang, "ARPACK Users' Guide", SIAM 1998; through
`scipy.sparse.linalg.eigsh`) otherwise, or when a Lanczos run used up its steps.
"""

from __future__ import annotations

import numpy as np
import torch

from lossatlas.core.planning import available_memory
from lossatlas.curvature.lanczos import basis_dtype, lanczos_eigen
from lossatlas.curvature.operator import HessianOperator
from lossatlas.errors import LossatlasError, check_count

WHICH = {"top": "LA", "bottom": "SA", "magnitude": "LM"}

SOLVERS = ("auto", "lanczos", "arpack")
LANCZOS_MEMORY: int | None = None  # bytes for Lanczos vectors; None: see `lanczos_memory`
LANCZOS_MAX_K = 8  # auto takes Lanczos for k up to this


def lanczos_memory(op: HessianOperator) -> int:
    """Bytes the Lanczos solver may keep in vectors (its basis and, while they fit, products).

    `LANCZOS_MEMORY` if set, else a quarter of the memory available on the operator's device
    when the solve starts, at least 1 GiB. ResNet-18 (11.2M float32 weights, 45 MB a vector)
    on a machine with 20 GiB available gets 5 GiB: 120 vectors.
    """
    if LANCZOS_MEMORY is not None:
        return int(LANCZOS_MEMORY)
    return max(1 << 30, available_memory(op.device) // 4)


def solve(
    op, k, which, tol, v, ncv, max_hvps, solver, refine=True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """Lanczos first where it fits (see `hessian_eigen`), ARPACK for the rest.

    Returns eigenvalues, eigenvectors, their products `H v` when Lanczos kept them (else
    None), and settings.
    """
    if solver not in SOLVERS:
        raise LossatlasError(f"solver must be one of {SOLVERS}, got {solver!r}")
    cap = min(op.dim, max(100, 20 * k))
    if max_hvps is not None:
        cap = min(cap, max_hvps)
    memory = lanczos_memory(op)
    rows = memory // (op.dim * (torch.finfo(basis_dtype(op)).bits // 8))
    arpack_basis = min(cap, max(2 * k + 1, 20))  # ARPACK's default ncv, in float64
    if solver == "lanczos" or (solver == "auto" and k <= LANCZOS_MAX_K and rows >= arpack_basis):
        steps = min(cap, max(rows, 2 * k + 1))
        values, vectors, products, settings = lanczos_eigen(
            op, k, which, tol, v, steps, memory=memory, refine=refine
        )
        if settings.pop("met") or solver == "lanczos" or max_hvps is not None:
            return values, vectors, products, settings
        v = vectors.sum(axis=1)  # hand over to ARPACK, warm-started
    values, vectors, settings = arpack(op, k, which, tol, v, ncv, max_hvps)
    return values, vectors, None, settings


def arpack(op, k, which, tol, v, ncv, max_hvps) -> tuple[np.ndarray, np.ndarray, dict]:
    """ARPACK's eigenpairs (only those it converged if it runs out of restarts)."""
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigsh

    ncv = min(op.dim, max(2 * k + 1, 20)) if ncv is None else check_count("ncv", ncv, k + 1)
    ncv = min(ncv, op.dim)
    maxiter = 10 * op.dim
    if max_hvps is not None:
        # ARPACK spends about ncv + 1 products on its first basis and at most ncv - k per restart.
        budget = check_count("max_hvps", max_hvps, k + 3)
        ncv = max(k + 1, min(ncv, (budget + k - 1) // 2))
        maxiter = max(1, (budget - ncv - 1) // (ncv - k))
    settings = {"solver": "arpack (scipy.sparse.linalg.eigsh)", "ncv": ncv, "maxiter": maxiter}
    A = op.as_linear_operator()
    if isinstance(v, torch.Tensor):
        v = v.to("cpu", torch.float64).numpy()
    try:
        values, vectors = eigsh(A, k=k, which=WHICH[which], tol=tol, v0=v, ncv=ncv, maxiter=maxiter)
    except ArpackNoConvergence as exc:  # only the pairs that met ARPACK's test come back
        values, vectors = exc.eigenvalues, exc.eigenvectors
    except ArpackError as exc:  # e.g. H = 0: "starting vector is zero"
        values, vectors = np.zeros(0), np.zeros((op.dim, 0))
        settings["error"] = str(exc).strip().splitlines()[0]
    return np.asarray(values, np.float64), np.asarray(vectors, np.float64), settings
