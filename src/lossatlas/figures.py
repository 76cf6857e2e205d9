"""What every static figure shares: the landscape background, levels, legend, size and saving.

Drawn with matplotlib's object API (`matplotlib.figure.Figure`, never pyplot), so the user's
backend is left alone. SVG keeps text as text and PDF embeds TrueType fonts, so labels stay
searchable and editable.

Log colours need positive values. A function that goes below zero (Styblinski-Tang, six-hump
camel) is shown as `loss - min_value` when its minimum is known, on a linear scale otherwise;
zeros (a minimum on the grid) are raised to the smallest positive value shown.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lossatlas.errors import LossatlasError
from lossatlas.functions import TestFunction, _check_box
from lossatlas.result import Surface
from lossatlas.static import describe, has_center

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from lossatlas.tracks import Track


Box = tuple[tuple[float, float], tuple[float, float]]


MINIMUM = {"marker": "*", "ms": 15, "mfc": "white", "mec": "k", "mew": 1.0}


CENTRE = {"marker": "X", "ms": 10, "mfc": "white", "mec": "k"}


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


@dataclass
class _Background:
    xs: np.ndarray
    ys: np.ndarray
    z: np.ma.MaskedArray  # values as coloured; rows follow y, as matplotlib expects
    log: bool
    offset: float  # subtracted from losses before colouring
    floor: float  # smallest coloured value (log), zeros are raised to it
    label: str
    box: Box
    axes: tuple[str, str]
    title: str
    marks: list[tuple[np.ndarray, str, dict]]
    loss_at: Callable[[np.ndarray], np.ndarray]  # raw loss at (n, 2) points

    def shade(self, loss: np.ndarray) -> np.ndarray:
        """Losses as coloured (shifted; floored and log10 when `log`), NaN where non-finite."""
        v = np.asarray(loss, float) - self.offset
        v = np.where(np.isfinite(v), v, np.nan)
        return np.log10(np.maximum(v, self.floor)) if self.log else v


def _background(background: Any, *, log: bool, steps: int, box: Any, title: str | None):
    if isinstance(background, TestFunction):
        f = background
        box = f.box if box is None else _check_box(box)
        xs, ys, raw = f.grid(steps, box)
        minima = [m for m in f.minima]
        label = "global minimum" if len(minima) == 1 else "global minima"
        marks = [(np.array(minima), label, MINIMUM)] if minima else []

        def loss_at(p: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return f(torch.from_numpy(np.ascontiguousarray(p, dtype=np.float64))).numpy()

        axes, default, min_value = ("x", "y"), f"{f.name}: {f.formula}", f.min_value
    elif (isinstance(background, Surface) and background.ndim == 2) or _is_input(background):
        from scipy.interpolate import RegularGridInterpolator

        s = background
        xs, ys = (np.asarray(c, float) for c in s.coords)
        raw = s.loss.T
        grid_box = ((xs.min(), xs.max()), (ys.min(), ys.max()))
        box = grid_box if box is None else _check_box(box)
        interp = RegularGridInterpolator((xs, ys), s.loss, bounds_error=False)
        loss_at, marks = interp, []
        if isinstance(s, Surface):
            low = s.argmin() if np.isfinite(s.loss).any() else (0.0, 0.0)
            if any(low):  # as in save_figure: the star would hide the centre's cross
                marks.append((np.array([low]), "lowest loss on the grid", MINIMUM))
            if has_center(s) and s.directions.settings.get("kind") != "models-plane":
                what = (
                    "the weights" if s.settings.get("center", "weights") == "weights" else "c = 0"
                )
                marks.append((np.zeros((1, 2)), f"centre ({what})", CENTRE))
            axes, default = _direction_labels(s.directions.settings), describe(s)
        else:
            axes, default = tuple(s.axes), "loss over the input plane"
        min_value = math.nan
    else:
        what = type(background).__name__
        if isinstance(background, Surface):
            what = f"a {background.ndim}D Surface"
        raise LossatlasError(f"background must be a TestFunction or a 2D Surface, got {what}")
    finite = raw[np.isfinite(raw)]
    if finite.size == 0:
        raise LossatlasError("the background has no finite loss to plot")
    offset, label, floor = 0.0, "loss", 0.0
    if log and finite.min() < 0:
        if math.isfinite(min_value) and min_value <= finite.min():
            offset, label = min_value, f"loss − min (min = {min_value:.4g})"
        else:
            log, label = False, "loss (linear: it goes below 0)"
    positive = finite[finite - offset > 0] - offset
    log = log and positive.size > 0
    if log:  # at most 12 decades: deeper holes would squash the colours of everything else
        floor = max(positive.min(), positive.max() * 1e-12)
        label += ", log scale"
    z = raw - offset
    z = np.ma.masked_invalid(np.maximum(z, floor) if log else z)
    title = default if title is None else title
    return _Background(xs, ys, z, log, offset, floor, label, box, axes, title, marks, loss_at)


def _is_input(background: Any) -> bool:
    from lossatlas.inputs import InputSurface

    return isinstance(background, InputSurface)


def _direction_labels(settings: dict[str, Any]) -> tuple[str, str]:
    """Axis labels of a 2D surface: PCA components say how much of the path they explain."""
    if settings.get("kind") == "models-plane":
        a, b, c = settings["names"]
        return (f"distance from {a} towards {b}", f"distance towards {c} (orthogonal part)")
    if settings.get("kind") == "axis" and len(settings.get("entries", ())) >= 2:
        return tuple(
            f"{e}: offset from {v:.3g}"
            for e, v in zip(settings["entries"][:2], settings["origin_values"][:2])
        )
    ratio = settings.get("explained_variance_ratio") if settings.get("kind") == "pca" else None
    if ratio is not None and len(ratio) >= 2:
        return tuple(
            f"PC{k + 1} ({100 * r:.1f}% of the path's variance)" for k, r in enumerate(ratio[:2])
        )
    return ("direction 1 (coefficient)", "direction 2 (coefficient)")


def _levels(lo: float, hi: float, *, log: bool) -> tuple[np.ndarray, Any]:
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


def _draw_background(fig: Figure, ax: Axes, bg: _Background) -> None:
    """Filled contours, thin contour lines, colour bar, marks, box limits and axis labels."""
    from matplotlib import ticker

    levels, norm = _levels(float(bg.z.min()), float(bg.z.max()), log=bg.log)
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


def _legend(fig: Figure, handles: list, tracks: list[Track], *, ends: bool = True) -> None:
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


def _end_style(t: Track) -> dict[str, Any]:
    """End marker: a cross for a diverged run, a square otherwise."""
    return {"marker": "X", "ms": 9} if t.status == "diverged" else {"marker": "s", "ms": 6}


def _halo() -> list:
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=3.0, foreground="white", alpha=0.6)]


def _base(bg: _Background, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    _draw_background(fig, ax, bg)
    return fig, ax


def _check_size(figsize: Any, dpi: Any = 100) -> tuple[float, float]:
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


def _save(fig: Figure, path: Path, dpi: float) -> Path:
    from matplotlib import rc_context

    _check_size((1, 1), dpi)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):  # text stays text
        fig.savefig(path, dpi=dpi)
    return path
