"""`torch.compile` of the engine's forward functions, where the run is long enough to repay it.

Compiling removes the per-operator overhead that dominates small models (each op of a tiny
transformer costs more in dispatch than in arithmetic) and fuses elementwise ops, but it costs
seconds to tens of seconds up front (on this 2-core CPU with a cold inductor cache: 17 s for a
tiny GPT-2, 15 s for the digits MLP, 25 s for ResNet-18). So `compile="auto"` times the second
chunk eagerly (the first also pays warm-ups), estimates the eager time of the rest of the run,
and compiles only when that exceeds `PAYS_AFTER_SECONDS`; the chunk after the compiling one is
timed again, and compiling stops if it did not make the points faster. `compile=True` compiles
from the first chunk, `False` never. Compiled values equal the eager ones to float rounding
(inductor fuses and reorders reductions), so a run whose chunks were computed differently
differs from an eager one by rounding only.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from lossatlas.errors import LossatlasError, LossatlasWarning, one_line

# Eager seconds a run must have left for "auto" to compile. Measured break-evens with a cold
# cache (bench/README.md): 45 s of eager work for a tiny GPT-2, 80-100 s for the digits MLP, about
# 5 min for ResNet-18 (compiled 8% faster).
PAYS_AFTER_SECONDS = 120.0


def check_compile(choice: Any) -> None:
    """Refuses anything but `"auto"`, `True` or `False`."""
    if not (choice is True or choice is False or choice == "auto"):
        raise LossatlasError(f"compile={choice!r} is not one of 'auto', True, False")


def _ignore_logging() -> None:
    """Lets torch.compile trace through `logger.warning_once` calls (Hugging Face models make
    them in every forward; each would otherwise break the graph and run the forward eagerly)."""
    once = getattr(logging.Logger, "warning_once", None)
    if once is not None:
        torch._dynamo.config.ignore_logging_functions.add(once)


class Compilation:
    """Decides, chunk by chunk, whether the engine runs compiled, and holds the compiled functions.

    Args:
        choice: `"auto"`, `True` or `False` (see the module docstring).
        n_points: points the run will evaluate (None: unknown; `"auto"` then never compiles).

    Attributes:
        active: whether the next chunk runs compiled.
        compiled_points: points evaluated by compiled functions so far.
    """

    def __init__(self, choice: bool | str, n_points: int | None) -> None:
        check_compile(choice)
        self.choice = choice
        self.active = choice is True
        self.compiled_points = 0
        self._points_left = n_points
        self._eager_per_point: float | None = None
        self._chunks_compiled = 0
        self._eager_chunks = 0
        self._functions: dict[str, Callable] = {}
        self._start = 0.0

    def expect(self, n_points: int) -> None:
        """The run has `n_points` left to evaluate (e.g. fewer than planned, when resumed)."""
        self._points_left = n_points

    def function(self, key: str, eager: Callable) -> Callable:
        """`eager`, or its compiled version (made once per `key`) while compiling is active."""
        if not self.active:
            return eager
        if key not in self._functions:
            _ignore_logging()
            self._functions[key] = torch.compile(eager)
        return self._functions[key]

    def start_chunk(self) -> None:
        self._start = time.perf_counter()

    def end_chunk(self, n: int) -> None:
        """Times the chunk of `n` points just run and decides how the next one runs."""
        per_point = (time.perf_counter() - self._start) / max(n, 1)
        if self._points_left is not None:
            self._points_left -= n
        if self.active:
            self.compiled_points += n
            self._chunks_compiled += 1
            # the first compiled chunk paid for compiling; the second shows what it bought
            if self.choice == "auto" and self._chunks_compiled == 2:
                assert self._eager_per_point is not None
                self.active = per_point < self._eager_per_point
            return
        if self.choice != "auto" or self._eager_per_point is not None:
            return
        self._eager_chunks += 1
        if self._eager_chunks < 2:  # the first chunk also pays warm-ups (tracing, caches)
            return
        self._eager_per_point = per_point
        if self._points_left is not None:
            self.active = per_point * self._points_left >= PAYS_AFTER_SECONDS

    def failed(self, exc: Exception) -> None:
        """A compiled call failed: an error for `compile=True`, a warning and eager for "auto"."""
        if self.choice is True:
            raise LossatlasError(f"torch.compile failed on this model: {one_line(exc)}") from exc
        self.active = False
        warnings.warn(
            f"lossatlas: torch.compile failed on this model ({one_line(exc)}); "
            "evaluating without it",
            LossatlasWarning,
            stacklevel=4,
        )
