"""lossatlas: see and measure the loss landscapes of neural networks."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lossatlas")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

from lossatlas.animation import animate
from lossatlas.compare import Comparison, compare
from lossatlas.descent import Trajectory, descend
from lossatlas.directions import (
    Directions,
    as_directions,
    axis_directions,
    direction_between,
    random_directions,
)
from lossatlas.engine import Evaluator, LossatlasWarning
from lossatlas.errors import LossatlasError
from lossatlas.functions import (
    FUNCTIONS,
    TestFunction,
    get_function,
    list_functions,
    register_function,
)
from lossatlas.lines import figure_histories, figure_line, plot_histories, plot_line
from lossatlas.metrics import accuracy, error
from lossatlas.optimizers import OPTIMIZERS, SCHEDULES
from lossatlas.planning import Plan
from lossatlas.plots import figure_paths, figure_surface_3d, plot_paths, plot_surface_3d
from lossatlas.problem import Problem
from lossatlas.problems import digits_mlp
from lossatlas.report import save_figure, write_report
from lossatlas.result import Surface, load
from lossatlas.surface import surface
from lossatlas.sweep import Run, Sweep, sweep
from lossatlas.trajectory import PCA, PathLosses, WeightRecorder, path_losses, pca_directions

__all__ = [
    "FUNCTIONS",
    "OPTIMIZERS",
    "PCA",
    "SCHEDULES",
    "Comparison",
    "Directions",
    "Evaluator",
    "LossatlasError",
    "LossatlasWarning",
    "PathLosses",
    "Plan",
    "Problem",
    "Run",
    "Surface",
    "Sweep",
    "TestFunction",
    "Trajectory",
    "WeightRecorder",
    "__version__",
    "accuracy",
    "animate",
    "as_directions",
    "axis_directions",
    "compare",
    "descend",
    "digits_mlp",
    "direction_between",
    "error",
    "figure_histories",
    "figure_line",
    "figure_paths",
    "figure_surface_3d",
    "get_function",
    "list_functions",
    "load",
    "path_losses",
    "pca_directions",
    "plot_histories",
    "plot_line",
    "plot_paths",
    "plot_surface_3d",
    "random_directions",
    "register_function",
    "save_figure",
    "surface",
    "sweep",
    "write_report",
]
