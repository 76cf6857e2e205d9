"""Optimizer paths over a landscape: filled contours and a 3D surface, several runs on one plot.

Every `figure_*` returns the matplotlib `Figure`, drawn into the caller's Axes when given one
(`ax=`); its `plot_*` twin is `save(figure_*(...), path, dpi=dpi)`: PNG, SVG or PDF by the suffix.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lossatlas.descent.functions import Box, TestFunction
from lossatlas.landscape.record import Surface
from lossatlas.plot._common import base_figure, colors, end_style, figure_axes, halo, legend, save
from lossatlas.scene.background import background_of
from lossatlas.scene.tracks import Track, as_tracks, last_inside

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _draw_path(ax: Axes, t: Track, color: Any, box: Box) -> Any:
    """A path with small markers, its start (circle) and end (square, or X if diverged)."""
    p = t.positions
    line = ax.plot(p[:, 0], p[:, 1], color=color, lw=1.6, label=t.label, path_effects=halo())[0]
    every = max(1, len(p) // 60)  # small markers at the steps, at most about 60
    ax.plot(p[::every, 0], p[::every, 1], ls="", marker="o", ms=2.5, color=color, mec="none")
    ax.plot(*p[0], ls="", marker="o", ms=7, mfc=color, mec="k", zorder=5)
    end = last_inside(p, box)
    if end is not None:
        ax.plot(*end, ls="", mfc=color, mec="k", zorder=5, clip_on=False, **end_style(t))
    return line


def figure_paths(
    background: TestFunction | Surface,
    runs: Any,
    *,
    ax: Axes | None = None,
    log: bool = True,
    steps: int = 201,
    labels: Any = None,
    box: Box | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 6.4),
) -> Figure:
    """Optimizer paths over a filled contour of the landscape; see `plot_paths`.

    Args:
        background, runs, log, steps, labels, box, title: as for `plot_paths`.
        figsize: inches of the new figure (ignored with `ax`).
        ax: 2D matplotlib Axes to draw into, with the colour bar beside it (taken from its
            space) and the legend inside it; default a new figure with the legend under the axes.

    Returns:
        The figure: new, or the one holding `ax`.
    """
    bg = background_of(background, log=log, steps=steps, box=box, title=title)
    tracks = as_tracks(runs, labels=labels)
    own = ax is None
    fig, ax = base_figure(bg, figsize, ax, "figure_paths")
    lines = [_draw_path(ax, t, c, bg.box) for t, c in zip(tracks, colors(len(tracks)))]
    marks = [a for a in ax.lines if not a.get_label().startswith("_") and a not in lines]
    legend(ax, lines + marks, tracks, outside=own)
    return fig


def figure_surface_3d(
    background: TestFunction | Surface,
    runs: Any,
    *,
    ax: Axes | None = None,
    log: bool = True,
    steps: int = 81,
    labels: Any = None,
    box: Box | None = None,
    title: str | None = None,
    elev: float = 45.0,
    azim: float = 60.0,
    figsize: tuple[float, float] = (7.5, 6.4),
) -> Figure:
    """The landscape as a 3D surface with the paths drawn on it; see `plot_surface_3d`.

    Args:
        background, runs, log, steps, labels, box, title, elev, azim: as for `plot_surface_3d`.
        figsize: inches of the new figure (ignored with `ax`).
        ax: 3D matplotlib Axes to draw into (`fig.add_subplot(projection="3d")`; other axes
            are a one-line error). Its `computed_zorder` is turned off, so that the paths stay
            above the surface, and its view is set to `elev`, `azim`; the colour bar goes
            beside it and the legend inside it.

    Returns:
        The figure: new, or the one holding `ax`.
    """
    from matplotlib import ticker

    own = ax is None
    fig, ax = figure_axes(ax, figsize, "figure_surface_3d", three_d=True)
    bg = background_of(background, log=log, steps=steps, box=box, title=title)
    tracks = as_tracks(runs, labels=labels)
    ax.computed_zorder = False  # paths stay above the surface
    grid_x, grid_y = np.meshgrid(bg.xs, bg.ys)
    z = np.log10(bg.z.filled(np.nan)) if bg.log else bg.z.filled(np.nan)
    # Heights span at most 6 decades: a deep narrow valley would otherwise be a row of spikes.
    bottom = max(np.nanmin(z), np.nanmax(z) - 6) if bg.log else -np.inf
    z = np.maximum(z, bottom)
    every_point = {"rcount": len(bg.ys), "ccount": len(bg.xs), "antialiased": False}
    surf = ax.plot_surface(grid_x, grid_y, z, cmap="viridis", alpha=0.8, lw=0, **every_point)
    (x0, x1), (y0, y1) = bg.box
    lines = []
    for t, color in zip(tracks, colors(len(tracks))):
        p = t.positions
        inside = (p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)
        h = np.maximum(bg.shade(bg.loss_at(np.nan_to_num(p))), bottom)
        h[~inside] = np.nan  # 3D axes do not clip: points off the box are left out
        lines.append(ax.plot(p[:, 0], p[:, 1], h, color=color, lw=2, label=t.label, zorder=5)[0])
        ax.plot(*p[0], h[0], ls="", marker="o", ms=7, mfc=color, mec="k", zorder=6)
        last = np.flatnonzero(np.isfinite(h))
        if last.size:
            k = last[-1]
            ax.plot(p[k, 0], p[k, 1], h[k], ls="", mfc=color, mec="k", zorder=6, **end_style(t))
    bar = ax.figure.colorbar(surf, ax=ax, shrink=0.6, pad=0.08, label=bg.label)
    if bg.log:  # heights are log10 of the loss: label them with the loss itself
        power = ticker.FuncFormatter(lambda v, _: f"{10**v:.3g}")
        for axis in (ax.zaxis, bar.ax.yaxis):
            axis.set_major_locator(ticker.MaxNLocator(integer=True))
            axis.set_major_formatter(power)
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel=bg.axes[0], ylabel=bg.axes[1], zlabel="loss")
    ax.view_init(elev=elev, azim=azim)
    if bg.title:
        ax.set_title(textwrap.fill(bg.title, 70), fontsize=10)
    legend(ax, lines, tracks, outside=own)
    return fig


def plot_paths(
    background: TestFunction | Surface,
    runs: Any,
    path: str | Path,
    *,
    log: bool = True,
    steps: int = 201,
    labels: Any = None,
    box: Box | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 6.4),
    dpi: float = 200,
) -> Path:
    """Optimizer paths over a filled contour of a test function or of a 2D surface.

    Each run is a line with small markers, a circle at its start and a square at its end (a
    cross if it diverged; an end off the box is pulled onto its edge). Paths leaving the box are
    clipped; the axes keep the box. Known minima of a test function are white stars; a
    surface's lowest grid point is a star and its centre a cross. Legend labels are the
    optimizer and lr from the run settings, plus schedule, options, start or seed where runs
    differ in them.

    Args:
        background: a `TestFunction` (evaluated on its box, or `box`) or a 2D `Surface`.
        runs: a Trajectory, Run, Sweep, `(n, 2)` positions (e.g. coordinates along a surface's
            directions), a list of these or a dict `{label: ...}`.
        path: PNG, SVG or PDF by the suffix.
        log: log colours; see the module notes for values at or below zero.
        steps: grid points per axis for a test function.
        labels: one legend label per run, replacing the automatic ones.
        box: `((xmin, xmax), (ymin, ymax))` to show.
        title: the axes title; default the function and its formula, or the surface's
            description; "" for none.
        figsize: inches.
        dpi: resolution of PNG output.

    Returns:
        The path written.
    """
    options = {"log": log, "steps": steps, "labels": labels, "box": box, "title": title}
    return save(figure_paths(background, runs, figsize=figsize, **options), path, dpi=dpi)


def plot_surface_3d(
    background: TestFunction | Surface,
    runs: Any,
    path: str | Path,
    *,
    log: bool = True,
    steps: int = 81,
    labels: Any = None,
    box: Box | None = None,
    title: str | None = None,
    elev: float = 45.0,
    azim: float = 60.0,
    figsize: tuple[float, float] = (7.5, 6.4),
    dpi: float = 200,
) -> Path:
    """The landscape as a 3D surface with each path drawn on it at the height of its loss.

    With `log` the height is log10 of the (shifted) loss, labelled with the loss itself, and
    spans at most 6 decades (deeper points sit on that floor). Path points outside the box are
    left out (3D axes cannot clip). Arguments as for `plot_paths`,
    plus the view's elevation and azimuth in degrees.

    Returns:
        The path written.
    """
    options = {"log": log, "steps": steps, "labels": labels, "box": box, "title": title}
    view = {"elev": elev, "azim": azim, "figsize": figsize}
    return save(figure_surface_3d(background, runs, **options, **view), path, dpi=dpi)
