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

    def to_dict(self) -> dict[str, Any]:
        """Headline numbers and settings as plain JSON types (NaN and inf become None)."""

        return jsonable(
            {
                "lambda_max": self.lambda_max,
                "eigenvalues": [float(v) for v in self.eigen.eigenvalues],
                "eigen_residuals": [float(v) for v in self.eigen.residuals],
                "eigen_converged": [bool(v) for v in self.eigen.converged],
                "trace": self.trace.estimate,
                "trace_stderr": self.trace.stderr,
                "trace_ci95": list(self.trace.ci),
                "max_stable_lr": self.stable.max_lr,
                "lr": self.stable.lr,
                "lr_ratio": self.stable.ratio,
                "loss": self.loss,
                "metrics": self.metrics,
                "epsilon_sharpness": self.epsilon.value,
                "epsilon_loss_increase": self.epsilon.loss_increase,
                "epsilon_metric_change": self.epsilon.metric_change,
                "average_sharpness": self.average.value,
                "average_sharpness_stderr": self.average.stderr,
                "average_metric_change": self.average.metric_change,
                "adaptive_sharpness": self.adaptive.value,
                "adaptive_metric_change": self.adaptive.metric_change,
                "hvps": self.hvps,
                "seconds": self.seconds,
                "settings": self.settings,
                "versions": self.versions,
            }
        )


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
