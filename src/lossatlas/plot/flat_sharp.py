"""The static figure of a flat-versus-sharp study: both minima's 1D slices on one plot.

`figure_flat_vs_sharp` draws into a new figure or the caller's Axes (`ax=`);
`plot_flat_vs_sharp` saves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lossatlas.errors import LossatlasError
from lossatlas.minima.flat_sharp import FlatSharpStudy
from lossatlas.plot._common import figure_axes, save
from lossatlas.scene.background import CENTRE

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def study_table(study: FlatSharpStudy) -> str:
    """A small monospaced table of the headline numbers."""
    c = study.comparison
    metric = next(iter(c.metric_gaps), None)
    head = ["", "λ_max", "ε-sharp", "train", "val", "gap"] + ([f"{metric} gap"] if metric else [])
    rows = [head]
    for i, name in enumerate(("small", "large")):
        batch = study.settings[f"{name}_batch"]
        values = [c.lambda_max[i], c.epsilon_sharpness[i], c.train_loss[i], c.val_loss[i], c.gap[i]]
        values += [c.metric_gaps[metric][i]] if metric else []
        rows.append([f"{name} ({batch})", *(f"{v:.3g}" for v in values)])
    widths = [max(len(r[j]) for r in rows) for j in range(len(head))]
    return "\n".join("  ".join(s.rjust(w) for s, w in zip(r, widths)) for r in rows)


def figure_flat_vs_sharp(
    study: FlatSharpStudy,
    *,
    ax: Axes | None = None,
    log: bool = False,
    figsize: tuple[float, float] = (7.5, 5.4),
) -> Figure:
    """Both minima's slices on one plot; see `plot_flat_vs_sharp`.

    Args:
        study, log: as for `plot_flat_vs_sharp`.
        ax: matplotlib Axes to draw into, with the legend inside it; default a new figure
            with the legend under the axes.
        figsize: inches of the new figure (ignored with `ax`).

    Returns:
        The figure: new, or the one holding `ax`.
    """
    if not isinstance(study, FlatSharpStudy):
        raise LossatlasError(f"expected a FlatSharpStudy, got {type(study).__name__}")
    own = ax is None
    fig, ax = figure_axes(ax, figsize, "figure_flat_vs_sharp")
    lines = (
        (study.small_train, "C0", "-", "small batch, train"),
        (study.small_val, "C0", "--", "small batch, val"),
        (study.large_train, "C3", "-", "large batch, train"),
        (study.large_val, "C3", "--", "large batch, val"),
    )
    for line, color, style, label in lines:
        c = np.asarray(line.coords[0], float)
        loss = np.where(np.isfinite(line.loss), line.loss, np.nan)
        loss = np.where(loss > 0, loss, np.nan) if log else loss
        ax.plot(c, loss, color=color, ls=style, lw=1.8, label=label)
    ax.axvline(0, color="0.4", ls=":", lw=1)
    c = study.comparison
    ax.plot([0, 0], c.train_loss, ls="", **{**CENTRE, "ms": 7}, label="minima (c = 0)")
    ax.set_yscale("log" if log else "linear")
    d = study.settings["direction"]
    ax.set_xlabel(f"c: coefficient along a filter-normalised random direction (seed {d['seed']})")
    ax.set_ylabel("loss" + (" (log scale)" if log else ""))
    ax.grid(alpha=0.3)
    s = study.settings
    ax.set_title(
        f"flat vs sharp: batch {s['small_batch']} vs {s['large_batch']} "
        f"({s['optimizer']}, lr {s['lr']:g}, {s['steps']} steps, seed {s['seed']})",
        fontsize=10,
    )
    ax.text(
        0.5,
        0.97,
        study_table(study),
        transform=ax.transAxes,
        ha="center",
        va="top",
        family="monospace",
        fontsize=7.5,
        bbox={"fc": "white", "ec": "0.6", "alpha": 0.85, "boxstyle": "round,pad=0.4"},
    )
    if own:
        fig.legend(loc="outside lower center", ncols=5, fontsize=8, frameon=False)
    else:  # where it covers least: the curves, and the table of numbers at the top
        ax.legend(loc="best", fontsize=7, framealpha=0.8)
    return fig


def plot_flat_vs_sharp(
    study: FlatSharpStudy,
    path: str | Path,
    *,
    log: bool = False,
    figsize: tuple[float, float] = (7.5, 5.4),
    dpi: float = 200,
) -> Path:
    """Both minima's 1D slices on one plot: small batch blue, large batch red; training data
    solid, validation dashed; the minima at `c = 0` crossed; a box with `lambda_max`,
    epsilon-sharpness, the losses and the generalisation gaps.

    Args:
        study: from `flat_vs_sharp`.
        path: PNG, SVG or PDF by the suffix.
        log: a logarithmic loss axis.
        figsize: inches; dpi: resolution of PNG output.

    Returns:
        The path written.
    """
    return save(figure_flat_vs_sharp(study, log=log, figsize=figsize), path, dpi=dpi)
