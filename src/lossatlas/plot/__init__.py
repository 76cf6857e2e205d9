"""Static figures with matplotlib's object API (never pyplot: the user's backend is left alone).

One way to draw: every figure is `figure_x(record, *, ax=None, ...) -> matplotlib.figure.Figure`.
Without `ax` it makes its own figure (constrained layout, legends under the axes); given a
matplotlib Axes it draws into it (colour bars beside it, legends inside it, the caller's figure
otherwise left alone) and returns the figure holding it, as scikit-learn's inspection plots do.
Figures of several panels (`figure_line`, `figure_curve`, `figure_interpolation`,
`figure_input_surface`) take one Axes (the first panel alone) or one Axes per panel;
`figure_surface_3d` needs 3D axes. `save(fig, path, dpi=...)` writes PNG, SVG or PDF by the
suffix, and `plot_x(record, path, ..., dpi=...)` is `save(figure_x(record, ...), path, dpi=dpi)`.
`animate` writes GIF or MP4; `save_figure` is the older name for saving a Surface's figure.
"""

from __future__ import annotations

from lossatlas.plot._common import save
from lossatlas.plot.animation import animate
from lossatlas.plot.curves import figure_curve, plot_curve
from lossatlas.plot.density import figure_density, plot_density
from lossatlas.plot.edge import figure_edge, plot_edge
from lossatlas.plot.flat_sharp import figure_flat_vs_sharp, plot_flat_vs_sharp
from lossatlas.plot.inputs import figure_input_surface, plot_input_surface
from lossatlas.plot.interpolation import (
    figure_barriers,
    figure_interpolation,
    plot_barriers,
    plot_interpolation,
)
from lossatlas.plot.lines import figure_histories, figure_line, plot_histories, plot_line
from lossatlas.plot.monitor import figure_monitor, plot_monitor
from lossatlas.plot.paths import figure_paths, figure_surface_3d, plot_paths, plot_surface_3d
from lossatlas.plot.surface import figure_surface, plot_surface, save_figure

__all__ = [
    "animate",
    "figure_barriers",
    "figure_curve",
    "figure_density",
    "figure_edge",
    "figure_flat_vs_sharp",
    "figure_histories",
    "figure_input_surface",
    "figure_interpolation",
    "figure_line",
    "figure_monitor",
    "figure_paths",
    "figure_surface",
    "figure_surface_3d",
    "plot_barriers",
    "plot_curve",
    "plot_density",
    "plot_edge",
    "plot_flat_vs_sharp",
    "plot_histories",
    "plot_input_surface",
    "plot_interpolation",
    "plot_line",
    "plot_monitor",
    "plot_paths",
    "plot_surface",
    "plot_surface_3d",
    "save",
    "save_figure",
]
