"""A surface's chunks evaluated on Ray actors (`core.cluster`): many processes, GPUs and
machines, one journal.

The driver plans the run as a local run would. Each actor builds an `Evaluator` once, from the
Problem shipped with `ray.put` (or built by a CLI spec on the worker's machine: `build`) and the
driver's `Plan`, so its chunks are cut and batched exactly as they would be locally; the
driver writes every chunk's values to the journal and the file when they arrive. A killed
driver leaves its journal: calling the same `surface` again (with `ray=` or without) computes
only the missing chunks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lossatlas.core.cluster import RayOptions, run_on_ray


def chunk_values(chunk: Any) -> np.ndarray:
    """A chunk's journal record: its losses, then each metric, then each direction's slopes."""
    values = [chunk.loss, *chunk.metrics.values()]
    if chunk.slopes is not None:
        values += list(chunk.slopes.T)
    return np.concatenate(values)


def _evaluator(build: Callable[[], tuple], evaluator_options: dict) -> Any:
    from lossatlas.core.engine import Evaluator

    problem, directions, center = build()
    return Evaluator(problem, directions, center=center, **evaluator_options)


def _evaluate(evaluator: Any, coeffs: np.ndarray) -> np.ndarray:
    return chunk_values(evaluator(np.array(coeffs)))  # a writable copy of Ray's read-only array


def evaluate_on_ray(
    options: RayOptions,
    build: Callable[[], tuple],
    evaluator_options: dict,
    chunks: dict[int, np.ndarray],
    stats: dict[str, Any],
) -> Iterator[tuple[int, np.ndarray]]:
    """`(index, values)` for every chunk of `chunks` (`{index: coefficient rows}`), in the
    order they finish; `build()` returns `(problem, directions, center)` on the worker."""
    setup = functools.partial(_evaluator, build, evaluator_options)
    yield from run_on_ray(options, setup, _evaluate, chunks, stats)
