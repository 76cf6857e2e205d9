"""The static figure of a watched training run (`MonitorRecord`): sharpness against the edge of
stability, the training and validation losses, and the gradient norm, per step.

`figure_monitor` draws into a new figure or the caller's Axes (`ax=`: one Axes for the first
panel alone, or three); `plot_monitor` saves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lossatlas.errors import LossatlasError
from lossatlas.plot._common import panel_axes, save
from lossatlas.watch.monitor import Monitor
from lossatlas.watch.record import MonitorRecord, positive

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PANELS = ("sharpness", "loss", "gradient norm")


def _record(record: MonitorRecord | Monitor) -> MonitorRecord:
    h = record.history if isinstance(record, Monitor) else record
    if not isinstance(h, MonitorRecord):
        raise LossatlasError(f"expected a MonitorRecord or Monitor, got {type(h).__name__}")
    if len(h) == 0:
        raise LossatlasError("nothing recorded yet: call step() in the training loop")
    return h


def figure_monitor(
    record: MonitorRecord | Monitor,
    *,
    ax: Any = None,
    figsize: tuple[float, float] = (12.0, 3.8),
) -> Figure:
    """Three panels per recorded step: `lambda_max` with its stability threshold
    `(2 + 2 momentum) / lr` dashed (Cohen et al. 2021: gradient descent drives the first up to
    the second); the training loss, and the validation loss with the gap between them shaded
    when recorded; the gradient norm (log scale).

    Args:
        record: a `MonitorRecord` (e.g. `lossatlas.load("monitor.h5")`) or a `Monitor`.
        ax: one Axes (the sharpness panel alone) or three; default a new figure.
        figsize: inches of the new figure (ignored with `ax`).

    Returns:
        The figure: new, or the one holding `ax`.
    """
    h = _record(record)
    fig, axes = panel_axes(ax, PANELS, figsize, "figure_monitor")
    sharp = axes[0]
    sharp.plot(h.step, h.lambda_max, marker="o", ms=3, label="lambda_max")
    if np.isfinite(h.threshold).any():
        label = "2 / lr" if not np.nan_to_num(h.momentum).any() else "(2 + 2 momentum) / lr"
        sharp.plot(h.step, h.threshold, ls="--", color="k", drawstyle="steps-post", label=label)
    if positive(h.lambda_max, h.threshold):  # lambda_max far below its threshold stays visible
        sharp.set_yscale("log")
    sharp.set_ylabel("largest Hessian eigenvalue")
    sharp.set_title("sharpness and the edge of stability", fontsize=10)
    if len(axes) > 1:
        loss = axes[1]
        loss.plot(h.step, h.loss, marker="o", ms=3, label="training loss")
        if np.isfinite(h.val_loss).any():
            loss.plot(h.step, h.val_loss, marker="s", ms=3, label="validation loss")
            loss.fill_between(h.step, h.loss, h.val_loss, alpha=0.15, label="gap")
        loss.set_ylabel("loss")
        loss.set_title("loss on the monitor's data", fontsize=10)
        grad = axes[2]
        grad.semilogy(h.step, h.grad_norm, marker="o", ms=3, color="tab:green")
        grad.set_ylabel("||gradient||")
        grad.set_title("gradient norm", fontsize=10)
    for a in axes:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    return fig


def plot_monitor(
    record: MonitorRecord | Monitor,
    path: str | Path,
    *,
    figsize: tuple[float, float] = (12.0, 3.8),
    dpi: float = 200,
) -> Path:
    """Write `figure_monitor(record)` as PNG, SVG or PDF (by the suffix); returns the path."""
    return save(figure_monitor(record, figsize=figsize), path, dpi=dpi)
