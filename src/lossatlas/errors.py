"""The one exception type lossatlas raises for user mistakes."""

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
    """`value` as an integer of at least `least`, or a one-line error naming `name`."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < least:
        raise LossatlasError(f"{name} must be an integer of at least {least}, got {value!r}")
    return int(value)


def check_positive(name: str, value: Any) -> float:
    """`value` as a positive finite float, or a one-line error naming `name`."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < math.inf:
        raise LossatlasError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)
