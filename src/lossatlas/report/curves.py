"""Interactive curves for reports (plotly): a line and its slope, loss histories, spectra."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from lossatlas.report.figures import LEGEND, PALETTE, clean

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from lossatlas.curvature.density import Density
    from lossatlas.landscape.record import Surface
    from lossatlas.scene.tracks import Track


def line_figure(surface: Surface, *, log: bool) -> go.Figure:
    """The loss along a 1D line and, with slopes, its derivative beside it (L and dL/dc).

    For `axis_directions` along one weight the horizontal axis is the weight itself, so the
    panels read L(w) and dL/dw. Metrics share the loss panel on a second axis.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    d = surface.directions.settings
    c = np.asarray(surface.coords[0], float)
    x, xlabel = c, "c: coefficient along the direction"
    if d.get("kind") == "axis" and len(d.get("entries", ())) == 1:
        x, xlabel = c + float(d["origin_values"][0]), f"w = {d['entries'][0]}"
    has_slope = surface.slopes is not None
    titles = (
        ("loss L", "slope dL/dw" if x is not c else "slope dL/dc") if has_slope else ("loss L",)
    )
    fig = make_subplots(
        rows=1,
        cols=len(titles),
        subplot_titles=titles,
        specs=[[{"secondary_y": bool(surface.metrics)}] + [{}] * (len(titles) - 1)],
    )
    loss = np.asarray(surface.loss, float)
    fig.add_trace(
        go.Scatter(x=x, y=clean(loss), name="loss L", mode="lines+markers", marker={"size": 3}),
        row=1,
        col=1,
    )
    if np.isfinite(loss).any():
        i = int(np.nanargmin(np.where(np.isfinite(loss), loss, np.nan)))
        low = {"symbol": "star", "size": 14, "color": "red", "line": {"width": 1}}
        fig.add_trace(
            go.Scatter(
                x=[x[i]],
                y=[loss[i]],
                mode="markers",
                marker=low,
                name=f"lowest loss {loss[i]:.4g} at {x[i]:.4g}",
            ),
            row=1,
            col=1,
        )
    for j, (name, values) in enumerate(surface.metrics.items(), 1):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=clean(values),
                name=name,
                line={"dash": "dash", "color": PALETTE[j % len(PALETTE)]},
            ),
            row=1,
            col=1,
            secondary_y=True,
        )
    if has_slope:
        slope = np.asarray(surface.slopes, float)[:, 0]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=clean(slope),
                name="slope (autograd)",
                mode="lines+markers",
                marker={"size": 3},
                line={"color": PALETTE[1]},
            ),
            row=1,
            col=2,
        )
        check = np.gradient(loss, c) if len(c) > 2 else np.full_like(c, np.nan)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=clean(check),
                name="finite difference (check)",
                line={"dash": "dot", "color": "black", "width": 1},
            ),
            row=1,
            col=2,
        )
        fig.add_hline(y=0, line={"color": "grey", "width": 1}, row=1, col=2)
    if c.min() <= 0 <= c.max():
        fig.add_vline(x=x[int(np.argmin(np.abs(c)))], line={"dash": "dot", "color": "grey"})
    fig.update_xaxes(title_text=xlabel)
    fig.update_yaxes(
        title_text="loss", type="log" if log else "linear", row=1, col=1, secondary_y=False
    )
    if surface.metrics:
        fig.update_yaxes(title_text=", ".join(surface.metrics), row=1, col=1, secondary_y=True)
    fig.update_layout(legend=LEGEND)
    return fig


def history_figure(tracks: list[Track], *, log: bool = True, title: str = "") -> go.Figure:
    """Loss against step for every run; a diverged run ends in a cross on the top edge.

    The loss axis stops at 10x the highest starting loss (log) so a run that blows up does not
    squash the others; zoom out in the browser to see all of it.
    """
    import plotly.graph_objects as go

    finite = np.concatenate([t.loss[np.isfinite(t.loss)] for t in tracks])
    log = log and finite.size > 0 and finite.min() > 0
    starts = [t.loss[0] for t in tracks if np.isfinite(t.loss[0])]
    top = 10 * max(starts) if log and starts else math.inf
    fig = go.Figure()
    for i, t in enumerate(tracks):
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                y=clean(t.loss),
                name=t.label,
                mode="lines",
                line={"color": color},
                legendgroup=t.label,
            )
        )
        ok = np.flatnonzero(np.isfinite(t.loss))
        if t.status == "diverged":
            y = min(float(t.loss[ok[-1]]), top) if ok.size else top
            fig.add_trace(
                go.Scatter(
                    x=[int(ok[-1]) if ok.size else 0],
                    y=[y],
                    mode="markers",
                    showlegend=False,
                    marker={"symbol": "x", "size": 11, "color": color, "line": {"width": 1}},
                    legendgroup=t.label,
                    hovertext=f"{t.label}: diverged",
                )
            )
    yaxis: dict[str, Any] = {"title": {"text": "loss"}, "type": "log" if log else "linear"}
    if log and finite.size and finite.max() > top:
        yaxis["range"] = [math.log10(finite.min()) - 0.1, math.log10(top)]
    fig.update_layout(
        title=title or "loss along each run", xaxis_title="step", yaxis=yaxis, legend=LEGEND
    )
    return fig


def spectrum_figure(eigenvalues: np.ndarray, residuals: np.ndarray) -> go.Figure:
    """The top Hessian eigenvalues with their residuals `||Hv - lambda v||` as error bars."""
    import plotly.graph_objects as go

    k = np.arange(1, len(eigenvalues) + 1)
    fig = go.Figure(
        go.Scatter(
            x=k,
            y=clean(eigenvalues),
            mode="markers+lines",
            name="eigenvalue",
            error_y={"type": "data", "array": clean(residuals), "visible": True},
            marker={"size": 9},
        )
    )
    fig.update_layout(
        title="top Hessian eigenvalues (Lanczos)",
        xaxis_title="index",
        yaxis_title="eigenvalue",
        xaxis={"dtick": 1},
    )
    return fig


def density_figure(density: Density) -> go.Figure:
    """The smoothed spectral density (SLQ) on a log axis, with the extreme Ritz values marked."""
    import plotly.graph_objects as go

    grid, values = density.density()
    floor = max(float(values.max()) * 1e-8, 1e-300)
    fig = go.Figure(go.Scatter(x=grid, y=np.maximum(values, floor), mode="lines", name="density"))
    for v, name in zip(density.extremes, ("lambda_min", "lambda_max")):
        fig.add_vline(x=v, line={"dash": "dot", "color": "grey"}, annotation_text=name)
    fig.update_layout(
        title="Hessian spectral density (stochastic Lanczos quadrature)",
        xaxis_title="eigenvalue",
        yaxis={"type": "log", "title": {"text": "density"}},
    )
    return fig
