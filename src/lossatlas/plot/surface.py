"""Static figures of a surface (PNG, SVG or PDF through matplotlib) and what they share.

Matplotlib's object API only (`matplotlib.figure.Figure`, never pyplot): the user's backend is
left alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lossatlas.errors import LossatlasError
from lossatlas.landscape.record import Surface
from lossatlas.plot._common import figure_path
from lossatlas.scene.labels import describe, has_center


def save_figure(surface: Surface, path: str | Path, *, log: bool = False, dpi: int = 200) -> Path:
    """Save a static figure (PNG, SVG or PDF by the file suffix) with matplotlib.

    2D: filled contours with labelled contour lines, a colour bar, the centre (cross) and the
    lowest loss (star). 1D: the loss along the line, metrics on a second axis.

    Args:
        surface: a 1D or 2D surface.
        path: the file to write; its suffix picks the format.
        log: logarithmic loss colours (2D) or axis (1D).
        dpi: resolution of PNG output.
    """
    from matplotlib import colors, ticker
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    path = figure_path(path)
    if surface.ndim not in (1, 2):
        raise LossatlasError(f"can only plot 1D or 2D surfaces, this one is {surface.ndim}D")
    loss = np.ma.masked_invalid(
        np.where(surface.loss > 0, surface.loss, np.nan) if log else surface.loss
    )
    if loss.count() == 0:
        raise LossatlasError("the surface has no finite (positive, with log) loss to plot")
    fig = Figure(figsize=(6.4, 5.2) if surface.ndim == 2 else (6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlabel("direction 1 (coefficient)")
    fig.suptitle(describe(surface), fontsize=9)
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
        bar = fig.colorbar(filled, ax=ax, label="loss (log scale)" if log else "loss")
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
        fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
