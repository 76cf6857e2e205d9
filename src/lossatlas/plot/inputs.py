"""A static figure of an input-space surface: the loss over the plane and the model's prediction.

`figure_input_surface` draws it, into a new figure or the caller's Axes (`ax=`);
`plot_input_surface` saves it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lossatlas.errors import LossatlasError
from lossatlas.landscape.inputs import InputSurface
from lossatlas.plot._common import panel_axes, save

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_POINTS = 5000  # data points drawn at most (an even subsample beyond that)


def figure_input_surface(
    result: InputSurface,
    *,
    ax: Axes | Sequence[Axes] | None = None,
    log: bool = False,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """The loss over the input plane and, when the result has one, the prediction beside it.

    A filled contour of the loss with a colour bar, the data points over it (small and
    semi-transparent; with `plane="features"` the data in those two features, else the anchors
    at the origin) and, when the result has one, the prediction in a second panel (the output of
    a scalar-output model, or the predicted class of a classifier).

    Args:
        result: an `InputSurface` from `input_surface`.
        ax: where to draw. Default: a new figure, the loss panel and (when the result has a
            prediction) the prediction panel beside it, the plane described on top. One
            matplotlib Axes: the loss panel alone (the prediction left out). Two Axes
            `(loss_ax, prediction_ax)`: both panels, for a result with a prediction (else a
            one-line error). With `ax` the colour bars take their space from those axes and
            the description is the loss axes' title.
        log: colour the loss by its base-10 logarithm (non-positive values are left blank).
        figsize: inches of the new figure (ignored with `ax`); default 5.6 wide per panel,
            4.8 high.

    Returns:
        The figure: new, or the one holding `ax`.
    """
    from matplotlib import colors

    if not isinstance(result, InputSurface):
        raise LossatlasError(f"expected an InputSurface, got {type(result).__name__}")
    loss = np.where(result.loss > 0, result.loss, np.nan) if log else result.loss
    loss = np.ma.masked_invalid(np.log10(loss) if log else loss)
    if loss.count() == 0:
        raise LossatlasError("the input surface has no finite (positive, with log) loss to plot")
    own = ax is None
    names = ("loss",) if result.prediction is None else ("loss", "prediction")
    size = figsize or (5.6 * len(names), 4.8)
    fig, axes = panel_axes(ax, names, size, "figure_input_surface")
    x, y = result.coords
    filled = axes[0].contourf(x, y, loss.T, levels=20, cmap="viridis")
    axes[0].figure.colorbar(filled, ax=axes[0], label="log10 loss" if log else "loss")
    if own:
        axes[0].set_title("loss", fontsize=10)
        fig.suptitle(_title(result), fontsize=9)
    else:
        axes[0].set_title(textwrap.fill(_title(result), 60), fontsize=9)
    if result.prediction is not None and len(axes) == 2:
        pred = np.ma.masked_invalid(result.prediction)
        if result.settings.get("prediction") == "class":
            classes = np.unique(pred.compressed()).astype(int)
            bounds = np.append(classes - 0.5, classes[-1] + 0.5)
            cmap = colors.ListedColormap([f"C{c % 10}" for c in classes])
            shown = axes[1].pcolormesh(
                x, y, pred.T, cmap=cmap, norm=colors.BoundaryNorm(bounds, cmap.N), shading="nearest"
            )
            axes[1].figure.colorbar(shown, ax=axes[1], ticks=classes, label="predicted class")
        else:
            shown = axes[1].contourf(x, y, pred.T, levels=20, cmap="coolwarm")
            axes[1].figure.colorbar(shown, ax=axes[1], label="model output")
        axes[1].set_title("prediction", fontsize=10)
    for a in axes:
        _draw_points(a, result)
        a.set(xlim=(x[0], x[-1]), ylim=(y[0], y[-1]), xlabel=result.axes[0])
        a.set_ylabel(result.axes[1])
    return fig


def plot_input_surface(
    result: InputSurface,
    path: str | Path,
    *,
    log: bool = False,
    figsize: tuple[float, float] | None = None,
    dpi: float = 200,
) -> Path:
    """Save `figure_input_surface(result)` as PNG, SVG or PDF (by the suffix).

    Args:
        result: an `InputSurface` from `input_surface`.
        path: the file to write; its suffix picks the format.
        log: colour the loss by its base-10 logarithm (non-positive values are left blank).
        figsize: inches; default 5.6 wide per panel, 4.8 high.
        dpi: resolution of PNG output.

    Returns:
        The path written.
    """
    return save(figure_input_surface(result, log=log, figsize=figsize), path, dpi=dpi)


def _draw_points(ax: Axes, result: InputSurface) -> None:
    if result.points is None or len(result.points) == 0:
        return
    if result.settings.get("plane") != "features":  # the anchors, all at the origin
        ax.plot(0, 0, marker="X", ms=9, mfc="white", mec="k", ls="", label="anchor")
        return
    points = result.points
    if len(points) > MAX_POINTS:  # evenly spaced in data order
        points = points[np.linspace(0, len(points) - 1, MAX_POINTS).astype(int)]
    ax.scatter(points[:, 0], points[:, 1], s=4, c="white", edgecolors="k", lw=0.3, alpha=0.5)
    anchors = result.settings.get("anchors") or []
    if 0 < len(anchors) <= 20:  # the anchors themselves, among the data
        at = result.points[anchors]
        ax.plot(at[:, 0], at[:, 1], marker="X", ms=8, mfc="white", mec="k", ls="", label="anchor")


def _title(result: InputSurface) -> str:
    s = result.settings
    anchors = s.get("anchors")
    where = "zero input" if anchors is None else f"{len(anchors)} anchor(s)"
    return f"loss over the input plane ({s.get('plane')}, {where}, target: {s.get('target')})"
