"""Interactive landscape figures for reports (plotly): contours and 3D surfaces with paths.

Every builder returns plotly figures; `report.sections` places them on the page (curves are in
`report.curves`). Non-finite values become gaps (`None`), never a broken colour scale. The
landscape figures share the static figures' background (`scene.background_of`): the same log
colouring, offsets and marks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from lossatlas.scene.background import Background
    from lossatlas.scene.tracks import Track

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


def _colour(bg: Background) -> tuple[np.ndarray, dict[str, Any]]:
    """The background's coloured values (log10 when log) and its colour bar."""
    z = bg.shade(bg.z.filled(np.nan))
    return z, (_log_bar(z, bg.label) if bg.log else {"title": {"text": bg.label}})


def _inside(p: np.ndarray, bg: Background) -> np.ndarray:
    (x0, x1), (y0, y1) = bg.box
    return (p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)


def _marks(fig: go.Figure, bg: Background) -> None:
    """The background's marks (minima, the centre) as white symbols."""
    import plotly.graph_objects as go

    for points, label, style in bg.marks:
        symbol = _SYMBOLS.get(style.get("marker"), "circle")
        mark = {"symbol": symbol, "size": 13, "color": "white", "line": {"width": 1.5}}
        fig.add_trace(
            go.Scatter(x=points[:, 0], y=points[:, 1], mode="markers", name=label, marker=mark)
        )


def field_figures(
    bg: Background, tracks: list[Track], *, hover: str = "loss"
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
    _marks(contour, bg)
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


def metric_figure(bg: Background, name: str, values: np.ndarray) -> go.Figure:
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
    _marks(fig, bg)
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
