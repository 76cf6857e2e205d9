"""All curvature and sharpness measures of one point in one call, as one record.

`sharpness_report` shares one `HessianOperator` (so its cached graphs serve every Hessian
estimate) and returns the Hessian proxies (top eigenvalues, trace with its standard error), the
largest stable learning rate, and Keskar's epsilon-, average-case and adaptive sharpness, each
as a loss increase and, where the problem has metrics, a metric change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from lossatlas.core.problem import Problem
from lossatlas.core.provenance import jsonable, versions
from lossatlas.curvature.average import AverageSharpness, average_sharpness
from lossatlas.curvature.eigen import Eigen, hessian_eigen
from lossatlas.curvature.operator import HessianOperator
from lossatlas.curvature.sharpness import (
    AdaptiveSharpness,
    EpsilonSharpness,
    adaptive_sharpness,
)
from lossatlas.curvature.sharpness import epsilon_sharpness as keskar
from lossatlas.curvature.stability import StableLR, stable_lr
from lossatlas.curvature.trace import Trace, hessian_trace
from lossatlas.errors import check_count, check_positive


@dataclass(frozen=True, eq=False)
class SharpnessReport:
    """Curvature and sharpness at one point; `to_dict()` gives the JSON the CLI prints.

    Attributes:
        eigen: top-`k` Hessian eigenpairs (Lanczos); `eigen.eigenvalues[0]` is `lambda_max`.
        trace: `tr(H)` by Hutch++ with its standard error.
        stable: the largest stable learning rate, next to `lr` when one was given.
        epsilon: Keskar et al.'s epsilon-sharpness; `average`: average-case sharpness;
            `adaptive`: worst-case adaptive sharpness (Kwon et al. 2021).
        loss: the loss at the point; `metrics` the problem's metrics there.
        hvps: Hessian-vector products in all; `seconds`, `settings`, `versions`: provenance.
    """

    eigen: Eigen
    trace: Trace
    stable: StableLR
    epsilon: EpsilonSharpness
    average: AverageSharpness
    adaptive: AdaptiveSharpness
    loss: float
    metrics: dict[str, float]
    hvps: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def lambda_max(self) -> float:
        return float(self.eigen.eigenvalues[0])

    def headline(self) -> dict[str, Any]:
        """Headline numbers, from each measure's own `headline()`: the eigenvalues (with
        residuals and convergence), the trace, the stable lr, the loss and metrics, the three
        sharpness measures with their metric changes, and the cost. Non-finite values stay
        as they are (`to_dict` makes them None)."""
        eigen, trace, stable = self.eigen.headline(), self.trace.headline(), self.stable.headline()
        eps, avg, ada = self.epsilon.headline(), self.average.headline(), self.adaptive.headline()
        return {
            "lambda_max": self.lambda_max,
            "eigenvalues": eigen["eigenvalues"],
            "eigen_residuals": eigen["residuals"],
            "eigen_converged": eigen["converged"],
            "trace": trace["estimate"],
            "trace_stderr": trace["stderr"],
            "trace_ci95": trace["ci95"],
            "max_stable_lr": stable["max_lr"],
            "lr": stable["lr"],
            "lr_ratio": stable["ratio"],
            "loss": float(self.loss),
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "epsilon_sharpness": eps["value"],
            "epsilon_loss_increase": eps["loss_increase"],
            "epsilon_metric_change": eps["metric_change"],
            "average_sharpness": avg["value"],
            "average_sharpness_stderr": avg["stderr"],
            "average_metric_change": avg["metric_change"],
            "adaptive_sharpness": ada["value"],
            "adaptive_metric_change": ada["metric_change"],
            "hvps": int(self.hvps),
            "seconds": float(self.seconds),
        }

    def to_dict(self) -> dict[str, Any]:
        """`headline()` with the settings and versions, as plain JSON types (NaN and inf
        become None): what `lossatlas sharpness --json` prints."""
        return jsonable({**self.headline(), "settings": self.settings, "versions": self.versions})


def sharpness_report(
    problem: Problem,
    *,
    k: int = 5,
    trace_vectors: int = 60,
    lr: float | None = None,
    momentum: float = 0.0,
    epsilon: float = 1e-3,
    sigma: float = 0.01,
    samples: int = 50,
    rho: float = 0.05,
    seed: int = 0,
    tol: float = 1e-4,
    quiet: bool | None = None,
    **operator_options: Any,
) -> SharpnessReport:
    """Every measure at the problem's weights (or `at=`), sharing one Hessian operator.

    Args:
        problem: model, loss, data and metrics.
        k: top eigenvalues to compute.
        trace_vectors: Hutch++ budget of Hessian-vector products for the trace.
        lr, momentum: a learning rate to compare with the largest stable one.
        epsilon: Keskar's box size; `sigma`, `samples`: average-case perturbation scale and
            count; `rho`: adaptive radius (l2, elementwise `|w|` scaling).
        seed: one seed for every random draw.
        tol: relative tolerance of the eigenpairs.
        quiet: no progress bars.
        **operator_options: `params`, `data`, `at`, `method`, ... (see `HessianOperator`).
    """
    began = time.perf_counter()
    for name, value in (("epsilon", epsilon), ("sigma", sigma), ("rho", rho), ("tol", tol)):
        check_positive(name, value)  # mistakes fail now, not after minutes of Hessian products
    check_count("samples", samples, 2)
    check_count("trace_vectors", trace_vectors, 3)
    check_count("k", k, 1)
    stable_lr(1.0, lr=lr, momentum=momentum)
    op = HessianOperator(problem, **operator_options)
    k = min(k, op.dim)  # a tiny model has fewer eigenvalues than the default asks for
    eigen = hessian_eigen(op, k, which="top", tol=tol, seed=seed)
    trace = hessian_trace(op, n_vectors=trace_vectors, method="hutch++", seed=seed, quiet=quiet)
    stable = stable_lr(float(eigen.eigenvalues[0]), lr=lr, momentum=momentum)
    eps = keskar(op, epsilon=epsilon, seed=seed)
    average = average_sharpness(op, sigma=sigma, n_samples=samples, seed=seed, quiet=quiet)
    adaptive = adaptive_sharpness(op, rho=rho, seed=seed)
    at = op.metrics()
    settings = {
        "k": k,
        "trace_vectors": trace_vectors,
        "trace_method": "hutch++",
        "momentum": momentum,
        "epsilon": epsilon,
        "sigma": sigma,
        "samples": samples,
        "rho": rho,
        "adaptive_p": 2,
        "seed": seed,
        "tol": tol,
        "operator": op.settings,
    }
    return SharpnessReport(
        eigen=eigen,
        trace=trace,
        stable=stable,
        epsilon=eps,
        average=average,
        adaptive=adaptive,
        loss=at.pop("loss"),
        metrics=at,
        hvps=op.hvps,
        seconds=time.perf_counter() - began,
        settings=settings,
        versions=versions(),
    )
