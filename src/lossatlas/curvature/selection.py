"""Which data a curvature estimate uses: all of it, the first batch, or a fixed seeded subset.

Every selection yields `(batch, weight)` pairs whose weighted batch losses sum to the mean (or
sum, for `reduction="sum"`) loss over the selected samples at once, as the engine's do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from lossatlas.core import batches as B
from lossatlas.core.problem import Batch, Problem
from lossatlas.errors import LossatlasError, check_count

DEFAULT_BATCH = 4096


@dataclass(frozen=True)
class DataSelection:
    """Batches of the selected data, with their weights in the total loss.

    Attributes:
        problem: where the data comes from.
        kind: `"all"`, `"first_batch"` or `"subset"`.
        n_samples: samples selected.
        batches: the batches, when they are held (None: iterate the problem's loader).
        batch_size: samples per batch for an `(X, y)` pair.
        seed: the subset's seed.
    """

    problem: Problem
    kind: str
    n_samples: int
    batches: tuple[Batch, ...] | None
    batch_size: int | None
    seed: int | None = None
    n_units: float | None = None  # what the loss averages over (default: the samples)

    def weighted(self) -> Iterator[tuple[Batch, float]]:
        """`(batch, weight)` with the weights of `Problem.batch_weight` over the selection."""
        problem = self.problem
        units = self.n_samples if self.n_units is None else self.n_units
        divisor = 1.0 if problem.reduction == "sum" else float(units)
        source = self.batches if self.batches is not None else problem.batches(self.batch_size)
        for x, y in source:
            yield (x, y), problem.batch_weight(problem.units(x, y)) / divisor

    def describe(self) -> str:
        if self.kind == "subset":
            return f"subset of {self.n_samples} samples (seed {self.seed})"
        if self.kind == "first_batch":
            return f"first batch ({self.n_samples} samples)"
        return f"all {self.n_samples} samples"


def select_data(
    problem: Problem, data: str | int, *, seed: int = 0, batch_size: int | None = None
) -> DataSelection:
    """The selection named by `data`: `"all"`, `"first_batch"` or an int sample count."""
    if batch_size is not None:
        batch_size = check_count("batch_size", batch_size)
    size = batch_size or (None if problem.batch_size else DEFAULT_BATCH)
    if data == "all":
        held = tuple(problem.batches(size)) if problem.in_memory else None
        return DataSelection(problem, "all", problem.n_samples, held, size, None, problem.n_units)
    if data == "first_batch":
        first = next(problem.batches(size))
        return DataSelection(
            problem, "first_batch", B.size(first[0]), (first,), size, None, problem.units(*first)
        )
    if isinstance(data, bool) or not isinstance(data, int):
        raise LossatlasError(
            f"data must be 'all', 'first_batch' or a number of samples, got {data!r}"
        )
    if not 1 <= data <= problem.n_samples:
        raise LossatlasError(f"a subset needs 1 to {problem.n_samples} samples, got {data}")
    if not problem.in_memory:
        raise LossatlasError(
            "a random subset needs the data in memory; pass (X, y) or a list of batches, "
            "or use data='first_batch'"
        )
    samples = B.Samples(problem.batches())  # a padded batch keeps its width (never joined)
    data = min(data, samples.n)  # batches without units are skipped
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(samples.n, generator=generator)[:data].sort().values
    index = index.to(problem.device)
    step = size or data
    held = tuple(part for a in range(0, data, step) for part in samples.take(index[a : a + step]))
    units = sum(problem.units(x, y) for x, y in held)
    return DataSelection(problem, "subset", data, held, size, seed, units)
