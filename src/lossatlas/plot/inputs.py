"""A static figure of an input-space surface: the loss over the plane and the model's prediction."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lossatlas.errors import LossatlasError
from lossatlas.plot._common import figure_path

if TYPE_CHECKING:
    from lossatlas.landscape.inputs import InputSurface

MAX_POINTS = 5000  # data points drawn at most (an even subsample beyond that)


def plot_input_surface(
    result: InputSurface, path: str | Path, *, log: bool = False, dpi: int = 200
) -> Path:
    """Save the loss over the input plane as PNG, SVG or PDF (by the suffix); returns the path.

    A filled contour of the loss with a colour bar, the data points over it (small and
    semi-transparent; with `plane="features"` the data in those two features, else the anchors
    at the origin) and, when the result has one, the prediction in a second panel (the output of
    a scalar-output model, or the predicted class of a classifier).

    Args:
        result: an `InputSurface` from `input_surface`.
        path: the file to write; its suffix picks the format.
        log: colour the loss by its base-10 logarithm (non-positive values are left blank).
        dpi: resolution of PNG output.
    """
    from matplotlib import colors
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    path = figure_path(path)
    loss = np.where(result.loss > 0, result.loss, np.nan) if log else result.loss
    loss = np.ma.masked_invalid(np.log10(loss) if log else loss)
    if loss.count() == 0:
        raise LossatlasError("the input surface has no finite (positive, with log) loss to plot")
    panels = 1 if result.prediction is None else 2
    fig = Figure(figsize=(5.6 * panels, 4.8), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    x, y = result.coords
    filled = axes[0].contourf(x, y, loss.T, levels=20, cmap="viridis")
    fig.colorbar(filled, ax=axes[0], label="log10 loss" if log else "loss")
    axes[0].set_title("loss", fontsize=10)
    if result.prediction is not None:
        pred = np.ma.masked_invalid(result.prediction)
        if result.settings.get("prediction") == "class":
            classes = np.unique(pred.compressed()).astype(int)
            bounds = np.append(classes - 0.5, classes[-1] + 0.5)
            cmap = colors.ListedColormap([f"C{c % 10}" for c in classes])
            shown = axes[1].pcolormesh(
                x, y, pred.T, cmap=cmap, norm=colors.BoundaryNorm(bounds, cmap.N), shading="nearest"
            )
            fig.colorbar(shown, ax=axes[1], ticks=classes, label="predicted class")
        else:
            shown = axes[1].contourf(x, y, pred.T, levels=20, cmap="coolwarm")
            fig.colorbar(shown, ax=axes[1], label="model output")
        axes[1].set_title("prediction", fontsize=10)
    for ax in axes:
        _draw_points(ax, result)
        ax.set(xlim=(x[0], x[-1]), ylim=(y[0], y[-1]), xlabel=result.axes[0])
        ax.set_ylabel(result.axes[1])
    fig.suptitle(_title(result), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _draw_points(ax, result: InputSurface) -> None:
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
