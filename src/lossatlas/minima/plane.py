"""The loss on the plane through three models (Garipov et al. 2018, Fig. 1).

Reference: T. Garipov, P. Izmailov, D. Podoprikhin, D. Vetrov, A. G. Wilson, "Loss Surfaces, Mode
Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lossatlas.core.directions import Directions, as_center
from lossatlas.core.problem import Problem
from lossatlas.errors import LossatlasError
from lossatlas.landscape.grid import surface
from lossatlas.landscape.record import Surface, with_paths
from lossatlas.minima.model_args import (
    as_problem,
    buffers_differ,
    check_margin,
    model_names,
    model_parts,
    warn_stale_buffers,
)

Params = dict[str, torch.Tensor]


def _flat(params: Params) -> torch.Tensor:
    return torch.cat([w.reshape(-1).to(torch.float64) for w in params.values()])


def _unflat(vec: torch.Tensor, like: Params) -> Params:
    sizes = [w.numel() for w in like.values()]
    return {k: p.reshape(like[k].shape) for k, p in zip(like, vec.split(sizes))}


def plane_through(
    problem: Problem,
    a: Any,
    b: Any,
    c: Any,
    *,
    steps: int | Sequence[int] = 31,
    margin: float = 0.2,
    names: Sequence[str] | None = None,
    memory_budget: int | str | None = None,
    quiet: bool | None = None,
) -> Surface:
    """The loss on the plane through three models (Garipov et al. 2018, Fig. 1).

    Axes: `u = (b - a) / |b - a|` and `v`, `c - a` with its `u` component removed, normalised
    (computed in float64, then cast to the problem's dtype). The centre is `a`; coordinates are
    Euclidean, so a = (0, 0), b = (|b - a|, 0) and c = ((c - a).u, (c - a).v) with the last > 0.
    Each axis spans the three points plus `margin` times their extent along it on both sides.
    The models' positions are attached as one-point paths labelled by `names`; directions'
    settings (kind "models-plane") hold them too.
    """
    problem, margin = as_problem(problem), check_margin(margin)
    labels = model_names((a, b, c), names, ("a", "b", "c"))
    parts = [model_parts(problem, m, k) for m, k in zip((a, b, c), labels)]
    warn_stale_buffers(
        problem, [k for k, (_, buf) in zip(labels, parts) if buffers_differ(problem, buf)]
    )
    pa, pb, pc = (as_center(problem, params, what=k) for k, (params, _) in zip(labels, parts))
    xa = _flat(pa)
    ab, ac = _flat(pb) - xa, _flat(pc) - xa
    ab_norm, ac_norm = float(ab.norm()), float(ac.norm())
    if ab_norm == 0 or ac_norm == 0:
        same = labels[1] if ab_norm == 0 else labels[2]
        raise LossatlasError(f"models {labels[0]!r} and {same!r} are equal: they span no plane")
    u = ab / ab_norm
    cx = float(ac @ u)
    rest = ac - cx * u
    again = float(rest @ u)  # a second Gram-Schmidt pass against rounding
    rest, cx = rest - again * u, cx + again
    cy = float(rest.norm())
    tol = min(1e-2, max(1e-6, 1e3 * torch.finfo(problem.dtype).eps))
    if cy <= tol * ac_norm:
        raise LossatlasError(
            f"models {labels[0]!r}, {labels[1]!r} and {labels[2]!r} are (nearly) collinear: "
            f"they span no plane (sin of their angle at {labels[0]!r} is {cy / ac_norm:.2g})"
        )
    v = rest / cy
    positions = np.array([[0.0, 0.0], [ab_norm, 0.0], [cx, cy]])
    lo, hi = positions.min(0), positions.max(0)
    span = [
        (float(lo[k] - margin * (hi - lo)[k]), float(hi[k] + margin * (hi - lo)[k])) for k in (0, 1)
    ]
    settings = dict(kind="models-plane", names=labels, positions=positions.tolist(), margin=margin)
    dirs = Directions((_unflat(u, pa), _unflat(v, pa)), settings)
    grid = surface(problem, dirs, steps, span, center=pa, memory_budget=memory_budget, quiet=quiet)
    return with_paths(grid, {label: xy[None] for label, xy in zip(labels, positions)})
