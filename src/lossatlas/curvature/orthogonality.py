"""Simon's estimates of the Lanczos vectors' loss of orthogonality (partial re-orthogonalisation).

`lanczos.lanczos_eigen` orthogonalises a new Lanczos vector against the whole basis only when
`Orthogonality` says its products with the earlier vectors have grown past a limit.
"""

from __future__ import annotations

import math

import numpy as np


class Orthogonality:
    """Estimates of `omega_{j,k} = q_j . q_k` for the Lanczos vectors, by Simon's recurrence.

    Partial re-orthogonalisation (Simon, "The Lanczos algorithm with partial
    reorthogonalization", Math. Comp. 1984): in floating point the three-term recurrence
    keeps the Lanczos vectors orthogonal only until a Ritz pair converges. The products of
    the new vector with the old ones follow from `H`'s symmetry and the recurrence
    `H q_j = beta_{j-1} q_{j-1} + alpha_j q_j + beta_j q_{j+1}` alone:

        beta_j w_{j+1,k} = beta_k w_{j,k+1} + (alpha_k - alpha_j) w_{j,k}
                           + beta_{k-1} w_{j,k-1} - beta_{j-1} w_{j-1,k} + theta_{j,k},

    with `theta_{j,k}` the rounding of one step: the larger of `eps * ||T||` and the measured
    products of the new vector with `q_j` and `q_{j-1}` (see `advance`), added with the sign
    of the rest. While every `|w_{j+1,k}| <= sqrt(eps)` (semi-orthogonality) the tridiagonal
    `T` is the projection of `H` on an orthonormal basis up to `O(eps ||H||)`, so its Ritz
    values are as accurate as with full re-orthogonalisation (Simon 1984, Parlett 1998
    sec. 13.8). Only when the estimate passes the limit (`aim`: `sqrt(eps)`, or less where
    the Ritz vectors must be more accurate) is the new vector orthogonalised against all the
    previous ones. That replaces two passes over the whole basis per step by a few scalar
    operations per step.
    """

    def __init__(self, eps: float) -> None:
        self.eps, self.limit = eps, math.sqrt(eps)
        self.previous = np.zeros(0)  # w_{j-1, 0..j-1}
        self.current = np.ones(1)  # w_{j, 0..j}

    def advance(
        self, alpha: list[float], beta: list[float], b: float, scale: float, local: list[float]
    ) -> bool:
        """Estimate `w_{j+1, .}` for the new vector `r / b` (`alpha` to `j`, `beta` to `j-1`)
        from `local`, its measured products with `q_j` and `q_{j-1}` (times `b`); True when it
        needs re-orthogonalising (then `reset` after doing so).

        The measured products seed the recurrence: they show the rounding of this step
        (the product `H q_j` included, which in a deep network is far above `eps ||H||`: a
        float64 transformer's products lost orthogonality 1e-10 per step, 1e6 times the
        estimate from `eps` alone), and the same rounding is assumed along the older vectors.
        """
        j = len(alpha) - 1
        if b <= 0:  # an invariant subspace: the run stops here
            return False
        rounding = max(self.eps * scale, max(abs(x) for x in local))
        a, bt, cur, prev = np.array(alpha), np.array(beta), self.current, self.previous
        new = np.empty(j + 2)
        if j:
            k = np.arange(j)
            raw = bt[k] * cur[k + 1] + (a[k] - a[j]) * cur[k] - bt[j - 1] * prev[k]
            raw[1:] += bt[k[1:] - 1] * cur[k[1:] - 1]
            new[:j] = (raw + np.copysign(rounding, raw)) / b
        new[j - len(local) + 1 : j + 1] = np.maximum(np.abs(local[::-1]), self.eps * scale) / b
        new[j + 1] = 1.0
        self.previous, self.current = cur, new
        return bool(np.max(np.abs(new[: j + 1])) > self.limit)

    def aim(self, level: float) -> None:
        """Keep the vectors orthogonal to `level` (within `[eps, sqrt(eps)]`): a Ritz vector's
        residual carries the basis's loss of orthogonality times `||H||`, so a tolerance `tol`
        on an eigenvalue `lambda` needs `|w| <= tol |lambda| / ||H||`."""
        self.limit = min(math.sqrt(self.eps), max(self.eps, level))

    def reset(self) -> None:
        """After the new vector was orthogonalised against all previous ones."""
        self.current[:-1] = self.eps
