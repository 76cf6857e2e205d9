"""Many minima: compare models of one architecture trained several times (or loaded).

`compare_minima` puts one row per model side by side: training and validation loss and metrics,
the generalisation gap, curvature (the top Hessian eigenvalue `lambda_max` by Lanczos), Keskar
et al.'s epsilon-sharpness, average-case sharpness and the weight norm, plus the matrix of
Euclidean distances between the models' parameters. `lossatlas.minima.flat_sharp` builds the
flat-versus-sharp study of Keskar et al. (2017) on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossatlas.core.problem import Problem
from lossatlas.core.progress import progress
from lossatlas.core.provenance import versions
from lossatlas.curvature.average import average_sharpness
from lossatlas.curvature.eigen import hessian_eigen
from lossatlas.curvature.operator import HessianOperator
from lossatlas.curvature.sharpness import epsilon_sharpness
from lossatlas.errors import LossatlasError, check_count, check_positive
from lossatlas.training.checkpoints import from_checkpoints
from lossatlas.training.loop import check_same_model, evaluate
from lossatlas.training.trainer import TrainedModel


@dataclass(frozen=True, eq=False)
class MinimaComparison:
    """One row per model, and the distances between them. Arrays are float64, NaN where a
    measure was not taken (no validation problem, `sharpness=False`).

    Attributes:
        names: the models' labels, in row order.
        train_loss, val_loss: loss over all training / validation data (evaluation mode).
        train_metrics, val_metrics: the problems' metrics, `{name: (n,) array}`.
        gap: the generalisation gap `val_loss - train_loss`; `metric_gaps` val minus train for
            every metric both problems have.
        lambda_max: the top Hessian eigenvalue of the training loss; `eigenvalues` the top `k`,
            shape `(n, k)`.
        epsilon_sharpness: Keskar et al.'s epsilon-sharpness (a percentage, see
            `epsilon_sharpness`); `average_sharpness` the mean loss rise
            under Gaussian weight noise with its Monte Carlo `average_stderr`.
        weight_norm: Euclidean norm of all parameters.
        distances: `(n, n)` Euclidean distances between the parameter vectors;
            `relative_distances` each divided by the mean of the two models' weight norms.
        settings, provenance: what was asked (budgets, seeds) and seconds, products, versions.
    """

    names: tuple[str, ...]
    train_loss: np.ndarray
    train_metrics: dict[str, np.ndarray]
    val_loss: np.ndarray
    val_metrics: dict[str, np.ndarray]
    gap: np.ndarray
    metric_gaps: dict[str, np.ndarray]
    lambda_max: np.ndarray
    eigenvalues: np.ndarray
    epsilon_sharpness: np.ndarray
    average_sharpness: np.ndarray
    average_stderr: np.ndarray
    weight_norm: np.ndarray
    distances: np.ndarray
    relative_distances: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per model (floats; NaN where not measured)."""
        out = []
        for i, name in enumerate(self.names):
            row: dict[str, Any] = {"name": name, "train_loss": float(self.train_loss[i])}
            row |= {f"train_{k}": float(v[i]) for k, v in self.train_metrics.items()}
            row["val_loss"] = float(self.val_loss[i])
            row |= {f"val_{k}": float(v[i]) for k, v in self.val_metrics.items()}
            row["gap"] = float(self.gap[i])
            row |= {f"gap_{k}": float(v[i]) for k, v in self.metric_gaps.items()}
            for key in ("lambda_max", "epsilon_sharpness", "average_sharpness", "weight_norm"):
                row[key] = float(getattr(self, key)[i])
            out.append(row)
        return out

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the number of models and their names, and per model (in row order,
        NaN where not measured) the train and validation loss, the gap, `lambda_max`, epsilon-
        and average sharpness; and the largest relative distance between two models (None for
        one model)."""
        upper = self.relative_distances[np.triu_indices(len(self.names), 1)]
        out: dict[str, Any] = {"models": len(self.names), "names": [str(n) for n in self.names]}
        keys = ("train_loss", "val_loss", "gap", "lambda_max")
        keys += ("epsilon_sharpness", "average_sharpness")
        out |= {key: [float(v) for v in getattr(self, key)] for key in keys}
        out["max_relative_distance"] = float(np.max(upper)) if upper.size else None
        return out

    def table(self) -> str:
        """The rows as an aligned text table, then the relative distance matrix."""
        rows = self.rows()
        keys = list(rows[0]) if rows else ["name"]
        cells = [[_cell(r[k]) for k in keys] for r in rows]
        widths = [max(len(k), *(len(c[j]) for c in cells)) for j, k in enumerate(keys)]
        lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells]
        if len(self.names) > 1:
            lines += ["", "distance / mean weight norm:"]
            width = max(len(n) for n in self.names)
            for name, row in zip(self.names, self.relative_distances):
                lines.append(name.rjust(width) + "  " + "  ".join(f"{d:7.4f}" for d in row))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"MinimaComparison(names={list(self.names)})"


def _cell(value: Any) -> str:
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def _as_models(problem: Problem, models: Any) -> list[TrainedModel]:
    """TrainedModels from TrainedModels, checkpoints, or a {name: either} dict."""
    if isinstance(models, TrainedModel):
        models = [models]
    labels = None
    if isinstance(models, Mapping):
        labels, models = [str(k) for k in models], list(models.values())
    if isinstance(models, (str, bytes)) or not isinstance(models, Sequence) or not models:
        raise LossatlasError("models must be a non-empty list (or dict) of TrainedModels")
    out = []
    for i, m in enumerate(models):
        m = m if isinstance(m, TrainedModel) else from_checkpoints(problem, [m])[0]
        name = labels[i] if labels else m.name or f"model {i}"
        out.append(TrainedModel(name, m.params, m.buffers, m.history, m.settings, m.provenance))
    return out


def compare_minima(
    problem: Problem,
    models: Any,
    *,
    val: Problem | None = None,
    sharpness: bool = True,
    k: int = 1,
    seed: int = 0,
    tol: float = 1e-4,
    epsilon: float = 1e-3,
    epsilon_iter: int = 10,
    sigma: float = 0.01,
    samples: int = 50,
    hessian_data: str | int = "all",
    quiet: bool | None = None,
) -> MinimaComparison:
    """Compare minima of one architecture, one row per model (see `MinimaComparison`).

    Losses and metrics are over all data of `problem` (training) and `val`, with the weights in
    evaluation mode (BatchNorm uses each model's running statistics). Sharpness is measured on
    the training loss at each model's weights, through one shared `HessianOperator` per model.

    Args:
        problem: model, loss and training data.
        models: `TrainedModel`s (from `train`, `train_runs`, `from_checkpoints`), anything
            `from_checkpoints` reads, or a `{name: model}` dict.
        val: the validation problem (same model, held-out data).
        sharpness: measure `lambda_max`, epsilon- and average sharpness (the slow part).
        k: top Hessian eigenvalues to compute (Lanczos, relative tolerance `tol`).
        seed: one seed for every random draw (the Lanczos start, the noise, the random start).
        epsilon, epsilon_iter: Keskar's box size and L-BFGS-B iterations (their setting: 10).
        sigma, samples: average sharpness's noise scale and number of perturbations.
        hessian_data: data of the sharpness measures: `"all"`, `"first_batch"` or an int (a
            seeded subset), as for `HessianOperator`.
        quiet: no progress bar.
    """
    k, samples = check_count("k", k, 1), check_count("samples", samples, 2)
    check_count("epsilon_iter", epsilon_iter, 1)
    for name, value in (("tol", tol), ("epsilon", epsilon), ("sigma", sigma)):
        check_positive(name, value)
    if val is not None:
        check_same_model(problem, val)
    trained = _as_models(problem, models)
    n = len(trained)
    nan = np.full(n, math.nan)
    train_loss, val_loss, lam, eps, avg, err = (nan.copy() for _ in range(6))
    eig = np.full((n, k), math.nan)
    train_metrics = {m: nan.copy() for m in problem.metrics}
    val_metrics = {m: nan.copy() for m in (val.metrics if val is not None else {})}
    began, hvps, seconds = time.perf_counter(), [], []
    with progress("comparing minima", n, quiet=quiet) as advance:
        for i, model in enumerate(trained):
            start = time.perf_counter()
            here = model.problem(problem)
            values = evaluate(here)
            train_loss[i] = values.pop("loss")
            for key, v in values.items():
                train_metrics[key][i] = v
            if val is not None:
                values = evaluate(model.problem(val))
                val_loss[i] = values.pop("loss")
                for key, v in values.items():
                    val_metrics[key][i] = v
            if sharpness:
                op = HessianOperator(here, data=hessian_data, seed=seed)
                found = hessian_eigen(op, min(k, op.dim), tol=tol, seed=seed).eigenvalues
                eig[i, : len(found)] = found
                lam[i] = found[0]
                eps[i] = epsilon_sharpness(
                    op, epsilon=epsilon, max_iter=epsilon_iter, seed=seed
                ).value
                mean = average_sharpness(op, sigma=sigma, n_samples=samples, seed=seed, quiet=True)
                avg[i], err[i] = mean.value, mean.stderr
                hvps.append(op.hvps)
            seconds.append(time.perf_counter() - start)
            advance()
    flat = torch.stack([m.flat() for m in trained])
    norms = flat.norm(dim=1)
    dist = np.array([[float(torch.dist(a, b)) for b in flat] for a in flat])
    mean_norm = ((norms[:, None] + norms[None, :]) / 2).numpy()
    relative = np.divide(dist, mean_norm, out=np.zeros_like(dist), where=mean_norm > 0)
    settings = {
        "sharpness": bool(sharpness),
        "k": k,
        "tol": tol,
        "seed": seed,
        "epsilon": epsilon,
        "epsilon_iter": epsilon_iter,
        "sigma": sigma,
        "samples": samples,
        "hessian_data": hessian_data,
        "val": val is not None,
        "n_train": problem.n_samples,
        "n_val": val.n_samples if val is not None else 0,
    }
    provenance = {
        "seconds": time.perf_counter() - began,
        "seconds_per_model": seconds,
        "hvps": hvps,
        "versions": versions(),
    }
    shared = sorted(set(train_metrics) & set(val_metrics))
    return MinimaComparison(
        names=tuple(m.name for m in trained),
        train_loss=train_loss,
        train_metrics=train_metrics,
        val_loss=val_loss,
        val_metrics=val_metrics,
        gap=val_loss - train_loss,
        metric_gaps={key: val_metrics[key] - train_metrics[key] for key in shared},
        lambda_max=lam,
        eigenvalues=eig,
        epsilon_sharpness=eps,
        average_sharpness=avg,
        average_stderr=err,
        weight_norm=norms.numpy(),
        distances=dist,
        relative_distances=relative,
        settings=settings,
        provenance=provenance,
    )
