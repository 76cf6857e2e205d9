"""The static figure of an edge-of-stability record: `lambda_max` per step against `2 / lr`.

`figure_edge` draws into a new figure or the caller's Axes (`ax=`); `plot_edge` saves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lossatlas.curvature.edge import EdgeHistory, EdgeOfStability
from lossatlas.errors import LossatlasError
from lossatlas.plot._common import figure_axes, save

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def figure_edge(
    record: EdgeHistory | EdgeOfStability,
    *,
    ax: Axes | None = None,
    figsize: tuple[float, float] = (7.0, 4.5),
) -> Figure:
    """`lambda_max` per step with the stability threshold `(2 + 2 beta) / lr` as a dashed line.

    Args:
        record: an `EdgeOfStability` tracker (its history so far) or an `EdgeHistory`.
        figsize: inches of the new figure (ignored with `ax`).
        ax: matplotlib Axes to draw into; default a new figure.

    Returns:
        The figure: new, or the one holding `ax`.
    """
    h = record.history if isinstance(record, EdgeOfStability) else record
    if not isinstance(h, EdgeHistory):
        raise LossatlasError(f"expected an EdgeHistory or EdgeOfStability, got {type(h).__name__}")
    if len(h.steps) == 0:
        raise LossatlasError("nothing recorded yet: call record() in the training loop")
    fig, ax = figure_axes(ax, figsize, "figure_edge")
    ax.plot(h.steps, h.lambda_max, marker="o", ms=3, label="lambda_max (Lanczos)")
    label = "2 / lr" if not h.momentum.any() else "(2 + 2 momentum) / lr"
    ax.plot(h.steps, h.threshold, ls="--", color="k", drawstyle="steps-post", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("largest Hessian eigenvalue")
    ax.set_title("sharpness during training: the edge of stability", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_edge(
    record: EdgeHistory | EdgeOfStability,
    path: str | Path,
    *,
    figsize: tuple[float, float] = (7.0, 4.5),
    dpi: float = 200,
) -> Path:
    """Write `figure_edge(record)` as PNG, SVG or PDF (by the suffix) and return the path.

    Args:
        record: an `EdgeOfStability` tracker (its history so far) or an `EdgeHistory`.
        path: the file; its suffix picks the format.
        figsize: inches.
        dpi: resolution of PNG output.

    Returns:
        The path written.
    """
    return save(figure_edge(record, figsize=figsize), path, dpi=dpi)
