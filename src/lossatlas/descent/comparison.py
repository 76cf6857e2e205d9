"""A fair comparison of optimizers: one step budget, a learning-rate sweep each, a stated criterion.

Every optimizer gets the same starts, seeds and number of steps and is run at every learning rate
of a grid; its best learning rate is picked by the criterion aggregated over all runs (diverged
runs count as the worst). This answers the usual objection to optimizer pictures: hand-tuned
learning rates and budgets that favour one method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossatlas.core.problem import Problem
from lossatlas.core.provenance import versions
from lossatlas.descent.run import STATUSES, Trajectory
from lossatlas.descent.sweeps import Run, Sweep, as_minimum, distance_to_minimum, sweep
from lossatlas.errors import LossatlasError

CRITERIA = {
    "final_loss": "mean final loss over starts and seeds (lower is better)",
    "auc": "mean over starts and seeds of the mean log10(loss - floor + eps) over steps "
    "0..steps, a converged run staying at its final loss (lower is better)",
    "steps_to_tol": "mean over starts and seeds of the steps until the gradient norm is at most "
    "tol, steps + 1 for a run that never gets there (lower is better)",
}
DEFAULT_LRS = tuple(float(v) for v in np.logspace(-4, 0, 13))  # three per decade


def _run_value(t: Trajectory, criterion: str, steps: int, floor: float) -> float:
    """One run's value under the criterion; +inf for a diverged run (the worst)."""
    if t.diverged:
        return math.inf
    if criterion == "final_loss":
        return t.final_loss
    if criterion == "steps_to_tol":
        return float(t.steps_taken if t.converged else steps + 1)
    # The same number of terms for every run: one that stopped early stays where it stopped.
    loss = np.concatenate([t.loss, np.full(steps - t.steps_taken, t.loss[-1])])
    eps = 1e-12 * max(1.0, abs(floor))
    return float(np.mean(np.log10(np.maximum(loss - floor, 0.0) + eps)))


@dataclass(frozen=True, eq=False)
class Comparison:
    """Optimizers compared at their best learning rates under one criterion.

    Attributes:
        sweep: every run (optimizers x lrs x starts x seeds, the same step budget for all).
        scores: one row per optimizer and learning rate: `optimizer`, `lr`, `value` (the
            aggregated criterion, +inf if any run diverged), `converged`, `diverged`, `runs`.
        best_lr: the chosen learning rate per optimizer.
        rows: the result table (see `table()`).
        settings: `criterion` and its `criterion_description`, how runs are aggregated and
            ranked, `steps`, `lrs`, `floor` (for "auc") and the sweep's settings.
        provenance: seconds, versions.
    """

    sweep: Sweep
    scores: tuple[dict[str, Any], ...]
    best_lr: dict[str, float]
    rows: tuple[dict[str, Any], ...]
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def criterion(self) -> str:
        return self.settings["criterion"]

    def table(self) -> list[dict[str, Any]]:
        """One row per optimizer, best first: `optimizer`, `best_lr`, `criterion`, `value`,
        `converged`, `diverged` and `runs` (counts at the best lr), `median_final_loss`,
        `median_distance` (with a known minimum), and `at_edge` (the best lr is an end of the
        grid, so a wider grid might find a better one)."""
        return [dict(row) for row in self.rows]

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the criterion, the optimizer ranked first with its value, the
        chosen lr of every optimizer, those whose best lr is an end of the grid, and the
        sweep's counts of runs by status (see `Sweep.headline`)."""
        first = self.rows[0] if self.rows else None
        counts = self.sweep.headline()
        return {
            "criterion": self.criterion,
            "best_optimizer": None if first is None else first["optimizer"],
            "best_value": None if first is None else first["value"],
            "best_lr": dict(self.best_lr),
            "at_edge": [r["optimizer"] for r in self.rows if r["at_edge"]],
            "runs": counts["runs"],
            **{status: counts[status] for status in STATUSES},
            "seconds": self.provenance.get("seconds"),
        }

    def runs(self, optimizer: str) -> list[Run]:
        """The runs of `optimizer` at its best learning rate."""
        return self.sweep.runs(optimizer=optimizer, lr=self.best_lr[optimizer])

    def __repr__(self) -> str:
        best = ", ".join(f"{k}: lr={v:g}" for k, v in self.best_lr.items())
        return f"Comparison(criterion={self.criterion!r}, {best})"


def compare(
    objective: Callable[[torch.Tensor], torch.Tensor] | Problem,
    *,
    optimizers: Any,
    starts: Any = None,
    lrs: Any = DEFAULT_LRS,
    steps: int = 100,
    criterion: str = "final_loss",
    seeds: Any = (0,),
    minimum: Any = None,
    floor: float | None = None,
    tol: float = 1e-8,
    optimizer_kwargs: Mapping[str, Any] | None = None,
    schedule: Any = None,
    schedule_kwargs: Mapping[str, Any] | None = None,
    blowup: float = 1e6,
    noise: float = 0.0,
    record_positions: bool = False,
    quiet: bool | None = None,
) -> Comparison:
    """Compare optimizers fairly: same budget, same starts, each at its own best learning rate.

    Every optimizer runs `steps` steps from every start with every seed at every learning rate
    in `lrs`. For each optimizer and lr the per-run values of `criterion` (see `CRITERIA`) are
    averaged over starts and seeds; a diverged run is worth +inf. The best lr has the fewest
    diverged runs, then the lowest mean over its other runs, then is the smallest.

    Args:
        objective: a function of a position or a `Problem` (see `descend`).
        optimizers: as for `sweep`.
        starts: as for `sweep`.
        lrs: the learning-rate grid (default 13 values from 1e-4 to 1, log-spaced).
        steps: the step budget of every run.
        criterion: `"final_loss"`, `"auc"` (mean log-loss over the steps) or `"steps_to_tol"`.
        seeds: seeds for every run.
        minimum: known minimum (point or rows of points) for distances in the table; default:
            the objective's `minima`, if it has them.
        floor: for "auc", the loss subtracted before the log; default: the objective's
            `min_value` if it has a finite one, else 0, or the lowest loss any run reached if
            that is below 0.
        tol, optimizer_kwargs, schedule, schedule_kwargs, blowup, noise: as for `descend`.
        record_positions: keep every position of Problem runs (function runs always keep them).
        quiet: no progress bar.
    """
    if criterion not in CRITERIA:
        raise LossatlasError(f"criterion={criterion!r} is not one of {tuple(CRITERIA)}")
    runs = sweep(
        objective,
        starts=starts,
        optimizers=optimizers,
        lrs=lrs,
        seeds=seeds,
        steps=steps,
        optimizer_kwargs=optimizer_kwargs,
        schedule=schedule,
        schedule_kwargs=schedule_kwargs,
        tol=tol,
        blowup=blowup,
        noise=noise,
        record_positions=record_positions,
        minimum=minimum,
        quiet=quiet,
    )
    if floor is None:
        floor = getattr(objective, "min_value", math.nan)
    if floor is None or not math.isfinite(floor):
        # Diverged runs are left out: one running off downwards would set the floor.
        best = [r.trajectory.best_loss for r in runs if not r.trajectory.diverged]
        floor = min([0.0, *(b for b in best if math.isfinite(b))])
    known = as_minimum(runs.settings["minimum"])
    lr_grid = runs.settings["lrs"]
    scores, best_lr, rows = [], {}, []
    for label in runs.settings["optimizers"]:
        keys = []
        for lr in lr_grid:
            group = runs.runs(optimizer=label, lr=lr)
            values = np.array([_run_value(r.trajectory, criterion, steps, floor) for r in group])
            ok = values[np.isfinite(values)]
            n_div = sum(r.trajectory.diverged for r in group)
            scores.append(
                {
                    "optimizer": label,
                    "lr": lr,
                    "value": float(values.mean()),
                    "converged": sum(r.trajectory.converged for r in group),
                    "diverged": n_div,
                    "runs": len(group),
                }
            )
            keys.append((n_div, float(ok.mean()) if ok.size else math.inf, lr))
        best = min(keys)
        best_lr[label] = lr = best[2]
        score = scores[-len(lr_grid) + keys.index(best)]
        chosen = [r.trajectory for r in runs.runs(optimizer=label, lr=lr)]
        finals = np.nan_to_num([t.final_loss for t in chosen], nan=math.inf)
        row = {
            "optimizer": label,
            "best_lr": lr,
            "criterion": criterion,
            **{k: score[k] for k in ("value", "converged", "diverged", "runs")},
            "median_final_loss": float(np.median(finals)),
            "at_edge": len(lr_grid) > 1 and lr in (min(lr_grid), max(lr_grid)),
        }
        if known is not None:
            distances = [distance_to_minimum(t.final_position, known) for t in chosen]
            row["median_distance"] = float(np.median(distances))
        rows.append(row)
    order = {label: i for i, label in enumerate(runs.settings["optimizers"])}
    rows.sort(key=lambda r: (r["diverged"], r["value"], order[r["optimizer"]]))
    settings = {
        "criterion": criterion,
        "criterion_description": CRITERIA[criterion],
        "ranking": "fewest diverged runs, then lowest mean over the other runs, then smaller lr",
        "diverged_runs": "count as +inf (worst)",
        "steps": steps,
        "lrs": lr_grid,
        "floor": floor if criterion == "auc" else None,
        "sweep": runs.settings,
    }
    provenance = {"seconds": runs.provenance["seconds"], "versions": versions()}
    return Comparison(
        sweep=runs,
        scores=tuple(scores),
        best_lr=best_lr,
        rows=tuple(rows),
        settings=settings,
        provenance=provenance,
    )
