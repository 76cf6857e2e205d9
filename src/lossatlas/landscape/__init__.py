"""Loss landscapes: surfaces (1D lines and 2D grids) around a point, their records and resumable
runs, training trajectories and their PCA planes, and landscapes over the input."""

from __future__ import annotations

from lossatlas.landscape.grid import surface
from lossatlas.landscape.inputs import InputSurface, input_surface
from lossatlas.landscape.pca import PCA, PathLosses, path_losses, pca_directions
from lossatlas.landscape.record import Surface, with_paths
from lossatlas.landscape.recorder import WeightRecorder

__all__ = [
    "PCA",
    "InputSurface",
    "PathLosses",
    "Surface",
    "WeightRecorder",
    "input_surface",
    "path_losses",
    "pca_directions",
    "surface",
    "with_paths",
]
