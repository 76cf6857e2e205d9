"""Curves: loss histories of runs, and the loss (with its slope) along a 1D line.

As in `paths`, every `figure_*` returns the figure (drawn into the caller's Axes when given
`ax=`) and its `plot_*` twin is `save(figure_*(...), path, dpi=dpi)`.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lossatlas.errors import LossatlasError
from lossatlas.landscape.record import Surface
from lossatlas.plot._common import colors, figure_axes, legend, panel_axes, save
from lossatlas.scene.background import CENTRE, MINIMUM
from lossatlas.scene.labels import describe
from lossatlas.scene.tracks import as_tracks, run_items

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def figure_histories(
    runs: Any,
    *,
    ax: Axes | None = None,
    log: bool = True,
    x: str = "step",
    labels: Any = None,
    title: str | None = None,
    figsize: tuple[float, float] = (7.5, 5.0),
) -> Figure:
    """Loss against step (or distance travelled) for every run; see `plot_histories`.

    Args:
        runs, log, x, labels, title: as for `plot_histories`.
        figsize: inches of the new figure (ignored with `ax`).
        ax: matplotlib Axes to draw into, with the legend inside it; default a new figure
            with the legend under the axes.

    Returns:
        The figure: new, or the one holding `ax`.
    """
    if x not in ("step", "distance"):
        raise LossatlasError(f"x must be 'step' or 'distance', got {x!r}")
    tracks = as_tracks(runs, labels=labels, dims=None)
    if any(t.loss is None for t in tracks):
        raise LossatlasError("plot_histories needs runs with losses (Trajectories, Runs, a Sweep)")
    own = ax is None
    fig, ax = figure_axes(ax, figsize, "figure_histories")
    values = np.concatenate([t.loss[np.isfinite(t.loss)] for t in tracks])
    log = log and values.size > 0 and values.min() > 0
    first = max((t.loss[0] for t in tracks if np.isfinite(t.loss[0])), default=math.nan)
    # A diverged run would squash every other curve: stop the axis a little above the starts.
    top = first * 10 if log else first + 0.25 * (first - values.min()) if values.size else math.nan
    top = top if values.size and values.max() > top else math.inf
    lines = []
    for t, color in zip(tracks, colors(len(tracks))):
        loss = np.where(np.isfinite(t.loss), t.loss, np.nan)
        if x == "step":
            at = np.arange(len(loss), dtype=float)
        elif t.positions is None:
            raise LossatlasError(f"{t.label}: x='distance' needs recorded positions")
        else:
            hops = np.linalg.norm(np.diff(t.positions, axis=0), axis=1)
            at = np.concatenate([[0.0], np.cumsum(np.nan_to_num(hops, nan=0.0, posinf=0.0))])
        lines.append(ax.plot(at, loss, color=color, lw=1.5, label=t.label)[0])
        ok = np.flatnonzero(np.isfinite(loss))
        if t.status == "diverged" and ok.size:
            y = min(loss[ok[-1]], top)  # on the top edge if it went beyond
            ax.plot(at[ok[-1]], y, ls="", marker="X", ms=9, mfc=color, mec="k", clip_on=False)
    ax.set_yscale("log" if log else "linear")
    if math.isfinite(top):
        ax.set_ylim(top=top)
    ax.set_ylabel(
        "loss" if log or values.size == 0 or values.min() > 0 else "loss (linear: values ≤ 0)"
    )
    ax.set_xlabel("step" if x == "step" else "distance travelled (cumulative, Euclidean)")
    ax.grid(True, which="major", alpha=0.3)
    objectives = {
        str(getattr(r, "trajectory", r).settings.get("objective")) for _, r in run_items(runs)
    }
    if title is None and len(objectives) == 1 and "None" not in objectives:
        title = f"loss along each run on {objectives.pop()}"
    if title:
        ax.set_title(title, fontsize=10)
    legend(ax, lines, tracks, ends=False, outside=own)
    return fig


def _longest(mask: np.ndarray) -> tuple[int, int] | None:
    """`(first, last)` index of the longest run of True in `mask`."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    if edges.size == 0:
        return None
    starts, stops = edges[::2], edges[1::2]
    k = int(np.argmax(stops - starts))
    return int(starts[k]), int(stops[k]) - 1


def _draw_slope(panels: Any, c: np.ndarray, slope: np.ndarray, loss: np.ndarray) -> None:
    """The slope, a finite-difference check, the zero line, its zeros and the signs shaded."""
    ax = panels[1]
    ax.plot(c, slope, color="C1", lw=1.8, marker="o", ms=2.5, label="slope dL/dc (autograd)")
    check = np.gradient(loss, c) if len(c) > 1 else np.full_like(c, np.nan)
    ax.plot(c, check, color="k", lw=0.9, ls=(0, (2, 2)), label="finite difference of L (check)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("slope dL/dc")
    s0, s1 = slope[:-1], slope[1:]
    k = np.flatnonzero(s0 * s1 < 0)  # a sign change between neighbours: interpolate the zero
    zeros = c[k] - s0[k] * (c[k + 1] - c[k]) / (s1[k] - s0[k])
    # Shade on the grid plus its zeros, so neighbouring regions meet at the zero, not mid-step.
    order = np.argsort(np.concatenate([c, zeros]), kind="stable")
    xs = np.concatenate([c, zeros])[order]
    ss = np.concatenate([slope, np.zeros_like(zeros)])[order]
    span = c[-1] - c[0]
    signs = (
        (ss < 0, "tab:green", "dL/dc < 0: loss decreases to the right", "L decreases →"),
        (ss > 0, "tab:red", "dL/dc > 0: loss decreases to the left", "← L decreases"),
    )
    for mask, color, label, text in signs:
        near = np.zeros_like(mask)
        near[1:] |= mask[:-1]
        near[:-1] |= mask[1:]
        mask = mask | (near & (ss == 0))  # a zero next to the region closes it
        shade = {"color": color, "alpha": 0.12, "lw": 0, "label": label}
        for a in panels:
            a.fill_between(xs, 0, 1, where=mask, transform=a.get_xaxis_transform(), **shade)
        region = _longest(mask)
        if region and xs[region[1]] > xs[region[0]]:  # say it in words where it is widest
            lo, hi = xs[region[0]], xs[region[1]]
            x, ha, dx = (lo + hi) / 2, "center", 0
            if hi - lo < 0.2 * span and x < c[0] + 0.2 * span:  # narrow, at an edge: keep the
                x, ha, dx = lo, "left", 4  # words inside the axes
            elif hi - lo < 0.2 * span and x > c[-1] - 0.2 * span:
                x, ha, dx = hi, "right", -4
            words = {"ha": ha, "va": "top", "fontsize": 9, "color": color, "fontweight": "bold"}
            words["bbox"] = {"fc": "white", "ec": "none", "alpha": 0.7, "pad": 1}  # over the curve
            at = {"xycoords": ax.get_xaxis_transform(), "textcoords": "offset points"}
            ax.annotate(text, (x, 0.97), xytext=(dx, 0), **at, **words)
    zeros = np.concatenate([zeros, c[slope == 0]])
    if zeros.size:
        label = "dL/dc = 0 (stationary point)"
        ax.plot(
            zeros, 0 * zeros, ls="", label=label, zorder=7, **{**CENTRE, "marker": "o", "ms": 7}
        )


def figure_line(
    surface: Surface,
    *,
    ax: Axes | Sequence[Axes] | None = None,
    log: bool = False,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """The loss along a 1D line and, with slopes, dL/dc beside it; see `plot_line`.

    Args:
        surface, log: as for `plot_line`.
        figsize: inches of the new figure (ignored with `ax`).
        ax: where to draw. Default: a new figure, the loss panel and (when the surface has
            slopes) the slope panel beside it, one legend under both and the surface's
            description on top. One matplotlib Axes: the loss panel alone, even when the surface
            has slopes (the slope, its zeros and the shading of its sign are left out). Two
            Axes `(loss_ax, slope_ax)`: both panels, for a surface with slopes (else a one-line
            error). With `ax`, each axes gets its own legend, the description is the loss
            axes' title and the caller's figure is otherwise left alone.

    Returns:
        The figure: new, or the one holding `ax`.
    """
    if not isinstance(surface, Surface) or surface.ndim != 1:
        what = (
            f"a {surface.ndim}D Surface" if isinstance(surface, Surface) else type(surface).__name__
        )
        raise LossatlasError(
            f"plot_line needs a 1D Surface, got {what}; plot 2D ones with plot_paths"
        )
    c = np.asarray(surface.coords[0], float)
    raw = np.where(np.isfinite(surface.loss), surface.loss, np.nan).astype(float)
    ok = np.isfinite(raw)
    notes = []  # what the figure leaves out, said in its legend
    if log and (raw[ok] <= 0).any():
        log = False
        notes.append("linear axis: some losses are not positive")
    if not ok.all():
        notes.append(f"{int((~ok).sum())} of {len(raw)} points have no finite loss (gaps)")
    loss = raw
    slope = None if surface.slopes is None else np.asarray(surface.slopes, float)[:, 0]
    if slope is not None:
        slope = np.where(np.isfinite(slope), slope, np.nan)
    size = figsize or ((11.0, 4.8) if slope is not None else (6.4, 4.8))
    own = ax is None
    names = ("loss",) if slope is None else ("loss", "slope")
    fig, panels = panel_axes(ax, names, size, "figure_line")
    d = surface.directions.settings
    xlabel = "c: coefficient along direction 1"
    if d.get("kind") == "axis" and len(d.get("entries", ())) == 1:
        entry, w0 = d["entries"][0], float(d["origin_values"][0])
        xlabel = f"c: offset of {entry} from its value {w0:.4g}"
        for a in panels:  # the weight itself along the top: L(w) and dL/dw of one weight
            top = a.secondary_xaxis("top", functions=(lambda v: v + w0, lambda w: w - w0))
            top.set_xlabel(f"w = {entry} = {w0:.4g} + c")
    ax = panels[0]
    ax.plot(c, loss, color="C0", lw=1.8, marker="o", ms=2.5, label="loss L")
    ax.set_yscale("log" if log and ok.any() else "linear")
    ax.set_ylabel("loss L" + (" (log scale)" if log else ""))
    for note in notes:
        ax.plot([], [], ls="", label=note)
    i = int(np.nanargmin(loss)) if ok.any() else None
    if i is not None:
        low = f"lowest loss on the grid: L = {loss[i]:.3g} at c = {c[i]:.3g}"
        ax.plot(c[i], loss[i], ls="", zorder=6, label=low, **{**MINIMUM, "mfc": "red"})
    else:
        ax.text(0.5, 0.5, "no finite loss on this line", ha="center", transform=ax.transAxes)
    centre = bool(c.min() <= 0 <= c.max())
    if centre and i is not None:
        ax.plot(0, np.interp(0, c[ok], loss[ok]), ls="", zorder=6, label="centre (c = 0)", **CENTRE)
    for a in panels:
        if i is not None:
            a.axvline(c[i], color="red", ls="--", lw=1)
        if centre:
            a.axvline(0, color="0.4", ls=":", lw=1)
        a.set_xlabel(xlabel)
        a.set_xlim(c.min(), c.max())
        a.grid(alpha=0.3)
    if slope is not None and len(panels) == 2:
        _draw_slope(panels, c, slope, raw)
        if i is not None:
            panels[1].plot(c[i], slope[i], ls="", zorder=6, **{**MINIMUM, "mfc": "red"})
    if not own:
        ax.set_title(textwrap.fill(describe(surface), 70), fontsize=9)
        for a in panels:
            a.legend(fontsize=7)
        return fig
    fig.suptitle(textwrap.fill(describe(surface), 110), fontsize=10)
    handles = {h.get_label(): h for a in panels for h in a.get_legend_handles_labels()[0]}
    ncols = 3 if len(handles) > 4 else len(handles)
    fig.legend(
        handles=list(handles.values()),
        loc="outside lower center",
        ncols=ncols,
        fontsize=8,
        frameon=False,
    )
    return fig


def plot_line(
    surface: Surface,
    path: str | Path,
    *,
    log: bool = False,
    figsize: tuple[float, float] | None = None,
    dpi: float = 200,
) -> Path:
    """The loss along a 1D surface and, when it has slopes, the slope dL/dc beside it.

    Left: the loss, its lowest grid point (star, dashed line) and the centre (cross, dotted).
    Right: the autograd slope with a finite-difference check, the zero line, where the slope
    crosses zero, and the regions where it is negative (the loss decreases to the right) or
    positive (to the left) shaded on both panels. For `axis_directions` along one weight the top
    axis shows the weight's value, so this is L(w) and dL/dw. Non-finite values are gaps.

    Args:
        surface: a 1D `Surface` (from `surface(..., slopes=True)` for the right panel).
        path: PNG, SVG or PDF by the suffix.
        log: a logarithmic loss axis (non-positive losses become gaps).
        figsize: inches; default (11, 4.8) with slopes, (6.4, 4.8) without.
        dpi: resolution of PNG output.

    Returns:
        The path written.
    """
    return save(figure_line(surface, log=log, figsize=figsize), path, dpi=dpi)


def plot_histories(
    runs: Any,
    path: str | Path,
    *,
    log: bool = True,
    x: str = "step",
    labels: Any = None,
    title: str | None = None,
    figsize: tuple[float, float] = (7.5, 5.0),
    dpi: float = 200,
) -> Path:
    """Loss against step for every run, one labelled line each; diverged runs end in a cross.

    When a diverged run climbs far above the rest, the loss axis stops at 10 times the highest
    starting loss (log) or a quarter of the range above it (linear), and the cross sits on the
    top edge, so the other runs stay readable.

    Args:
        runs: a Trajectory, Run, Sweep (one line per run), a list, or a dict label -> run.
        path: PNG, SVG or PDF by the suffix.
        log: a log loss axis when every finite loss is positive (else linear, and said so).
        x: "step", or "distance" (cumulative Euclidean distance travelled).
        labels: one legend label per run, replacing the automatic ones.
        title: default names the objective when all runs share one; "" for none.
        figsize: inches.
        dpi: resolution of PNG output.

    Returns:
        The path written.
    """
    fig = figure_histories(runs, log=log, x=x, labels=labels, title=title, figsize=figsize)
    return save(fig, path, dpi=dpi)
