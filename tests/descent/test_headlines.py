"""`headline()` of the descent records, against the records' own fields computed by hand."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

import lossatlas as la
from lossatlas.io import storage

STARTS = [[1.0, 1.0], [2.0, -1.0]]


def as_json(head: dict[str, Any]) -> dict[str, Any]:
    """The headline through JSON (NaN allowed): it must serialise, and keep its keys."""
    back = json.loads(json.dumps(head, allow_nan=True))
    assert list(back) == list(head)
    return back


def bowl_sweep() -> la.Sweep:
    """sgd and adam at a good and a diverging lr from two starts: 8 runs, some diverged."""
    bowl = la.get_function("bowl")
    return la.sweep(
        bowl, starts=STARTS, optimizers=["sgd", "adam"], lrs=[0.1, 1.5], steps=20, quiet=True
    )


def test_trajectory_headline() -> None:
    run = la.descend(la.get_function("bowl"), [1.0, 1.0], optimizer="sgd", lr=0.1, steps=10)
    head = as_json(run.headline())
    assert (head["optimizer"], head["lr"], head["status"]) == ("sgd", 0.1, run.status)
    assert head["steps_taken"] == len(run.loss) - 1 == 10
    assert head["final_loss"] == run.loss[-1] and head["best_loss"] == min(run.loss.tolist())
    assert head["final_grad_norm"] == run.grad_norm[-1]


def test_sweep_and_run_headlines(tmp_path: Path) -> None:
    runs = bowl_sweep()
    head = as_json(runs.headline())
    counts = Counter(str(r.trajectory.status) for r in runs)
    assert head["runs"] == len(runs.entries) == 8
    assert {s: head[s] for s in ("converged", "diverged", "max_steps")} == {
        s: counts.get(s, 0) for s in ("converged", "diverged", "max_steps")
    }
    assert head["diverged"] > 0  # sgd at lr 1.5 on the bowl
    best = None
    for r in runs:  # the lowest best loss, the first of equals
        if best is None or min(r.trajectory.loss.tolist()) < min(best.trajectory.loss.tolist()):
            best = r
    assert (head["best_optimizer"], head["best_lr"]) == (best.optimizer, best.lr)
    assert head["best_loss"] == min(best.trajectory.loss.tolist())

    for r in runs:
        one = as_json(r.headline())
        assert (one["optimizer"], one["lr"], one["start"], one["seed"]) == (
            r.optimizer,
            r.lr,
            r.start,
            r.seed,
        )
        assert one["final_loss"] == r.trajectory.loss[-1] and one["status"] == r.trajectory.status

    loaded = storage.load(storage.save(runs, tmp_path / "runs.h5"))
    assert as_json(loaded.headline()) == head
    assert [as_json(r.headline()) for r in loaded] == [as_json(r.headline()) for r in runs]


def trajectory(loss: list[float], status: str) -> la.Trajectory:
    n = len(loss)
    return la.Trajectory(np.array(loss), np.ones(n), np.full(n - 1, 0.1), status, np.zeros(2))


def test_sweep_best_run_skips_runs_without_a_finite_loss() -> None:
    entries = (
        la.Run("a", 0.1, 0, 0, trajectory([math.nan], "diverged")),
        la.Run("b", 0.2, 0, 0, trajectory([3.0, 2.0, math.inf], "diverged")),
        la.Run("c", 0.3, 0, 0, trajectory([3.0, 2.5], "max_steps")),
    )
    head = as_json(la.Sweep(entries).headline())
    assert (head["best_optimizer"], head["best_lr"], head["best_loss"]) == ("b", 0.2, 2.0)
    assert (head["diverged"], head["max_steps"], head["converged"]) == (2, 1, 0)
    nothing = as_json(la.Sweep(entries[:1]).headline())
    assert nothing["best_optimizer"] == "a" and math.isnan(nothing["best_loss"])
    empty = as_json(la.Sweep(()).headline())
    assert empty["runs"] == 0 and empty["best_optimizer"] is None


def test_comparison_headline() -> None:
    cmp = la.compare(
        la.get_function("bowl"),
        optimizers=["sgd", "adam"],
        starts=STARTS[:1],
        lrs=[0.01, 0.1, 1.5],
        steps=20,
        quiet=True,
    )
    head = as_json(cmp.headline())
    table = cmp.table()
    assert head["criterion"] == cmp.settings["criterion"] == "final_loss"
    assert head["best_optimizer"] == table[0]["optimizer"]
    assert head["best_value"] == table[0]["value"]
    assert head["best_lr"] == cmp.best_lr
    assert head["at_edge"] == [r["optimizer"] for r in table if r["at_edge"]]
    statuses = Counter(str(r.trajectory.status) for r in cmp.sweep)
    assert head["runs"] == len(cmp.sweep) == 6
    assert head["diverged"] == statuses["diverged"] and head["max_steps"] == statuses["max_steps"]
