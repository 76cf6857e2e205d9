"""What figures show, independent of the drawing library: landscape backgrounds, labels and
labelled runs. Shared by `lossatlas.plot` (matplotlib) and `lossatlas.report` (plotly)."""

from __future__ import annotations

from lossatlas.scene.background import Background, background_of
from lossatlas.scene.labels import describe, direction_labels, has_center
from lossatlas.scene.tracks import Track, as_tracks

__all__ = [
    "Background",
    "Track",
    "as_tracks",
    "background_of",
    "describe",
    "direction_labels",
    "has_center",
]
