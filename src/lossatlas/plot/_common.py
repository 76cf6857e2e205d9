"""What every static figure shares: the landscape background, levels, legend, size and saving.

Drawn with matplotlib's object API (`matplotlib.figure.Figure`, never pyplot), so the user's
backend is left alone. SVG keeps text as text and PDF embeds TrueType fonts, so labels stay
searchable and editable.
"""

from __future__ import annotations

import math
import textwrap
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


def draw_background(fig: Figure, ax: Axes, bg: Background) -> None:
    """Filled contours, thin contour lines, colour bar, marks, box limits and axis labels."""
    from matplotlib import ticker

    levels, norm = contour_levels(float(bg.z.min()), float(bg.z.max()), log=bg.log)
    filled = ax.contourf(bg.xs, bg.ys, bg.z, levels=levels, norm=norm, cmap="viridis")
    lines = levels if bg.log else levels[::2]
    ax.contour(bg.xs, bg.ys, bg.z, levels=lines, norm=norm, colors="k", linewidths=0.4, alpha=0.4)
    bar = fig.colorbar(filled, ax=ax, label=bg.label)
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


def legend(fig: Figure, handles: list, tracks: list[Track], *, ends: bool = True) -> None:
    """One legend under the axes: the runs, the marks, and what the markers mean."""
    from matplotlib.lines import Line2D

    def key(marker: str, ms: float, label: str) -> Line2D:
        return Line2D([], [], ls="", marker=marker, mfc="0.6", mec="k", ms=ms, label=label)

    keys = [key("o", 7, "start"), key("s", 6, "end")] if ends else []
    if any(t.status == "diverged" for t in tracks):
        keys.append(key("X", 8, "diverged"))
    handles = handles + keys
    ncols = min(3, max(1, math.ceil(len(handles) / 4)))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False)


def end_style(t: Track) -> dict[str, Any]:
    """End marker: a cross for a diverged run, a square otherwise."""
    return {"marker": "X", "ms": 9} if t.status == "diverged" else {"marker": "s", "ms": 6}


def halo() -> list:
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=3.0, foreground="white", alpha=0.6)]


def base_figure(bg: Background, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    draw_background(fig, ax, bg)
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


def save(fig: Figure, path: Path, dpi: float) -> Path:
    from matplotlib import rc_context

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
