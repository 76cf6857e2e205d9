"""Self-contained interactive HTML reports (plotly.js inline, works offline)."""

from __future__ import annotations

from lossatlas.report.page import Section, write_report

__all__ = [
    "Section",
    "write_report",
]
