"""What every static figure shares: its axes (made, or the caller's), the landscape background,
levels, legend, size and saving.

Drawn with matplotlib's object API (`matplotlib.figure.Figure`, never pyplot), so the user's
backend is left alone. Every `figure_x(record, *, ax=None, ...)` either makes its own figure
(constrained layout, legends under the axes) or draws into the caller's Axes, leaving that
figure's layout alone (legends then go inside the axes). SVG keeps text as text and PDF embeds
TrueType fonts, so labels stay searchable and editable.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lossatlas.errors import LossatlasError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from lossatlas.scene.background import Background
    from lossatlas.scene.tracks import Track


def colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def contour_levels(lo: float, hi: float, *, log: bool) -> tuple[np.ndarray, Any]:
    """Contour levels and colour norm: 1-2-5 per decade (thinned for wide ranges) when `log`."""
    from matplotlib import colors, ticker

    if not (log and hi > lo):
        return ticker.MaxNLocator(20).tick_values(lo, hi), None
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    subs = (1, 1.5, 2, 3, 5, 7) if k1 - k0 <= 3 else (1, 2, 5) if k1 - k0 <= 8 else (1,)
    stride = max(1, math.ceil((k1 - k0) / 24))
    levels = np.array([m * 10.0**k for k in range(k0, k1 + stride, stride) for m in subs])
    levels = levels[(levels >= levels[levels <= lo].max()) & (levels <= levels[levels >= hi].min())]
    if len(levels) < 6:  # within about a decade: round numbers, evenly spaced
        levels = ticker.MaxNLocator(15).tick_values(lo, hi)
        levels = levels[levels > 0]
    return levels, colors.LogNorm(levels[0], levels[-1])


def draw_background(ax: Axes, bg: Background) -> None:
    """Filled contours, thin contour lines, colour bar, marks, box limits and axis labels."""
    from matplotlib import ticker

    levels, norm = contour_levels(float(bg.z.min()), float(bg.z.max()), log=bg.log)
    filled = ax.contourf(bg.xs, bg.ys, bg.z, levels=levels, norm=norm, cmap="viridis")
    lines = levels if bg.log else levels[::2]
    ax.contour(bg.xs, bg.ys, bg.z, levels=lines, norm=norm, colors="k", linewidths=0.4, alpha=0.4)
    bar = ax.figure.colorbar(filled, ax=ax, label=bg.label)
    if bg.log:
        bar.ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
        bar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    for points, label, style in bg.marks:
        ax.plot(points[:, 0], points[:, 1], ls="", label=label, zorder=6, clip_on=False, **style)
    (x0, x1), (y0, y1) = bg.box
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_autoscale_on(False)  # paths that fly out are clipped, never rescale the axes
    ax.set_aspect("equal" if math.isclose(x1 - x0, y1 - y0) else "auto")
    ax.set_xlabel(bg.axes[0])
    ax.set_ylabel(bg.axes[1])
    if bg.title:
        ax.set_title(textwrap.fill(bg.title, 70), fontsize=10)


def legend(
    ax: Axes, handles: list, tracks: list[Track], *, ends: bool = True, outside: bool = True
) -> None:
    """One legend for the runs, the marks, and what the markers mean.

    Args:
        ax: the axes drawn on.
        handles: the runs' lines and the marks.
        tracks: the runs (a "diverged" key when one diverged).
        ends: add the keys of the start and end markers.
        outside: under the axes, on the figure (one this package made, with constrained
            layout); else inside the axes (the caller's figure is left as it is).
    """
    from matplotlib.lines import Line2D

    def key(marker: str, ms: float, label: str) -> Line2D:
        return Line2D([], [], ls="", marker=marker, mfc="0.6", mec="k", ms=ms, label=label)

    keys = [key("o", 7, "start"), key("s", 6, "end")] if ends else []
    if any(t.status == "diverged" for t in tracks):
        keys.append(key("X", 8, "diverged"))
    handles = handles + keys
    ncols = min(3, max(1, math.ceil(len(handles) / 4)))
    if outside:
        where = {"loc": "outside lower center", "frameon": False}
        ax.figure.legend(handles=handles, ncols=ncols, fontsize=8, **where)
    else:
        ax.legend(handles=handles, loc="best", ncols=ncols, fontsize=7, framealpha=0.8)


def end_style(t: Track) -> dict[str, Any]:
    """End marker: a cross for a diverged run, a square otherwise."""
    return {"marker": "X", "ms": 9} if t.status == "diverged" else {"marker": "s", "ms": 6}


def halo() -> list:
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=3.0, foreground="white", alpha=0.6)]


def check_axes(ax: Any, what: str, *, three_d: bool = False) -> Axes:
    """`ax` if it is a matplotlib Axes of the right kind (2D, or 3D), else a one-line error."""
    from matplotlib.axes import Axes

    if not isinstance(ax, Axes):
        raise LossatlasError(f"{what}: ax must be a matplotlib Axes, got {type(ax).__name__}")
    if three_d and ax.name != "3d":
        raise LossatlasError(
            f"{what} needs 3D axes, e.g. fig.add_subplot(projection='3d'); got {ax.name!r} axes"
        )
    if not three_d and ax.name == "3d":
        raise LossatlasError(f"{what} draws on 2D axes, got 3D axes")
    return ax


def figure_axes(ax: Any, figsize: Any, what: str, *, three_d: bool = False) -> tuple[Figure, Axes]:
    """A new figure (constrained layout) and its one axes, or the caller's `ax` and its figure.

    The figure returned is the one that can be saved: `ax.figure`, or the figure holding the
    subfigure that holds `ax`.
    """
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    if ax is None:
        fig = Figure(figsize=check_size(figsize), layout="constrained")
        if three_d:  # computed_zorder off: paths stay above the surface
            return fig, fig.add_subplot(projection="3d", computed_zorder=False)
        return fig, fig.add_subplot()
    ax = check_axes(ax, what, three_d=three_d)
    return ax.get_figure(root=True), ax


def panel_axes(
    ax: Any,
    names: Sequence[str],
    figsize: Any,
    what: str,
    *,
    column: bool = False,
    sharex: bool = False,
) -> tuple[Figure, list[Axes]]:
    """The axes of a figure of one or more panels, made or the caller's.

    With `ax=None` a new figure holds one panel per name, side by side (or in a `column`).
    Otherwise `ax` is one Axes, which gets the first panel alone, or a sequence of exactly
    `len(names)` Axes, one per panel, all in one figure; anything else is a one-line error.

    Returns:
        The figure (the one that can be saved) and the axes to draw in, first panel first.
    """
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=check_size(figsize), layout="constrained")
        shape = (len(names), 1) if column else (1, len(names))
        return fig, list(np.atleast_1d(fig.subplots(*shape, sharex=sharex)).ravel())
    given = [ax] if isinstance(ax, Axes) else list(np.ravel(np.asarray(ax, dtype=object)))
    if len(given) not in (1, len(names)):
        how = f"one Axes (the {names[0]} alone) or {len(names)}" if len(names) > 1 else "one Axes"
        raise LossatlasError(
            f"{what} draws {len(names)} panel(s) here ({', '.join(names)}): pass {how}, "
            f"got {len(given)}"
        )
    axes = [check_axes(a, what) for a in given]
    figures = {id(a.get_figure(root=True)) for a in axes}
    if len(figures) > 1:
        raise LossatlasError(f"{what}: the Axes must belong to one figure")
    return axes[0].get_figure(root=True), axes


def base_figure(
    bg: Background, figsize: Any, ax: Axes | None = None, what: str = "figure_paths"
) -> tuple[Figure, Axes]:
    """The figure and axes (new, or the caller's) with the landscape drawn as the background."""
    fig, ax = figure_axes(ax, figsize, what)
    draw_background(ax, bg)
    return fig, ax


def check_size(figsize: Any, dpi: Any = 100) -> tuple[float, float]:
    try:
        w, h = (float(v) for v in figsize)
        ok = w > 0 and h > 0 and float(dpi) > 0 and math.isfinite(w * h * float(dpi))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise LossatlasError(
            f"figsize must be two positive inches and dpi positive, got {figsize!r}, {dpi!r}"
        )
    return w, h


def save(fig: Figure, path: str | Path, *, dpi: float = 200) -> Path:
    """Write a figure as PNG, SVG or PDF, picked by the suffix of `path`; returns the path.

    Text stays text in SVG, and PDF embeds TrueType fonts. Missing folders are made.

    Args:
        fig: a matplotlib `Figure`, e.g. from any `figure_x` of this package.
        path: the file; its suffix (.png, .svg or .pdf) picks the format.
        dpi: resolution of PNG output.

    Returns:
        The path written.

    Raises:
        LossatlasError: another suffix, a positive dpi missing, or not a Figure (one line).
    """
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    path = figure_path(path)
    if not isinstance(fig, Figure):
        raise LossatlasError(f"save needs a matplotlib Figure, got {type(fig).__name__}")
    check_size((1, 1), dpi)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):  # text stays text
        fig.savefig(path, dpi=dpi)
    return path


FIGURE_FORMATS = (".png", ".svg", ".pdf")


def figure_path(path: str | Path) -> Path:
    """`path` if its suffix names a static figure format, else a one-line error."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_FORMATS:
        raise LossatlasError(f"cannot save a figure as {path.name!r}; use one of {FIGURE_FORMATS}")
    return path
