"""What every layer shares: the user-mistake error, the one-line warning, and argument checks."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any


class LossatlasError(ValueError):
    """A user mistake (bad input, a mismatched direction, a bad file).

    The message is one line that says what is wrong and, where it helps, what to do. The command
    line prints it without a traceback and exits with status 2.
    """


def check_count(name: str, value: Any, least: int = 1) -> int:
    """`value` as an integer of at least `least`, or a one-line error naming `name`.

    >>> check_count("steps", 3)
    3
    >>> check_count("steps", 0)
    Traceback (most recent call last):
    lossatlas.errors.LossatlasError: steps must be an integer of at least 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or value < least:
        raise LossatlasError(f"{name} must be an integer of at least {least}, got {value!r}")
    return int(value)


def check_positive(name: str, value: Any) -> float:
    """`value` as a positive finite float, or a one-line error naming `name`."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < math.inf:
        raise LossatlasError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class LossatlasWarning(UserWarning):
    """A one-line notice: lossatlas changed course (for example fell back to a slower path)."""


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`, for one-line errors and warnings."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def check_seed(seed: int) -> int:
    """Raise `LossatlasError` unless `seed` is an integer (not a bool) in [0, 2^64)."""
    # 2^64 - 1 is the largest seed a torch.Generator takes.
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise LossatlasError(f"seed must be a non-negative integer below 2**64, got {seed!r}")
    return seed
