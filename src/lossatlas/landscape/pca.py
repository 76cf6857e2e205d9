"""The plane that fits a training trajectory (PCA), and the losses along the path on it.

`pca_directions` finds the affine plane through a centre (the last checkpoint, or their mean)
that best fits the checkpoints, as in Li et al. 2018, section 7: with `X_c` the (T, P)
checkpoints minus the centre, the principal directions are `d_k = X_c^T v_k / sqrt(lambda_k)`
for the top eigenpairs of the (T, T) Gram matrix `G = X_c X_c^T` (P may be millions, T is at
most thousands, so memory is O(T^2 + nP)). `path_losses` sets every checkpoint's true loss
beside the loss at its projection onto that plane, which is what a contour plot under the path
shows: the two differ wherever the path leaves the plane.

Reference: H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape of
Neural Nets", NeurIPS 2018, section 7 (visualizing optimization paths).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossatlas.core.directions import Directions
from lossatlas.core.engine import Evaluator
from lossatlas.core.planning import default_budget, parse_bytes
from lossatlas.core.problem import Problem
from lossatlas.core.provenance import versions
from lossatlas.descent.run import Trajectory
from lossatlas.errors import LossatlasError, LossatlasWarning
from lossatlas.landscape.recorder import (
    NamesShapes,
    WeightRecorder,
    flat_size,
    names_shapes_of,
    unflatten,
)

CENTERS = ("last", "mean")
BLOCK_BYTES = 64 << 20  # float64 rows read at once when streaming checkpoints


@dataclass(frozen=True, eq=False)
class _Checkpoints:
    """Checkpoint rows from any source, read as float64 blocks `read(start, stop)`."""

    kind: str
    names_shapes: NamesShapes
    steps: np.ndarray
    read: Callable[[int, int], np.ndarray]


def _checkpoints(source: Any, names_shapes: Any) -> _Checkpoints:
    given = None if names_shapes is None else names_shapes_of(names_shapes)
    kind = "recorder" if isinstance(source, WeightRecorder) else "array"
    if isinstance(source, WeightRecorder):
        T, own, steps = len(source), source.names_shapes, source.steps
        read = lambda a, b: source.rows(a, min(b, T)).astype(np.float64)  # noqa: E731 (later rows unread)
    else:
        if isinstance(source, Trajectory):
            if source.positions is None or source.param_shapes is None:
                raise LossatlasError(
                    "the trajectory has no recorded model positions; use a Problem run of "
                    "descend(..., record_positions=True)"
                )
            kind, X, own = "trajectory", source.positions, names_shapes_of(source.param_shapes)
        else:
            try:
                X, own = np.asarray(source), given
            except (TypeError, ValueError, RuntimeError):
                X = np.empty(0, object)
            if X.ndim != 2 or not np.issubdtype(X.dtype, np.number):
                raise LossatlasError("expected a WeightRecorder, a Trajectory or a (T, P) array")
            if own is None or flat_size(own) != X.shape[1]:
                raise LossatlasError(
                    f"names_shapes must describe the {X.shape[1]} parameters of each checkpoint"
                )
        steps, read = np.arange(len(X)), lambda a, b: X[a:b].astype(np.float64)
    if given is not None and given != own:
        raise LossatlasError(f"names_shapes do not match the {kind}'s parameters")
    return _Checkpoints(kind, own, np.asarray(steps, dtype=np.int64), read)


@dataclass(frozen=True, eq=False)
class PCA:
    """The plane of a trajectory's principal directions through its centre.

    Attributes:
        directions: `n` orthonormal directions (`{name: float64 tensor}` dicts; unit norm,
            mutually orthogonal over all parameters), `settings` kind="pca", center, n and
            explained_variance_ratio.
        explained_variance_ratio: `lambda_k / trace(G)`: the share of the checkpoints' total
            squared distance from the centre along each direction.
        singular_values: `sqrt(lambda_k)`, the singular values of `X_c`.
        center: the plane's origin, `{name: float64 tensor}`.
        coords: (T, n) coordinates `X_c D` of every checkpoint in the plane.
        off_plane: (T,) distance of every checkpoint from the plane, `||x_c - D D^T x_c||`.
        steps: the checkpoints' step numbers.
        provenance: source kind, T, P, rank, n requested, versions.
        source: where the checkpoints are read again from (for `path_losses`).
    """

    directions: Directions
    explained_variance_ratio: np.ndarray
    singular_values: np.ndarray
    center: dict[str, torch.Tensor]
    coords: np.ndarray
    off_plane: np.ndarray
    steps: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)
    # A reader over live objects: not written by `storage.save`, so a loaded PCA has None here.
    source: _Checkpoints | None = field(default=None, repr=False, metadata={"store": False})

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the variance each direction explains and in all, the number of
        checkpoints, and how far the farthest one lies off the plane."""
        ratio = [float(r) for r in self.explained_variance_ratio]
        return {
            "explained_variance_ratio": ratio,
            "explained_total": float(sum(ratio)),
            "n_checkpoints": len(self.coords),
            "max_off_plane": float(np.max(self.off_plane)) if len(self.off_plane) else None,
            "n_params": self.provenance.get("n_params"),
        }


def pca_directions(
    source: WeightRecorder | Trajectory | np.ndarray,
    *,
    n: int = 2,
    center: str = "last",
    names_shapes: Any = None,
    block_rows: int | None = None,
) -> PCA:
    """Principal directions of a trajectory by the Gram-matrix method (Li et al. 2018, sec. 7).

    With `c` the last checkpoint (`center="last"`, the plane's origin is the trained model, as
    in Li et al.) or their mean (`"mean"`), `X_c = X - 1 c^T` and `G = X_c X_c^T` (float64,
    streamed in blocks of `block_rows` rows, so an HDF5 recording is never loaded whole), the
    eigenpairs `G v_k = lambda_k v_k` give `d_k = X_c^T v_k / sqrt(lambda_k)`. These are
    re-orthonormalised (QR) against rounding. With `"last"` the plane is the best-fitting one
    through the last checkpoint; Li et al.'s code instead fits sklearn's PCA, which centres the
    offsets on their mean again, to the offsets from the last checkpoint.

    Sign convention: each `d_k` points along the net movement, `coords[-1, k] > coords[0, k]`
    (with `"last"` the first checkpoint has a negative coordinate); if the movement is
    orthogonal to it (to 1e-9), its largest-magnitude entry is made positive.

    Rank: `n` must be below the number of checkpoints (a LossatlasError otherwise). If the
    checkpoints span fewer than `n` directions (eigenvalues at most `10 T eps lambda_1` count
    as zero), the ones they span are returned with a LossatlasWarning; none is an error.

    Args:
        source: a `WeightRecorder`, a `Trajectory` of a Problem run, or a (T, P) array.
        n: number of directions.
        center: `"last"` or `"mean"`.
        names_shapes: `(name, shape)` of each parameter, needed for an array (checked if given).
        block_rows: checkpoints read at once; defaults to 64 MiB of float64 rows.
    """
    src = _checkpoints(source, names_shapes)
    T, P = len(src.steps), flat_size(src.names_shapes)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise LossatlasError(f"n must be an integer of at least 1, got {n!r}")
    if center not in CENTERS:
        raise LossatlasError(f"center={center!r} is not one of {CENTERS}")
    if T < 2:
        raise LossatlasError(f"a trajectory needs at least 2 checkpoints, got {T}")
    if n > min(T - 1, P):
        raise LossatlasError(
            f"n={n} directions need at least {n + 1} checkpoints and {n} parameters (got {T}, {P})"
        )
    rows = block_rows or max(1, BLOCK_BYTES // (8 * P))
    spans = [(a, min(a + rows, T)) for a in range(0, T, rows)]
    if center == "last":
        c = src.read(T - 1, T)[0]
    else:
        c = sum(src.read(a, b).sum(0) for a, b in spans) / T
    G = np.empty((T, T))
    for i, (a, b) in enumerate(spans):  # block pairs: two blocks of rows in memory at a time
        A = src.read(a, b) - c
        G[a:b, a:b] = A @ A.T
        for a2, b2 in spans[i + 1 :]:
            G[a:b, a2:b2] = A @ (src.read(a2, b2) - c).T
            G[a2:b2, a:b] = G[a:b, a2:b2].T
    if not np.isfinite(G).all():
        raise LossatlasError("the checkpoints have non-finite entries")
    lam, V = np.linalg.eigh(G)
    lam, V = lam[::-1], V[:, ::-1]
    rank = int((lam > 10 * T * np.finfo(float).eps * lam[0]).sum()) if lam[0] > 0 else 0
    if rank == 0:
        raise LossatlasError("all checkpoints equal the centre: the trajectory spans no direction")
    if rank < n:
        warnings.warn(
            f"lossatlas: the checkpoints span only {rank} direction(s); returning {rank} of {n}",
            LossatlasWarning,
            stacklevel=2,
        )
    k = min(n, rank)
    W = V[:, :k] / np.sqrt(lam[:k])
    D = sum((src.read(a, b) - c).T @ W[a:b] for a, b in spans)
    Q, R = np.linalg.qr(D)
    D = Q * np.sign(np.diag(R))  # Q's columns as close to the d_k as rounding allows
    coords, off = np.empty((T, k)), np.empty(T)
    for a, b in spans:
        A = src.read(a, b) - c
        coords[a:b] = A @ D
        off[a:b] = np.linalg.norm(A - coords[a:b] @ D.T, axis=1)
    move = coords[-1] - coords[0]
    for j in range(k):
        ref = move[j] if abs(move[j]) > 1e-9 * np.abs(coords[:, j]).max() else 0.0
        if (ref or D[np.argmax(np.abs(D[:, j])), j]) < 0:
            D[:, j], coords[:, j] = -D[:, j], -coords[:, j]
    ratio = lam[:k] / np.trace(G)
    settings = {"kind": "pca", "center": center, "n": k, "explained_variance_ratio": ratio.tolist()}
    vectors = tuple(unflatten(D[:, j], src.names_shapes) for j in range(k))
    provenance = dict(source=src.kind, n_checkpoints=T, n_params=P, rank=rank, n_requested=n)
    provenance.update(center=center, versions=versions())
    origin = unflatten(c, src.names_shapes)
    dirs = Directions(vectors, settings)
    return PCA(dirs, ratio, np.sqrt(lam[:k]), origin, coords, off, src.steps, provenance, src)


@dataclass(frozen=True, eq=False)
class PathLosses:
    """Each checkpoint's true loss beside the loss at its projection onto the PCA plane.

    A contour plot of the plane shows `plane_loss` under the path; `true_loss` is what training
    saw. They agree where `off_plane` is 0.
    """

    coords: np.ndarray
    off_plane: np.ndarray
    true_loss: np.ndarray
    plane_loss: np.ndarray
    steps: np.ndarray

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the true loss at the first and last checkpoint, the plane's loss at
        the last, and the largest gap between the two losses and distance off the plane (None
        for an empty path)."""
        if not len(self.true_loss):
            keys = ("true_loss_start", "true_loss_end", "plane_loss_end", "max_loss_gap")
            return {"n_checkpoints": 0, **dict.fromkeys(keys), "max_off_plane": None}
        return {
            "n_checkpoints": len(self.true_loss),
            "true_loss_start": float(self.true_loss[0]),
            "true_loss_end": float(self.true_loss[-1]),
            "plane_loss_end": float(self.plane_loss[-1]),
            "max_loss_gap": float(np.max(np.abs(self.true_loss - self.plane_loss))),
            "max_off_plane": float(np.max(self.off_plane)),
        }


def _losses(evaluator: Evaluator, coeffs: np.ndarray) -> np.ndarray:
    size = evaluator.plan.chunk_size
    return np.concatenate(
        [evaluator(coeffs[a : a + size]).loss for a in range(0, len(coeffs), size)]
    )


def path_losses(
    problem: Problem, pca: PCA, *, memory_budget: int | str | None = None
) -> PathLosses:
    """The loss at every checkpoint and at its projection `center + coords_t D`, by the engine.

    True losses are evaluated exactly at the checkpoints (in the problem's dtype): directions
    are the checkpoints themselves, the centre is zero and the coefficients are unit rows, a
    block of checkpoints per `Evaluator`. Buffers (BatchNorm statistics) are the problem's, or
    under `bn="recompute"` recomputed at every checkpoint and plane point (two data passes each).
    """
    src = pca.source
    if src is None:
        raise LossatlasError("this PCA does not know its checkpoints; make it with pca_directions")
    mine = tuple((k, tuple(w.shape)) for k, w in problem.params.items())
    if mine != src.names_shapes:
        raise LossatlasError("the problem's model has other parameters than the PCA's checkpoints")
    T = len(pca.coords)
    plane = Evaluator(problem, pca.directions, center=pca.center, memory_budget=memory_budget)
    plane_loss = _losses(plane, pca.coords)
    zero = {k: torch.zeros_like(w) for k, w in problem.params.items()}
    # A block of checkpoints per Evaluator; its stacked directions take a quarter of the budget.
    budget = parse_bytes(memory_budget) or default_budget(problem.device)
    itemsize = torch.finfo(problem.dtype).bits // 8
    block = max(1, min(T, 256, budget // (4 * itemsize * problem.n_params)))
    true_loss = np.empty(T)
    for a in range(0, T, block):
        X = src.read(a, min(a + block, T))
        dirs = Directions(tuple(unflatten(x, src.names_shapes) for x in X), {"kind": "checkpoints"})
        ev = Evaluator(problem, dirs, center=zero, memory_budget=memory_budget)
        true_loss[a : a + len(X)] = _losses(ev, np.eye(len(X)))  # 0 + 1 * x_t is exactly x_t
    return PathLosses(pca.coords, pca.off_plane, true_loss, plane_loss, pca.steps)
