"""The static figure of a curve between two minima: its loss beside the straight line's.

Matplotlib's object API only (`matplotlib.figure.Figure`, never pyplot). `figure_curve` draws
into a new figure or the caller's Axes (`ax=`); `plot_curve` saves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lossatlas.errors import LossatlasError
from lossatlas.minima.curves import CurveLosses
from lossatlas.plot._common import panel_axes, save

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _mark_barrier(ax: Axes, t: np.ndarray, loss: np.ndarray, color, label: str) -> None:
    """The chord between the ends (dotted) and the barrier: a bar from the chord to the peak."""
    chord = (1 - t) * loss[0] + t * loss[-1]
    excess = loss - chord
    if not np.isfinite(excess).any() or np.nanmax(excess) <= 0:
        return  # no rise above the chord: the title says the barrier is 0
    ax.plot(t, chord, color=color, lw=0.8, ls=":")
    i = int(np.nanargmax(excess))
    ax.annotate(
        "",
        xy=(t[i], loss[i]),
        xytext=(t[i], chord[i]),
        arrowprops={"arrowstyle": "<->", "color": color, "lw": 1.2, "shrinkA": 0, "shrinkB": 0},
    )
    ax.annotate(
        f"{label} barrier {excess[i]:.3g}",
        xy=(t[i], loss[i]),
        xytext=(6, 6),
        textcoords="offset points",
        fontsize=8,
        color=color,
        bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 1},
    )


def figure_curve(
    curve_losses: CurveLosses,
    *,
    ax: Axes | Sequence[Axes] | None = None,
    log: bool = False,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """The loss along the curve and the line (and metrics beside them); see `plot_curve`.

    Args:
        curve_losses, log: as for `plot_curve`.
        figsize: inches of the new figure (ignored with `ax`).
        ax: where to draw. Default: a new figure, the loss panel and (when there are metrics)
            the metrics panel beside it. One matplotlib Axes: the loss panel alone (metrics
            left out). Two Axes `(loss_ax, metrics_ax)`: both panels, for curve losses with
            metrics (else a one-line error).

    Returns:
        The figure: new, or the one holding `ax`.
    """
    if not isinstance(curve_losses, CurveLosses):
        raise LossatlasError(
            f"plot_curve needs the CurveLosses of curve_losses, got {type(curve_losses).__name__}"
        )
    cl = curve_losses
    t = np.asarray(cl.t, float)

    def shown(v):
        v = np.where(np.isfinite(v), np.asarray(v, float), np.nan)
        return np.where(v > 0, v, np.nan) if log else v

    loss, line = shown(cl.loss), shown(cl.line_loss)
    if not (np.isfinite(loss).any() or np.isfinite(line).any()):
        raise LossatlasError("the curve has no finite (positive, with log) loss to plot")
    size = figsize or ((11.0, 4.6) if cl.metrics else (6.6, 4.6))
    names = ("loss", "metrics") if cl.metrics else ("loss",)
    fig, panels = panel_axes(ax, names, size, "figure_curve")
    ax = panels[0]
    kind = f"{cl.settings.get('kind', 'curve')} curve"
    if cl.settings.get("kind") == "chain":
        kind = f"chain ({cl.settings.get('bends')} bends)"
    ax.plot(t, loss, color="C0", lw=1.8, marker="o", ms=2.5, label=kind)
    ax.plot(t, line, color="C3", lw=1.5, ls="--", label="straight line")
    ax.set_yscale("log" if log else "linear")
    ax.set_ylabel("loss" + (" (log scale)" if log else ""))
    _mark_barrier(ax, t, np.asarray(cl.loss, float), "C0", "curve")
    _mark_barrier(ax, t, np.asarray(cl.line_loss, float), "C3", "line")
    ax.set_title(f"barrier: curve {cl.barrier:.3g}, line {cl.line_barrier:.3g}", fontsize=10)
    metrics = cl.metrics if len(panels) == 2 else {}
    for j, (name, values) in enumerate(metrics.items()):  # colour: path; marker: metric
        style = {"marker": "os^vD"[j % 5] if len(metrics) > 1 else None, "ms": 3}
        panels[1].plot(t, values, color="C0", lw=1.8, label=f"{name}, {kind}", **style)
        if name in cl.line_metrics:
            line_values = cl.line_metrics[name]
            panels[1].plot(t, line_values, color="C3", ls="--", label=f"{name}, line", **style)
    if metrics:
        panels[1].set_ylabel(", ".join(metrics))
        panels[1].legend(fontsize=8)
    for a in panels:
        a.set_xlabel("t (0: model a, 1: model b)")
        a.set_xlim(0, 1)
        a.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_curve(
    curve_losses: CurveLosses,
    path: str | Path,
    *,
    log: bool = False,
    figsize: tuple[float, float] | None = None,
    dpi: float = 200,
) -> Path:
    """The loss along a fitted curve and along the straight line between the same two models.

    Both barriers are marked: the chord between the ends (dotted) and an arrow from it up to
    where each path rises furthest above it. Metrics (e.g. error), when the problem has them,
    are on a second panel, the line's dashed.

    Args:
        curve_losses: from `curve_losses`.
        path: PNG, SVG or PDF by the suffix.
        log: a logarithmic loss axis (non-positive losses become gaps).
        figsize: inches; default (11, 4.6) with metrics, (6.6, 4.6) without.
        dpi: resolution of PNG output.

    Returns:
        The path written.
    """
    return save(figure_curve(curve_losses, log=log, figsize=figsize), path, dpi=dpi)
