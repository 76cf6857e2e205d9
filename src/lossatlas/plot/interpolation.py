"""Static figures of interpolations and barrier matrices (PNG, SVG or PDF, matplotlib).

As elsewhere in lossatlas, every `figure_*` returns the `matplotlib.figure.Figure`, drawn into
the caller's Axes when given `ax=` (object API only, never pyplot: the user's backend is left
alone), and its `plot_*` twin is `save(figure_*(...), path, dpi=dpi)`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lossatlas.errors import LossatlasError
from lossatlas.minima.interpolation import BarrierMatrix, Interpolation
from lossatlas.plot._common import colors, figure_axes, panel_axes, save

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _interpolations(results: Any) -> list[tuple[str, Interpolation]]:
    if isinstance(results, Interpolation):
        return [(results.label, results)]
    items = list(results.items()) if isinstance(results, Mapping) else None
    if items is None and isinstance(results, Sequence) and not isinstance(results, str):
        items = [(r.label if isinstance(r, Interpolation) else "", r) for r in results]
    if not items or not all(isinstance(r, Interpolation) for _, r in items):
        raise LossatlasError(
            "results must be an Interpolation, or a non-empty list or dict of them; "
            f"got {type(results).__name__}"
        )
    labels = [str(label) for label, _ in items]
    if len(set(labels)) < len(labels):  # e.g. several "a → b" from default names
        labels = [f"{label} ({i})" for i, label in enumerate(labels, 1)]
    return list(zip(labels, (r for _, r in items)))


def _curve(ax: Axes, r: Interpolation, y: np.ndarray, barrier: float | None, color: Any, label):
    """One curve, its chord between the ends (dotted) and its barrier (a vertical bar)."""
    t = np.asarray(r.t, float)
    y = np.where(np.isfinite(y), y, np.nan)
    line = ax.plot(t, y, color=color, lw=1.8, marker="o", ms=2.5, label=label)[0]
    y0, y1 = float(y[t == 0][0]), float(y[t == 1][0])
    chord = np.linspace(0, 1, 65)  # sampled, so that it is the chord on a log axis too
    ax.plot(chord, (1 - chord) * y0 + chord * y1, color=color, ls=":", lw=1)
    ax.plot([0, 1], [y0, y1], ls="", marker="s", ms=6, mfc=color, mec="k", zorder=5)
    if barrier is not None and np.isfinite(barrier) and barrier > 0:
        inside = (t >= 0) & (t <= 1)
        ts, ys = t[inside], y[inside]
        k = int(np.nanargmax(ys - ((1 - ts) * y0 + ts * y1)))
        base = (1 - ts[k]) * y0 + ts[k] * y1
        ax.annotate(
            "", (ts[k], ys[k]), (ts[k], base), arrowprops={"arrowstyle": "<->", "color": color}
        )
        ax.annotate(
            f"{barrier:.3g}", (ts[k], (ys[k] + base) / 2), xytext=(4, 0),
            textcoords="offset points", color=color, fontsize=8, va="center",
        )  # fmt: skip
    return line


def figure_interpolation(
    results: Any,
    *,
    ax: Axes | Sequence[Axes] | None = None,
    log: bool = False,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """The loss (top) and error (bottom, if any) along interpolations; see `plot_interpolation`.

    Args:
        results, log: as for `plot_interpolation`.
        ax: where to draw. Default: a new figure, the loss panel over the error panel (when
            an interpolation has errors), a note on the markers on top and the legend under
            both. One matplotlib Axes: the loss panel alone (errors left out). Two Axes
            `(loss_ax, error_ax)`: both panels, for interpolations with errors (else a
            one-line error). With `ax` the note is the loss axes' title and the legend sits in
            the loss axes.
        figsize: inches of the new figure (ignored with `ax`).

    Returns:
        The figure: new, or the one holding `ax`.
    """
    items = _interpolations(results)
    loss = np.concatenate([np.asarray(r.loss, float) for _, r in items])
    if log and np.any(loss[np.isfinite(loss)] <= 0):
        raise LossatlasError("log=True needs positive losses; this path has losses <= 0")
    own = ax is None
    names = ("loss", "error") if any(r.error is not None for _, r in items) else ("loss",)
    size = figsize or (6.8, 3.4 + 2.6 * len(names))
    fig, panels = panel_axes(ax, names, size, "figure_interpolation", column=True, sharex=True)
    panels_n = len(panels)
    lines = []
    for (label, r), color in zip(items, colors(len(items))):
        text = f"{label} (loss barrier {r.loss_barrier:.3g})" if label else None
        lines.append(_curve(panels[0], r, r.loss, r.loss_barrier, color, text))
        if r.error is not None and panels_n == 2:
            _curve(panels[1], r, r.error, r.error_barrier, color, None)
    panels[0].set_yscale("log" if log else "linear")
    if log:
        from matplotlib import ticker

        panels[0].yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        panels[0].yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
        panels[0].yaxis.set_minor_formatter(ticker.NullFormatter())
    panels[0].set_ylabel("loss" + (" (log scale)" if log else ""))
    if panels_n == 2:
        hows = {r.settings.get("error_metric") for _, r in items if r.error is not None}
        panels[1].set_ylabel(" / ".join(sorted(str(h) for h in hows)))
    for ax in panels:
        for end in (0, 1):
            ax.axvline(end, color="0.4", ls=":", lw=1)
        ax.grid(alpha=0.3)
    panels[-1].set_xlabel("t: θ(t) = (1 − t) θ_a + t θ_b")
    note = "linear interpolation; squares: the models, dotted: the chord, arrows: the barrier"
    labelled = any(line.get_label() and not line.get_label().startswith("_") for line in lines)
    if not own:
        panels[0].set_title(textwrap.fill(note, 60), fontsize=9)
        if labelled:
            panels[0].legend(handles=lines, loc="best", fontsize=7, framealpha=0.8)
        return fig
    fig.suptitle(note, fontsize=9)
    if labelled:
        fig.legend(handles=lines, loc="outside lower center", ncols=1, fontsize=8, frameon=False)
    return fig


def plot_interpolation(
    results: Any,
    path: str | Path,
    *,
    log: bool = False,
    figsize: tuple[float, float] | None = None,
    dpi: int = 200,
) -> Path:
    """Save the loss along one or several interpolations (PNG, SVG or PDF by suffix).

    Top: the loss against t, the dotted chord between the ends, the models (squares at t = 0
    and t = 1, also dotted vertical lines) and the barrier as an arrow from the chord to the
    highest point above it. Bottom, when the interpolations have one: the error metric alike.

    Args:
        results: an `Interpolation`, or a list (labelled "a → b") or dict (labelled by key).
        path: the file to write.
        log: a logarithmic loss axis.
        figsize: inches; default 6.8 wide, 6 high with errors, 3.4 without.
        dpi: resolution of PNG output.

    Returns:
        The path written.
    """
    return save(figure_interpolation(results, log=log, figsize=figsize), path, dpi=dpi)


def figure_barriers(
    matrix: BarrierMatrix,
    *,
    ax: Axes | None = None,
    which: str = "loss",
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """An annotated heat map of pairwise barriers; see `plot_barriers`.

    Args:
        matrix, which: as for `plot_barriers`.
        ax: matplotlib Axes to draw into, the colour bar beside it (taken from its space);
            default a new figure.
        figsize: inches of the new figure (ignored with `ax`); default grows with the models.

    Returns:
        The figure: new, or the one holding `ax`.
    """
    if not isinstance(matrix, BarrierMatrix):
        raise LossatlasError(f"expected a BarrierMatrix, got {type(matrix).__name__}")
    if which not in ("loss", "error"):
        raise LossatlasError(f"which must be 'loss' or 'error', got {which!r}")
    values = matrix.loss_barrier if which == "loss" else matrix.error_barrier
    if values is None:
        raise LossatlasError("this barrier matrix has no error barriers (no error metric)")
    values = np.asarray(values, float)
    n = len(matrix.names)
    side = 2.2 + 0.55 * n
    fig, ax = figure_axes(ax, figsize or (side + 1.4, side), "figure_barriers")
    shown = np.ma.masked_invalid(values)
    image = ax.imshow(shown, cmap="magma_r", vmin=0)
    ax.figure.colorbar(image, ax=ax, label=f"{which} barrier")
    ax.set_xticks(range(n), matrix.names, rotation=45, ha="right")
    ax.set_yticks(range(n), matrix.names)
    if n <= 20:
        high = float(shown.max()) if shown.count() else 0.0
        for i in range(n):
            for j in range(n):
                dark = high > 0 and np.isfinite(values[i, j]) and values[i, j] > 0.6 * high
                ax.text(
                    j, i, f"{values[i, j]:.2g}", ha="center", va="center", fontsize=7,
                    color="white" if dark else "black",
                )  # fmt: skip
    how = matrix.settings.get("error_metric") if which == "error" else None
    ax.set_title(f"{which} barrier" + (f" ({how})" if how else "") + " between models", fontsize=10)
    return fig


def plot_barriers(
    matrix: BarrierMatrix,
    path: str | Path,
    *,
    which: str = "loss",
    figsize: tuple[float, float] | None = None,
    dpi: int = 200,
) -> Path:
    """Save a heat map of a `BarrierMatrix` (PNG, SVG or PDF by suffix), values in the cells.

    Args:
        matrix: from `barrier_matrix`.
        path: the file to write.
        which: `"loss"` or `"error"`.
        figsize: inches; default grows with the number of models.
        dpi: resolution of PNG output.

    Returns:
        The path written.
    """
    return save(figure_barriers(matrix, which=which, figsize=figsize), path, dpi=dpi)
