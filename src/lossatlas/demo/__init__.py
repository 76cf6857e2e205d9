"""`lossatlas demo`: every capability on built-in problems, in one report."""

from __future__ import annotations

from lossatlas.demo.run import run_demo

__all__ = [
    "run_demo",
]
