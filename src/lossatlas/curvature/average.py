"""Average-case sharpness: the mean loss increase under random weight perturbations.

`E_delta[L(w + delta)] - L(w)` by Monte Carlo, with `delta ~ N(0, sigma^2 I)` or, adaptive,
`delta = |w| * epsilon` with `epsilon ~ N(0, sigma^2 I)` (elementwise; Andriushchenko et al.
2023, who find the adaptive average-case measure among the better-behaved ones, and which is
invariant to the layer rescalings of Dinh et al. 2017: see `lossatlas.curvature.sharpness`). For a
quadratic `L(w + delta) = L(w) + g^T delta + delta^T H delta / 2` the linear term averages out
and the value is `(sigma^2 / 2) tr(H)`, or `(sigma^2 / 2) sum_i H_ii w_i^2` adaptive.

The perturbed points are evaluated by the engine (`lossatlas.core.engine.Evaluator`): a block of
perturbations is a set of directions around the weights with identity coefficient rows, so a
data pass evaluates many points at once (as a batched `vmap` where the model allows it).

Reference: M. Andriushchenko, F. Croce, M. Mueller, M. Hein, N. Flammarion, "A Modern Look at
the Relationship between Sharpness and Generalization", ICML 2023.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossatlas.core.directions import Directions
from lossatlas.core.engine import Evaluator, probe
from lossatlas.core.planning import default_budget, parse_bytes
from lossatlas.core.problem import Problem
from lossatlas.core.progress import progress
from lossatlas.core.provenance import versions
from lossatlas.curvature.operator import HessianOperator, as_operator
from lossatlas.errors import check_count, check_positive


@dataclass(frozen=True, eq=False)
class AverageSharpness:
    """Average-case (optionally adaptive) sharpness with its Monte Carlo error.

    Attributes:
        value: the mean loss increase `mean_i L(w + delta_i) - L(w)`.
        stderr: its standard error, `std_i L(w + delta_i) / sqrt(n)`.
        ci: the 95% interval `value +- t stderr` (Student's t, `n - 1` degrees of freedom).
        loss: `L(w)`; `metrics` the problem's metrics there.
        metric_change: each metric's mean over the perturbed points minus its value at `w`.
        n_samples: perturbations drawn; `evaluations` points evaluated (they and `w`).
        seconds, settings, versions: provenance.
    """

    value: float
    stderr: float
    ci: tuple[float, float]
    loss: float
    metrics: dict[str, float]
    metric_change: dict[str, float]
    n_samples: int
    evaluations: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the mean loss increase with its standard error and 95% interval,
        the loss at the weights, the mean metric changes, and the number of perturbations."""
        return {
            "value": float(self.value),
            "stderr": float(self.stderr),
            "ci95": [float(self.ci[0]), float(self.ci[1])],
            "loss": float(self.loss),
            "metric_change": {k: float(v) for k, v in self.metric_change.items()},
            "n_samples": int(self.n_samples),
            "evaluations": int(self.evaluations),
            "seconds": float(self.seconds),
        }


def _selected_problem(op: HessianOperator) -> Problem:
    """The operator's data as a Problem (the operator's own problem when it uses all data)."""
    if op.data.kind == "all":
        return op.problem
    src = op.problem
    assert op.data.batches is not None  # first batch and subsets are held
    return Problem(
        src.module,
        src.loss_fn,
        list(op.data.batches),
        metrics=src.metrics,
        weight=src.weight,
        dtype=op.dtype,
    )


def average_sharpness(
    source: Problem | HessianOperator,
    *,
    sigma: float = 0.01,
    n_samples: int = 100,
    seed: int = 0,
    adaptive: bool = False,
    quiet: bool | None = None,
    memory_budget: int | str | None = None,
    **operator_options: Any,
) -> AverageSharpness:
    """Mean loss increase under Gaussian weight noise (Andriushchenko et al. 2023).

    Only the operator's chosen parameters are perturbed (`params=`), over its selected data
    (`data=`), at its point (`at=`). Perturbation `i` is drawn as one vector from a generator
    seeded with `seed`, so the result does not depend on how the points are blocked.

    Args:
        source: a Problem (an operator is made with `operator_options`) or a `HessianOperator`.
        sigma: the noise's standard deviation (relative to `|w|` when `adaptive`).
        n_samples: perturbations drawn (at least 2, for the standard error).
        seed: seed of the perturbations.
        adaptive: scale the noise elementwise by `|w|`.
        quiet: hide the progress bar (default: the LOSSATLAS_QUIET environment variable).
        memory_budget: bytes (or e.g. "512MB") the engine may use per pass.
        **operator_options: `HessianOperator` options (`params`, `data`, `at`, ...).

    Returns:
        An `AverageSharpness`.

    Raises:
        LossatlasError: `sigma <= 0`, `n_samples < 2`, or a bad operator option.
    """
    sigma, n = check_positive("sigma", sigma), check_count("n_samples", n_samples, 2)
    op = as_operator(source, **operator_options)
    start = time.perf_counter()
    problem = _selected_problem(op)
    center = {**op.fixed, **op.point}
    scale = op.flatten(op.point).abs() if adaptive else None
    probed = probe(problem, center)
    budget = parse_bytes(memory_budget) or default_budget(problem.device)
    itemsize = torch.finfo(op.dtype).bits // 8
    # A block of perturbations per Evaluator; its stacked directions take a quarter of the budget.
    block = max(1, min(n, 256, budget // (4 * itemsize * op.dim)))
    generator = torch.Generator().manual_seed(seed)
    losses, metrics = [], {k: [] for k in problem.metrics}
    path = None
    with progress("average sharpness", n, quiet=quiet) as advance:
        for a in range(0, n, block):
            k = min(block, n - a)
            vectors = []
            for _ in range(k):
                noise = torch.randn(op.dim, generator=generator, dtype=torch.float64)
                delta = sigma * noise.to(op.device, op.dtype)
                vectors.append(op.unflatten(delta if scale is None else scale * delta))
            coeffs = np.eye(k)
            if a == 0:  # the weights themselves, in the same pass and by the same code
                coeffs = np.vstack([np.zeros((1, k)), coeffs])
            directions = Directions(tuple(vectors), {"kind": "gaussian", "seed": seed})
            ev = Evaluator(
                problem,
                directions,
                center=center,
                memory_budget=memory_budget,
                n_points=len(coeffs),
                probed=probed,
            )
            size = ev.plan.chunk_size
            for b in range(0, len(coeffs), size):
                chunk = ev(coeffs[b : b + size])
                losses.append(chunk.loss)
                for name, values in chunk.metrics.items():
                    metrics[name].append(values)
            path = ev.plan.path
            advance(k)
    loss = np.concatenate(losses)
    base = {"loss": float(loss[0]), **{k: float(np.concatenate(v)[0]) for k, v in metrics.items()}}
    rise = loss[1:] - loss[0]
    value = float(rise.mean())
    stderr = float(rise.std(ddof=1)) / math.sqrt(n)
    from scipy.stats import t as student_t

    half = float(student_t.ppf(0.975, n - 1)) * stderr
    return AverageSharpness(
        value=value,
        stderr=stderr,
        ci=(value - half, value + half),
        loss=base["loss"],
        metrics={k: v for k, v in base.items() if k != "loss"},
        metric_change={
            k: float(np.concatenate(v)[1:].mean()) - base[k] for k, v in metrics.items()
        },
        n_samples=n,
        evaluations=n + 1,
        seconds=time.perf_counter() - start,
        settings={
            "measure": "adaptive average" if adaptive else "average",
            "sigma": sigma,
            "n_samples": n,
            "seed": seed,
            "adaptive": adaptive,
            "engine_path": path,
            "operator": op.settings,
        },
        versions=versions(),
    )
