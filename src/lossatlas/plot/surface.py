"""The static figure of a 1D or 2D surface (PNG, SVG or PDF through matplotlib).

`figure_surface` draws it, into a new figure or the caller's Axes (`ax=`); `plot_surface` saves
it; `save_figure` is the older name that saves a Surface (or any Figure). Matplotlib's object
API only (`matplotlib.figure.Figure`, never pyplot): the user's backend is left alone.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lossatlas.errors import LossatlasError
from lossatlas.landscape.record import Surface
from lossatlas.plot._common import figure_axes, save
from lossatlas.scene.labels import describe, has_center

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def figure_surface(
    surface: Surface,
    *,
    ax: Axes | None = None,
    log: bool = False,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """The loss of a 1D or 2D surface: contours (2D) or a curve with its metrics (1D).

    2D: filled contours with labelled contour lines, a colour bar, the centre (cross) and the
    lowest loss (star). 1D: the loss along the line, metrics on a second (twin) y axis.

    Args:
        surface: a 1D or 2D surface.
        ax: matplotlib Axes to draw into: the colour bar goes beside it (taken from its space),
            the legend inside it and the surface's description is its title; a 1D surface's
            metrics get a twin axis of it. Default: a new figure, the description on top and
            (2D) the legend under the axes.
        log: logarithmic loss colours (2D) or axis (1D) when every finite loss is positive
            (else linear, said in the legend). Non-finite losses are left blank and counted
            in the legend.
        figsize: inches of the new figure (ignored with `ax`); default (6.4, 5.2) for 2D and
            (6.4, 4.2) for 1D.

    Returns:
        The figure: new, or the one holding `ax`.

    Raises:
        LossatlasError: not a 1D or 2D Surface, or unsuitable `ax`.
    """
    from matplotlib import colors, ticker

    if not isinstance(surface, Surface):
        raise LossatlasError(f"expected a Surface, got {type(surface).__name__}")
    if surface.ndim not in (1, 2):
        raise LossatlasError(f"can only plot 1D or 2D surfaces, this one is {surface.ndim}D")
    finite = np.isfinite(surface.loss)
    notes = []  # what the figure leaves out, said in its legend
    if log and (surface.loss[finite] <= 0).any():
        log = False
        notes.append("linear colours: some losses are not positive")
    if not finite.all():
        notes.append(f"{int((~finite).sum())} of {finite.size} points have no finite loss (blank)")
    loss = np.ma.masked_invalid(surface.loss)
    own = ax is None
    size = figsize or ((6.4, 5.2) if surface.ndim == 2 else (6.4, 4.2))
    fig, ax = figure_axes(ax, size, "figure_surface")
    ax.set_xlabel("direction 1 (coefficient)")
    if own:
        fig.suptitle(describe(surface), fontsize=9)
    else:
        ax.set_title(textwrap.fill(describe(surface), 70), fontsize=9)
    for note in notes:
        ax.plot([], [], ls="", label=note)
    if loss.count() == 0:
        ax.text(0.5, 0.5, "no finite loss on this surface", ha="center", transform=ax.transAxes)
        ax.legend(loc="upper left", fontsize=8)
        return fig
    if surface.ndim == 2:
        x, y = surface.coords
        lo, hi = float(loss.min()), float(loss.max())
        if log and hi > lo:  # 1-2-5 levels per decade: round numbers on the lines
            levels = ticker.LogLocator(subs=(1, 2, 5)).tick_values(lo, hi)
            levels = levels[(levels >= levels[levels <= lo].max()) & (levels <= hi * 5)]
            norm, lines_at = colors.LogNorm(levels[0], levels[-1]), levels
        else:
            levels, norm = ticker.MaxNLocator(20).tick_values(lo, hi), None
            lines_at = levels[::2]
        filled = ax.contourf(x, y, loss.T, levels=levels, norm=norm, cmap="viridis")
        lines = ax.contour(
            x, y, loss.T, levels=lines_at, norm=norm, colors="k", linewidths=0.5, alpha=0.7
        )
        ax.clabel(lines, fmt="%.3g", fontsize=7)
        bar = ax.figure.colorbar(filled, ax=ax, label="loss (log scale)" if log else "loss")
        if log:
            bar.ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
            bar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        low = surface.argmin()
        if any(low):  # else the star would hide the centre's cross
            ax.plot(*low, marker="*", ms=12, color="red", ls="", label="lowest loss")
        if has_center(surface):
            label = "centre" + ("" if any(low) else " (lowest loss)")
            ax.plot(0, 0, marker="X", ms=9, mfc="white", mec="k", ls="", label=label)
        ax.set_ylabel("direction 2 (coefficient)")
        ax.set_aspect("equal" if math.isclose(np.ptp(x), np.ptp(y)) else "auto")
        if own:
            fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
        else:
            ax.legend(loc="best", fontsize=7, framealpha=0.8)
    else:
        ax.plot(surface.coords[0], loss, color="C0", label="loss")
        ax.axvline(0, color="grey", ls=":", lw=1)
        ax.set_ylabel("loss")
        ax.set_yscale("log" if log else "linear")
        if surface.metrics:
            twin = ax.twinx()
            for j, (name, grid) in enumerate(surface.metrics.items(), 1):
                twin.plot(surface.coords[0], grid, ls="--", color=f"C{j}", label=name)
            twin.set_ylabel(", ".join(surface.metrics))
            twin.legend(loc="upper right", fontsize=8)
        ax.legend(loc="upper left", fontsize=8)
    return fig


def plot_surface(
    surface: Surface,
    path: str | Path,
    *,
    log: bool = False,
    figsize: tuple[float, float] | None = None,
    dpi: float = 200,
) -> Path:
    """Save `figure_surface(surface)` as PNG, SVG or PDF (by the suffix); returns the path.

    Args:
        surface: a 1D or 2D surface.
        path: the file to write; its suffix picks the format.
        log: logarithmic loss colours (2D) or axis (1D).
        figsize: inches; default (6.4, 5.2) for 2D and (6.4, 4.2) for 1D.
        dpi: resolution of PNG output.

    Returns:
        The path written.
    """
    return save(figure_surface(surface, log=log, figsize=figsize), path, dpi=dpi)


def save_figure(figure: Any, path: str | Path, *, log: bool = False, dpi: float = 200) -> Path:
    """Save a surface's static figure, or any matplotlib Figure, as PNG, SVG or PDF.

    The older entry point, kept for its callers: a `Surface` is `plot_surface(figure, path,
    log=log, dpi=dpi)`, a `Figure` is `save(figure, path, dpi=dpi)`.

    Args:
        figure: a 1D or 2D `Surface`, or a matplotlib `Figure` (saved as drawn).
        path: the file to write; its suffix picks the format.
        log: logarithmic loss colours (2D) or axis (1D) of a Surface; a Figure takes none.
        dpi: resolution of PNG output.

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure

    if isinstance(figure, Surface):
        return save(figure_surface(figure, log=log), path, dpi=dpi)
    if not isinstance(figure, Figure):
        raise LossatlasError(
            f"save_figure needs a Surface or a matplotlib Figure, got {type(figure).__name__}"
        )
    if log:
        raise LossatlasError("log applies to a Surface; a Figure is saved as it is drawn")
    return save(figure, path, dpi=dpi)
