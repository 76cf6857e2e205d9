"""Flat versus sharp minima in one call: small- and large-batch training compared (Keskar 2017).

`flat_vs_sharp` trains one network twice from the same initialisation, with a small and a large
batch, compares the two minima (sharpness next to the generalisation gap, see
`compare_minima`) and cuts 1D slices through both along a filter-normalised
random direction, on the training and on the validation data. Each model gets its own
direction, normalised to its own weights as Li et al. (2018) do, from the same seed, so the
slices' widths can be compared. `plot_flat_vs_sharp` draws the four slices on one plot.

References:
    N. S. Keskar, D. Mudigere, J. Nocedal, M. Smelyanskiy, P. T. P. Tang, "On Large-Batch
    Training for Deep Learning: Generalization Gap and Sharp Minima", ICLR 2017.
    H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape of
    Neural Nets", NeurIPS 2018.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lossatlas.core.directions import random_directions
from lossatlas.core.problem import Problem
from lossatlas.core.provenance import versions
from lossatlas.errors import LossatlasError, check_count
from lossatlas.landscape.grid import grid_axes, surface
from lossatlas.landscape.record import Surface
from lossatlas.minima.comparison import MinimaComparison, compare_minima
from lossatlas.training.loop import check_same_model, threads_for
from lossatlas.training.trainer import TrainedModel, train

if TYPE_CHECKING:
    pass


@dataclass(frozen=True, eq=False)
class FlatSharpStudy:
    """Two minima, small- and large-batch, their comparison and 1D slices through them.

    Attributes:
        small, large: the trained models (same seed, so the same initialisation and options).
        comparison: `compare_minima` of the two, small first: losses, gaps, `lambda_max`,
            epsilon- and average sharpness, their distance.
        small_train, small_val, large_train, large_val: 1D `Surface`s along each model's own
            filter-normalised random direction (same seed), on the training and validation data.
        settings, provenance: what was asked; seconds and versions.
    """

    small: TrainedModel
    large: TrainedModel
    comparison: MinimaComparison
    small_train: Surface
    small_val: Surface
    large_train: Surface
    large_val: Surface
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> dict[str, Any]:
        """Headline numbers: both batch sizes, then `[small, large]` pairs of `lambda_max`,
        generalisation gap, train and validation loss and epsilon-sharpness (from the
        comparison's `headline()`), and which minimum is sharper (`"small"` or `"large"` by
        `lambda_max`; None when either is not finite)."""
        c = self.comparison.headline()
        lam = c["lambda_max"]
        sharper = None
        if np.isfinite(lam).all():
            sharper = "large" if lam[1] > lam[0] else "small"
        out: dict[str, Any] = {
            "small_batch": self.settings.get("small_batch"),
            "large_batch": self.settings.get("large_batch"),
        }
        keys = ("lambda_max", "gap", "train_loss", "val_loss", "epsilon_sharpness")
        return out | {key: c[key] for key in keys} | {"sharper": sharper}

    def summary(self) -> str:
        """The comparison as text, and which minimum came out sharper."""
        head = self.headline()
        if head["sharper"] is None:
            return self.comparison.table()
        lam = head["lambda_max"]
        verdict = (
            f"the {head['sharper']}-batch minimum is sharper: lambda_max {lam[0]:.4g} (small "
            f"batch) vs {lam[1]:.4g} (large batch)"
        )
        return f"{self.comparison.table()}\n\n{verdict}"


def flat_vs_sharp(
    problem: Problem,
    val: Problem,
    *,
    small_batch: int = 32,
    large_batch: int | None = None,
    steps: int = 1000,
    lr: float = 0.1,
    optimizer: Any = "sgd",
    optimizer_kwargs: Mapping[str, Any] | None = None,
    schedule: Any = None,
    schedule_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    init: str = "fresh",
    span: tuple[float, float] = (-1.0, 1.0),
    line_steps: int = 41,
    direction_seed: int | None = None,
    train_options: Mapping[str, Any] | None = None,
    compare_options: Mapping[str, Any] | None = None,
    threads: int | None = 1,
    quiet: bool | None = None,
) -> FlatSharpStudy:
    """Train small- and large-batch from one initialisation; compare and slice the two minima.

    Both runs take `steps` steps of the same optimizer, learning rate and schedule (so the
    large batch sees more epochs); only the batch size differs. The slices are
    `theta + c d` for `c` in `span` on `line_steps` points, with `d` from
    `random_directions(model, 1, norm="filter", ignore="biasbn", seed=direction_seed)` made at
    each model's weights (biases and normalisation parameters do not move), BatchNorm in
    evaluation mode with each model's learned statistics.

    Args:
        problem: model, loss and training data; val: the same model on held-out data.
        small_batch: the small batch size; large_batch: the large one (None: all samples,
            i.e. full-batch gradient descent).
        steps, lr, optimizer, optimizer_kwargs, schedule, schedule_kwargs, init: as in `train`.
        seed: the training seed (initialisation and batch order) and the comparison's seed.
        span, line_steps: the slices' coefficient range and points (odd puts `c = 0` on it).
        direction_seed: the direction's seed (default `seed`).
        threads: CPU threads for the whole study (`torch.set_num_threads`, restored
            afterwards); one by default, as for `train`; None keeps torch's setting.
        train_options: more options for `train` (`eval_every`).
        compare_options: more options for `compare_minima` (`k`, `epsilon`, `samples`, ...).
        quiet: no progress bars.
    """
    check_same_model(problem, val)
    n = problem.n_samples
    large = n if large_batch is None else check_count("large_batch", large_batch, 1)
    small = check_count("small_batch", small_batch, 1)
    if large > n:
        raise LossatlasError(f"large_batch={large} exceeds the {n} samples of the problem")
    if small >= large:
        raise LossatlasError(f"small_batch ({small}) must be smaller than large_batch ({large})")
    grid_axes(line_steps, span, 1)  # mistakes fail before training
    if threads is not None:
        check_count("threads", threads, 1)
    dseed = seed if direction_seed is None else check_count("direction_seed", direction_seed, 0)
    began = time.perf_counter()
    common = {
        "seed": seed,
        "steps": steps,
        "lr": lr,
        "optimizer": optimizer,
        "optimizer_kwargs": optimizer_kwargs,
        "schedule": schedule,
        "schedule_kwargs": schedule_kwargs,
        "init": init,
        "val": val,
        "threads": threads,
        **dict(train_options or {}),
    }
    with threads_for(threads, problem.device):
        runs = [
            train(problem, batch_size=b, name=f"{word} batch ({b})", **common)
            for word, b in (("small", small), ("large", large))
        ]
        options = {"seed": seed, "quiet": quiet, **dict(compare_options or {})}
        comparison = compare_minima(problem, runs, val=val, **options)
        lines = []
        for run in runs:
            here = run.problem(problem)
            d = random_directions(here, 1, norm="filter", ignore="biasbn", seed=dseed)
            for data in (here, run.problem(val)):
                lines.append(surface(data, d, line_steps, span, quiet=True))
    settings = {
        "small_batch": small,
        "large_batch": large,
        **{k: v for k, v in runs[0].settings.items() if k not in ("batch_size", "sampling")},
        "span": [float(span[0]), float(span[1])],
        "line_steps": int(line_steps),
        "direction": {"norm": "filter", "ignore": "biasbn", "seed": dseed, "per_model": True},
    }
    provenance = {"seconds": time.perf_counter() - began, "versions": versions()}
    return FlatSharpStudy(*runs, comparison, *lines, settings=settings, provenance=provenance)
