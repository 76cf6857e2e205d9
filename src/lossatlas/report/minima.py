"""Report sections for many minima: landscapes side by side (train against validation)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lossatlas.errors import LossatlasError
from lossatlas.landscape.record import Surface
from lossatlas.report import figures as rf
from lossatlas.report.parts import Parts
from lossatlas.scene.labels import describe


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
        out.cards[f"lowest {label} loss"] = s.headline()["loss_min"]
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

    from lossatlas.scene.labels import direction_labels

    surfaces = list(named.values())
    x, y = surfaces[0].coords
    axes = direction_labels(surfaces[0].directions.settings)
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


def comparison(result: Any) -> Parts:
    """Several minima: losses, gaps and sharpness per model, and how far apart they lie."""
    import plotly.graph_objects as go

    names = list(result.names)
    out = Parts(f"{len(names)} minima compared")
    rows = result.rows()
    out.tables.append(rows)
    if np.isfinite(result.lambda_max).any() and np.isfinite(result.gap).any():
        fig = go.Figure(
            go.Scatter(
                x=result.lambda_max,
                y=result.gap,
                mode="markers+text",
                text=names,
                textposition="top center",
                cliponaxis=False,  # labels of points at the edge stay whole
                marker={"size": 11, "color": rf.PALETTE[0]},
            )
        )
        fig.update_layout(
            title="sharpness against the generalisation gap",
            xaxis_title="λmax (top Hessian eigenvalue)",
            yaxis_title="validation loss − train loss",
        )
        out.figures.append(
            (
                fig,
                "Each minimum's sharpness next to how much worse it does on "
                "held-out data (Keskar et al. 2017 ask whether they go together).",
            )
        )
    if len(names) > 1:
        fig = go.Figure(
            go.Heatmap(
                z=rf.clean(result.relative_distances),
                x=names,
                y=names,
                colorscale="Blues",
                text=[[f"{v:.3g}" for v in row] for row in result.relative_distances],
                texttemplate="%{text}",
                colorbar={"title": {"text": "distance / norm"}},
            )
        )
        fig.update_layout(
            title="distance between minima (relative to their weight norms)",
            yaxis={"autorange": "reversed"},
        )
        out.figures.append(
            (
                fig,
                "Euclidean distance between every pair of minima, divided by "
                "the mean of their weight norms.",
            )
        )
    out.cards["models"] = result.headline()["models"]
    out.settings = {"settings": result.settings, "provenance": result.provenance}
    return out


def flat_sharp(study: Any, log: bool) -> Parts:
    """Small- against large-batch training: 1D slices of both minima, sharpness and gaps."""
    import plotly.graph_objects as go

    out = comparison(study.comparison)
    out.title = "Flat or sharp: small- against large-batch training"
    fig = go.Figure()
    slices = (
        ("small batch", study.small_train, study.small_val, rf.PALETTE[0]),
        ("large batch", study.large_train, study.large_val, rf.PALETTE[2]),
    )
    for label, train, val, color in slices:
        for split, s, dash in (("train", train, None), ("validation", val, "dash")):
            fig.add_trace(
                go.Scatter(
                    x=s.coords[0],
                    y=rf.clean(s.loss),
                    name=f"{label}, {split}",
                    line={"color": color, "dash": dash},
                )
            )
    fig.update_layout(
        title="1D slices through both minima (filter-normalised direction)",
        xaxis_title="c: coefficient along the direction",
        yaxis={"type": "log" if log else "linear", "title": {"text": "loss"}},
        legend=rf.LEGEND,
    )
    caption = (
        "Loss along a random filter-normalised direction through each minimum (Li et al. "
        "2018), on training (solid) and validation (dashed) data."
    )
    out.figures.insert(0, (fig, caption))
    head = study.headline()
    lam, gap = head["lambda_max"], head["gap"]
    out.cards = {
        "λmax small / large batch": f"{lam[0]:.4g} / {lam[1]:.4g}",
        "gap small / large batch": f"{gap[0]:.3g} / {gap[1]:.3g}",
    }
    out.settings = {"study": study.settings, "provenance": study.provenance}
    return out
