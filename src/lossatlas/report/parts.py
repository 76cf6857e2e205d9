"""What one report section shows (`Parts`), and how its table cells are written (`fmt`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Parts:
    """What a section shows: heading, headline numbers, `(figure, caption)`s, tables, settings."""

    title: str
    cards: dict[str, Any] = field(default_factory=dict)
    figures: list[tuple[Any, str]] = field(default_factory=list)
    tables: list[list[dict[str, Any]]] = field(default_factory=list)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)


def fmt(value: Any) -> str:
    """A value for a table cell: 4 significant digits, lists and dicts inline."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
        return " × ".join(map(str, value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)
