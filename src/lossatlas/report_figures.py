"""Interactive figures for reports (plotly): landscapes with paths, lines, histories, spectra.

Every builder returns plotly figures; `report_sections` places them on the page. Non-finite
values become gaps (`None`), never a broken colour scale. The landscape figures share the
static figures' background (`figures._background`): the same log colouring, offsets and marks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from lossatlas.density import Density
    from lossatlas.figures import _Background
    from lossatlas.result import Surface
    from lossatlas.tracks import Track

LEGEND = {"orientation": "h", "y": -0.22}
PALETTE = ("#1f77b4", "#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
PALETTE += ("#bcbd22", "#7f7f7f", "#2ca02c")
_SYMBOLS = {"*": "star", "X": "x", "o": "circle", "s": "square"}


def clean(a: Any) -> list:
    """Values as nested lists with None (a gap in plotly) for non-finite entries."""
    a = np.asarray(a, dtype=float)
    return np.where(np.isfinite(a), a, None).tolist()


def _log_bar(z: np.ndarray, title: str) -> dict[str, Any]:
    """A colour bar for log10 values labelled with the values themselves (1, 10, 100...)."""
    ok = z[np.isfinite(z)]
    if ok.size == 0:
        return {"title": {"text": title}}
    lo, hi = float(ok.min()), float(ok.max())
    decades = np.arange(math.floor(lo), math.ceil(hi) + 1)
    subs = (1,) if hi - lo > 3 else (1, 2, 5) if hi - lo > 1 else (1, 1.5, 2, 3, 5, 7)
    values = np.array([m * 10.0**k for k in decades for m in subs])
    ticks = np.log10(values)
    keep = (ticks >= lo - 1e-9) & (ticks <= hi + 1e-9)
    return {
        "title": {"text": title},
        "tickvals": ticks[keep].tolist(),
        "ticktext": [f"{v:.3g}" for v in values[keep]],
    }


def _colour(bg: _Background) -> tuple[np.ndarray, dict[str, Any]]:
    """The background's coloured values (log10 when log) and its colour bar."""
    z = bg.shade(bg.z.filled(np.nan))
    return z, (_log_bar(z, bg.label) if bg.log else {"title": {"text": bg.label}})


def _inside(p: np.ndarray, bg: _Background) -> np.ndarray:
    (x0, x1), (y0, y1) = bg.box
    return (p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)


def field_figures(
    bg: _Background, tracks: list[Track], *, hover: str = "loss"
) -> tuple[go.Figure, go.Figure]:
    """A filled contour with the paths drawn over it, and the same as a 3D surface.

    Paths keep their own losses in 3D when they have them (an optimizer's run on a function);
    otherwise (a trajectory projected onto a plane) they are placed at the plane's loss,
    interpolated from the grid. Points outside the box are left out of the 3D view.
    """
    import plotly.graph_objects as go

    z, bar = _colour(bg)
    raw = bg.z.filled(np.nan) + bg.offset
    tip = f"{bg.axes[0]} %{{x:.4g}}<br>{bg.axes[1]} %{{y:.4g}}<br>{hover} %{{customdata:.4g}}"
    grid = {"x": bg.xs, "y": bg.ys, "customdata": clean(raw)}
    grid["hovertemplate"] = tip + "<extra></extra>"
    contour = go.Figure(go.Contour(z=clean(z), colorscale="Viridis", colorbar=bar, **grid))
    surface = go.Figure(go.Surface(z=clean(z), colorscale="Viridis", colorbar=bar, **grid))
    lift = 0.01 * float(np.nanmax(z) - np.nanmin(z)) if np.isfinite(z).any() else 0.0
    for i, t in enumerate(tracks):
        color = PALETTE[i % len(PALETTE)]
        p = t.positions
        contour.add_trace(
            go.Scatter(
                x=clean(p[:, 0]),
                y=clean(p[:, 1]),
                mode="lines+markers",
                name=t.label,
                line={"color": color, "width": 2},
                marker={"size": 4, "color": color},
                legendgroup=t.label,
            )
        )
        ok = np.flatnonzero(np.isfinite(p).all(1))
        if ok.size:
            last = p[ok[-1]]
            end = {"symbol": "x" if t.status == "diverged" else "square", "size": 10}
            contour.add_trace(
                go.Scatter(
                    x=[p[ok[0], 0], last[0]],
                    y=[p[ok[0], 1], last[1]],
                    mode="markers",
                    marker={
                        "color": color,
                        "line": {"width": 1, "color": "black"},
                        "size": 9,
                        "symbol": ["circle", end["symbol"]],
                    },
                    legendgroup=t.label,
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
        loss = t.loss if t.loss is not None and len(t.loss) == len(p) else bg.loss_at(p)
        height = bg.shade(np.asarray(loss, float)) + lift
        height = np.where(_inside(np.nan_to_num(p, nan=np.inf), bg), height, np.nan)
        surface.add_trace(
            go.Scatter3d(
                x=clean(p[:, 0]),
                y=clean(p[:, 1]),
                z=clean(height),
                mode="lines+markers",
                name=t.label,
                line={"color": color, "width": 5},
                marker={"size": 2, "color": color},
            )
        )
    for points, label, style in bg.marks:
        symbol = _SYMBOLS.get(style.get("marker"), "circle")
        mark = {"symbol": symbol, "size": 13, "color": "white", "line": {"width": 1.5}}
        contour.add_trace(
            go.Scatter(x=points[:, 0], y=points[:, 1], mode="markers", name=label, marker=mark)
        )
    (x0, x1), (y0, y1) = bg.box
    contour.update_layout(
        title=bg.title,
        xaxis_title=bg.axes[0],
        yaxis_title=bg.axes[1],
        legend=LEGEND,
        xaxis={"range": [x0, x1]},
        yaxis={"range": [y0, y1]},
    )
    zaxis = {"title": {"text": bg.label}}
    if bg.log:
        zaxis.update({k: v for k, v in bar.items() if k != "title"})
    scene = {"xaxis_title": bg.axes[0], "yaxis_title": bg.axes[1], "zaxis": zaxis}
    scene["xaxis"] = {"range": [x0, x1], "title": {"text": bg.axes[0]}}
    scene["yaxis"] = {"range": [y0, y1], "title": {"text": bg.axes[1]}}
    surface.update_layout(
        title=f"{bg.title} (3D)",
        scene=scene,
        legend=LEGEND,
        margin={"l": 0, "r": 0, "b": 10, "t": 40},
    )
    return contour, surface


def metric_figure(bg: _Background, name: str, values: np.ndarray) -> go.Figure:
    """A metric's grid (rows follow the first axis, as a Surface stores it) as a contour."""
    import plotly.graph_objects as go

    trace = go.Contour(
        x=bg.xs,
        y=bg.ys,
        z=clean(np.asarray(values).T),
        colorscale="Cividis",
        colorbar={"title": {"text": name}},
    )
    fig = go.Figure(trace)
    for points, label, style in bg.marks:
        symbol = _SYMBOLS.get(style.get("marker"), "circle")
        mark = {"symbol": symbol, "size": 13, "color": "white", "line": {"width": 1.5}}
        fig.add_trace(
            go.Scatter(x=points[:, 0], y=points[:, 1], mode="markers", name=label, marker=mark)
        )
    (x0, x1), (y0, y1) = bg.box
    fig.update_layout(
        title=name,
        xaxis_title=bg.axes[0],
        yaxis_title=bg.axes[1],
        legend=LEGEND,
        xaxis={"range": [x0, x1]},
        yaxis={"range": [y0, y1]},
    )
    return fig


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
