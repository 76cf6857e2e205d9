"""lossatlas: see and measure the loss landscapes of neural networks."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lossatlas")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

from lossatlas.animation import animate
from lossatlas.compare import Comparison, compare
from lossatlas.curvature import SharpnessReport, sharpness_report
from lossatlas.curves import Curve, CurveLosses, curve_losses, fit_curve
from lossatlas.curves_plot import figure_curve, plot_curve
from lossatlas.density import Density, figure_density, plot_density, spectral_density
from lossatlas.descent import Trajectory, descend
from lossatlas.directions import (
    Directions,
    as_directions,
    axis_directions,
    direction_between,
    random_directions,
)
from lossatlas.edge import EdgeHistory, EdgeOfStability
from lossatlas.engine import Evaluator, LossatlasWarning
from lossatlas.errors import LossatlasError
from lossatlas.flat_sharp import (
    FlatSharpStudy,
    figure_flat_vs_sharp,
    flat_vs_sharp,
    plot_flat_vs_sharp,
)
from lossatlas.functions import (
    FUNCTIONS,
    TestFunction,
    get_function,
    list_functions,
    register_function,
)
from lossatlas.hessian import HessianOperator
from lossatlas.inputs import InputSurface, input_surface, plot_input_surface
from lossatlas.interpolation import (
    BarrierMatrix,
    Interpolation,
    barrier_matrix,
    interpolate,
    plane_through,
)
from lossatlas.interpolation_plot import (
    figure_barriers,
    figure_interpolation,
    plot_barriers,
    plot_interpolation,
)
from lossatlas.lines import figure_histories, figure_line, plot_histories, plot_line
from lossatlas.metrics import accuracy, error
from lossatlas.minima import MinimaComparison, compare_minima
from lossatlas.optimizers import OPTIMIZERS, SCHEDULES
from lossatlas.planning import Plan
from lossatlas.plots import figure_paths, figure_surface_3d, plot_paths, plot_surface_3d
from lossatlas.problem import Problem
from lossatlas.problems import (
    PROBLEMS,
    digits_mlp,
    get_problem,
    linreg,
    one_weight,
    teacher_cnn,
    tiny_7,
    xy_regression,
)
from lossatlas.report import Section, write_report
from lossatlas.result import Surface, with_paths
from lossatlas.sharpness import (
    AdaptiveSharpness,
    EpsilonSharpness,
    adaptive_sharpness,
    epsilon_sharpness,
)
from lossatlas.sharpness_average import AverageSharpness, average_sharpness
from lossatlas.spectrum import Eigen, hessian_directions, hessian_eigen, power_iteration
from lossatlas.stability import StableLR, max_stable_lr, stable_lr
from lossatlas.static import save_figure
from lossatlas.storage import load, save
from lossatlas.surface import surface
from lossatlas.sweep import Run, Sweep, sweep
from lossatlas.trace import Trace, hessian_trace
from lossatlas.training import TrainedModel, train
from lossatlas.training_runs import from_checkpoints, train_runs
from lossatlas.trajectory import PCA, PathLosses, WeightRecorder, path_losses, pca_directions
from lossatlas.vtk import export_vtp

__all__ = [
    "FUNCTIONS",
    "OPTIMIZERS",
    "PCA",
    "PROBLEMS",
    "SCHEDULES",
    "AdaptiveSharpness",
    "AverageSharpness",
    "BarrierMatrix",
    "Comparison",
    "Curve",
    "CurveLosses",
    "Density",
    "Directions",
    "EdgeHistory",
    "EdgeOfStability",
    "Eigen",
    "EpsilonSharpness",
    "Evaluator",
    "FlatSharpStudy",
    "HessianOperator",
    "InputSurface",
    "Interpolation",
    "LossatlasError",
    "LossatlasWarning",
    "MinimaComparison",
    "PathLosses",
    "Plan",
    "Problem",
    "Run",
    "Section",
    "SharpnessReport",
    "StableLR",
    "Surface",
    "Sweep",
    "TestFunction",
    "Trace",
    "TrainedModel",
    "Trajectory",
    "WeightRecorder",
    "accuracy",
    "adaptive_sharpness",
    "animate",
    "as_directions",
    "average_sharpness",
    "axis_directions",
    "barrier_matrix",
    "compare",
    "compare_minima",
    "curve_losses",
    "descend",
    "digits_mlp",
    "direction_between",
    "epsilon_sharpness",
    "error",
    "export_vtp",
    "figure_barriers",
    "figure_curve",
    "figure_density",
    "figure_flat_vs_sharp",
    "figure_histories",
    "figure_interpolation",
    "figure_line",
    "figure_paths",
    "figure_surface_3d",
    "fit_curve",
    "flat_vs_sharp",
    "from_checkpoints",
    "get_function",
    "get_problem",
    "hessian_directions",
    "hessian_eigen",
    "hessian_trace",
    "input_surface",
    "interpolate",
    "linreg",
    "list_functions",
    "load",
    "max_stable_lr",
    "one_weight",
    "path_losses",
    "pca_directions",
    "plane_through",
    "plot_barriers",
    "plot_curve",
    "plot_density",
    "plot_flat_vs_sharp",
    "plot_histories",
    "plot_input_surface",
    "plot_interpolation",
    "plot_line",
    "plot_paths",
    "plot_surface_3d",
    "power_iteration",
    "random_directions",
    "register_function",
    "save",
    "save_figure",
    "sharpness_report",
    "spectral_density",
    "stable_lr",
    "surface",
    "sweep",
    "teacher_cnn",
    "tiny_7",
    "train",
    "train_runs",
    "with_paths",
    "write_report",
    "xy_regression",
]
