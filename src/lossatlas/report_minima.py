"""Report sections for many minima: landscapes side by side (train against validation)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lossatlas import report_figures as rf
from lossatlas.errors import LossatlasError
from lossatlas.report_sections import Parts
from lossatlas.result import Surface
from lossatlas.static import describe


def side_by_side(named: dict[str, Surface], log: bool) -> Parts:
    """Surfaces on the same grid (e.g. one model on train and validation data), compared.

    2D: one contour per surface on a shared colour scale, and the difference of the last and
    the first (validation minus train shows where the minimum fits the training data only).
    1D: every curve on one axes.
    """
    import plotly.graph_objects as go

    labels, surfaces = list(named), list(named.values())
    first = surfaces[0]
    if len(surfaces) < 2 or any(
        s.ndim != first.ndim
        or any(not np.array_equal(a, b) for a, b in zip(s.coords, first.coords))
        for s in surfaces
    ):
        raise LossatlasError("surfaces shown side by side must share one grid (same directions)")
    if first.ndim not in (1, 2):
        raise LossatlasError(f"can only compare 1D or 2D surfaces, these are {first.ndim}D")
    text = describe(first)
    out = Parts(" vs ".join(labels) + ": " + text)
    for label, s in named.items():
        finite = s.loss[np.isfinite(s.loss)]
        out.cards[f"lowest {label} loss"] = float(finite.min()) if finite.size else None
    if first.ndim == 1:
        fig = go.Figure()
        for i, (label, s) in enumerate(named.items()):
            for name, values in {"loss": s.loss, **s.metrics}.items():
                dash = None if name == "loss" else "dash"
                fig.add_trace(
                    go.Scatter(
                        x=s.coords[0],
                        y=rf.clean(values),
                        name=f"{label} {name}",
                        line={"color": rf.PALETTE[i % len(rf.PALETTE)], "dash": dash},
                    )
                )
        fig.update_layout(
            title="loss along the line",
            xaxis_title="c: coefficient",
            yaxis={"type": "log" if log else "linear", "title": {"text": "loss"}},
            legend=rf.LEGEND,
        )
        out.figures.append((fig, "Each surface's loss (solid) and metrics (dashed)."))
    else:
        out.figures += _contours(named, log)
    out.settings = {f"{label} grid": s.settings for label, s in named.items()}
    out.settings.update({f"{label} provenance": s.provenance for label, s in named.items()})
    out.settings["directions"] = dict(first.directions.settings)
    return out


def _contours(named: dict[str, Surface], log: bool) -> list[tuple[Any, str]]:
    import plotly.graph_objects as go

    from lossatlas.figures import _direction_labels

    surfaces = list(named.values())
    x, y = surfaces[0].coords
    axes = _direction_labels(surfaces[0].directions.settings)
    stack = np.stack([s.loss for s in surfaces])
    positive = stack[np.isfinite(stack) & (stack > 0)]
    log = log and positive.size > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        shade = np.log10(np.where(stack > 0, stack, np.nan)) if log else stack
    ok = shade[np.isfinite(shade)]
    scale = {"zmin": float(ok.min()), "zmax": float(ok.max())} if ok.size else {}
    bar_title = "loss (log scale)" if log else "loss"
    bar = rf._log_bar(shade, bar_title) if log else {"title": {"text": bar_title}}
    figures = []
    for label, z in zip(named, shade):
        fig = go.Figure(
            go.Contour(x=x, y=y, z=rf.clean(z.T), colorscale="Viridis", colorbar=bar, **scale)
        )
        fig.add_trace(
            go.Scatter(
                x=[0],
                y=[0],
                mode="markers",
                name="centre",
                marker={"symbol": "x", "size": 11, "color": "white"},
            )
        )
        fig.update_layout(title=f"{label} loss", xaxis_title=axes[0], yaxis_title=axes[1])
        figures.append((fig, f"{label}: loss on the shared colour scale."))
    a, b = list(named)[0], list(named)[-1]  # noqa: RUF015 (both ends)
    with np.errstate(invalid="ignore"):  # inf - inf where both diverged: a gap
        diff = surfaces[-1].loss - surfaces[0].loss
    limit = float(np.nanmax(np.abs(np.where(np.isfinite(diff), diff, np.nan)))) or 1.0
    fig = go.Figure(
        go.Contour(
            x=x,
            y=y,
            z=rf.clean(diff.T),
            colorscale="RdBu",
            reversescale=True,
            zmin=-limit,
            zmax=limit,
            colorbar={"title": {"text": f"{b} − {a}"}},
        )
    )
    fig.update_layout(title=f"{b} loss − {a} loss", xaxis_title=axes[0], yaxis_title=axes[1])
    caption = (
        f"Red where the {b} loss is above the {a} loss: a gap at the centre is the "
        "generalisation gap, and a wider gap away from it shows a minimum that fits the "
        f"{a} data only."
    )
    figures.append((fig, caption))
    return figures
