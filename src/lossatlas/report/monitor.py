"""The report section of a watched training run (`MonitorRecord`): sharpness against the edge of
stability, the losses and their gap, the gradient norm, and the rows themselves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from lossatlas.report.figures import LEGEND, clean
from lossatlas.report.parts import Parts
from lossatlas.watch.record import positive

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from lossatlas.watch.record import MonitorRecord


def _lines(x: np.ndarray, series: dict[str, np.ndarray], title: str, y: str, log: bool = False):
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, values in series.items():
        dash = "dash" if name.startswith(("2 / lr", "(2 + 2")) else None
        fig.add_trace(
            go.Scatter(
                x=clean(x), y=clean(values), name=name, mode="lines+markers",
                marker={"size": 4}, line={"dash": dash},
            )
        )  # fmt: skip
    axis = {"title": {"text": y}, **({"type": "log"} if log else {})}
    fig.update_layout(title=title, xaxis_title="step", yaxis=axis, legend=LEGEND)
    return fig


def figures(record: MonitorRecord) -> list[tuple[go.Figure, str]]:
    """Sharpness and its threshold, the losses, and the gradient norm, per recorded step."""
    threshold = "2 / lr" if not np.nan_to_num(record.momentum).any() else "(2 + 2 momentum) / lr"
    sharp = {"lambda_max": record.lambda_max}
    if np.isfinite(record.threshold).any():
        sharp[threshold] = record.threshold
    if np.isfinite(record.trace).any():
        sharp["trace / 100"] = record.trace / 100
    losses = {"training loss": record.loss}
    if np.isfinite(record.val_loss).any():
        losses["validation loss"] = record.val_loss
    return [
        (
            _lines(
                record.step,
                sharp,
                "Sharpness and the edge of stability",
                "eigenvalue",
                positive(*sharp.values()),
            ),
            "The largest Hessian eigenvalue at the live weights (Lanczos, warm-started from the "
            "previous record) and the largest one stable at the optimizer's rate, (2 + 2 "
            "momentum) / lr (Cohen et al. 2021: full-batch gradient descent drives lambda_max "
            "up to it and hovers there).",
        ),
        (
            _lines(record.step, losses, "Loss", "loss"),
            "The loss on the monitor's training data, and on the validation data when given: "
            "their difference is the generalisation gap.",
        ),
        (
            _lines(record.step, {"gradient norm": record.grad_norm}, "Gradient", "norm", True),
            "The norm of the loss's gradient on the monitor's data.",
        ),
    ]


def monitor(record: MonitorRecord) -> Parts:
    out = Parts("Training, watched")
    head = record.headline()
    out.cards = {
        "records": head["records"],
        "last step": head["last_step"],
        "lambda_max (last)": head["lambda_max_last"],
        "lambda_max / threshold (last)": head["ratio_last"],
        "lambda_max (peak)": head["lambda_max_peak"],
        "gap (last)": head["gap_last"],
        "HVPs": head["hvps"],
    }
    if len(record):
        out.figures += figures(record)
    rows: list[dict[str, Any]] = []
    for i in range(len(record)):
        row = {"step": int(record.step[i])}
        for name in ("loss", "grad_norm", "lambda_max", "threshold", "trace", "val_loss", "gap"):
            value = float(getattr(record, name)[i])
            if np.isfinite(value):
                row[name] = value
        row["hvps"] = int(record.hvps[i])
        row["seconds"] = float(record.seconds[i])
        rows.append(row)
    out.tables.append(rows)
    out.settings = {"settings": record.settings, "provenance": {"file": record.path}}
    return out
