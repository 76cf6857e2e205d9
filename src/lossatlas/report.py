"""Reports: one self-contained interactive HTML file (plotly, inline) and static figures.

The HTML embeds plotly.js itself, so it opens offline and can be mailed as one file. Non-finite
losses (a diverged point) are left out of plots as gaps rather than breaking the colour scale.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lossatlas.errors import LossatlasError
from lossatlas.result import Surface

FIGURE_FORMATS = (".png", ".svg", ".pdf")
_CSS = """body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1200px;margin:auto;padding:1.5rem}h1{margin:.2rem 0}.sub{color:#666;margin-top:0}
section{background:#fff;border:1px solid #eee;border-radius:8px;padding:1rem 1.5rem;margin:1rem 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:1rem}
figure{margin:0;min-width:0}figcaption{color:#555;font-size:.9rem;margin-top:.3rem}
.headline{display:flex;flex-wrap:wrap;gap:.5rem 2rem;padding:0;list-style:none}
.headline b{font-size:1.2rem}table{border-collapse:collapse;font-size:.85rem;margin-top:1rem}
td,th{border-bottom:1px solid #eee;padding:.25rem .8rem;text-align:left;vertical-align:top}
th{color:#555;font-weight:600}"""


def figure_path(path: str | Path) -> Path:
    """`path` if its suffix names a static figure format, else a one-line error."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_FORMATS:
        raise LossatlasError(f"cannot save a figure as {path.name!r}; use one of {FIGURE_FORMATS}")
    return path


def _has_center(surface: Surface) -> bool:
    """Whether the origin (the weights) lies inside the grid's span."""
    return all(c.min() <= 0 <= c.max() for c in surface.coords)


def headline(surface: Surface) -> dict[str, Any]:
    """Headline numbers: loss (and metrics) at the centre, the lowest loss and where it is.

    Values at the centre are None when the origin is not a grid point (an even number of steps
    over a symmetric span, or a span that excludes 0).
    """
    index = tuple(int(np.argmin(np.abs(c))) for c in surface.coords)
    at_zero = all(abs(c[i]) <= 1e-9 * max(1.0, np.ptp(c)) for c, i in zip(surface.coords, index))
    center = index if at_zero else None
    finite = np.isfinite(surface.loss)
    out: dict[str, Any] = {
        "loss_center": None if center is None else float(surface.loss[center]),
        "loss_min": float(surface.loss[finite].min()) if finite.any() else None,
        "argmin": list(surface.argmin()) if finite.any() else None,
    }
    for name, grid in surface.metrics.items():
        out[f"{name}_center"] = None if center is None else float(grid[center])
    out["n_points"] = int(surface.loss.size)
    out["nonfinite"] = surface.nonfinite
    out["seconds"] = surface.provenance.get("seconds")
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
        return " × ".join(map(str, value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _describe(surface: Surface) -> str:
    d = surface.directions.settings
    shape = " × ".join(str(len(c)) for c in surface.coords)
    how = ", ".join(f"{k} {d[k]}" for k in ("norm", "ignore", "seed") if k in d)
    text = f"{surface.ndim}D, {shape} points, {d.get('kind', 'user')} directions"
    return f"{text} ({how})" if how else text


def _table(surface: Surface) -> str:
    rows = [("directions", k, v) for k, v in surface.directions.settings.items()]
    if surface.ndim == 2:
        rows.append(("directions", "cosine(d1, d2)", surface.directions.cosine()))
    rows += [("grid", k, v) for k, v in surface.settings.items() if k != "key"]
    rows += [("provenance", k, v) for k, v in surface.provenance.items()]
    cells = "".join(
        f"<tr><th>{g}</th><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>"
        for g, k, v in rows
    )
    return f"<table><tr><th>group</th><th>setting</th><th>value</th></tr>{cells}</table>"


def _clean(a: np.ndarray) -> list:
    """Grid as nested lists with None (a gap in plotly) for non-finite values."""
    a = np.asarray(a, dtype=float)
    return np.where(np.isfinite(a), a, None).tolist()


def _color(loss: np.ndarray, log: bool) -> tuple[np.ndarray, str, dict]:
    """Colour values, their name and colour bar: log10 of positive losses when `log`."""
    if not log:
        return loss, "loss", {"title": {"text": "loss"}}
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(loss > 0, np.log10(loss), np.nan)
    ok = z[np.isfinite(z)]
    ticks = np.arange(np.floor(ok.min()), np.ceil(ok.max()) + 1) if ok.size else np.array([])
    text = [f"{10.0**k:g}" for k in ticks]
    return z, "loss (log)", {"title": {"text": "loss (log)"}, "tickvals": ticks, "ticktext": text}


def _figures_2d(s: Surface, prefix: str, log: bool) -> list[tuple[Any, str, str]]:
    import plotly.graph_objects as go

    def mark(xy: Any, name: str, symbol: str, color: str) -> Any:
        style = {"symbol": symbol, "size": 12, "color": color, "line": {"width": 1}}
        return go.Scatter(x=[xy[0]], y=[xy[1]], mode="markers", name=name, marker=style)

    z, label, bar = _color(s.loss, log)
    grid = {"x": s.coords[0], "y": s.coords[1], "customdata": _clean(s.loss.T)}
    grid["hovertemplate"] = "c1 %{x:.3g}<br>c2 %{y:.3g}<br>loss %{customdata:.4g}<extra></extra>"
    low = s.argmin() if np.isfinite(s.loss).any() else (0.0, 0.0)
    marks = [mark(low, "lowest loss", "star", "red")] if any(low) else []
    if _has_center(s):  # drawn last: on top
        marks.append(mark((0, 0), "centre" + ("" if any(low) else " (lowest loss)"), "x", "white"))
    axes = {"xaxis_title": "direction 1 (coefficient)", "yaxis_title": "direction 2 (coefficient)"}
    axes["legend"] = {"orientation": "h", "y": -0.2}
    lines = {"showlabels": not log}  # labels would show log10 values
    trace = go.Contour(z=_clean(z.T), colorscale="Viridis", colorbar=bar, contours=lines, **grid)
    contour = go.Figure([trace, *marks])
    contour.update_layout(title="loss", **axes)
    surf = go.Figure(go.Surface(z=_clean(z.T), colorscale="Viridis", colorbar=bar, **grid))
    zaxis = {"title": {"text": label}, **{k: v for k, v in bar.items() if k != "title"}}
    scene = {"xaxis_title": "direction 1", "yaxis_title": "direction 2", "zaxis": zaxis}
    surf.update_layout(title=f"{label}, 3D", scene=scene, margin={"l": 0, "r": 0, "b": 10, "t": 40})
    caption = (
        f"Loss{' on a log scale' if log else ''} on the plane through the weights (cross) "
        "spanned by the two directions; the star marks the lowest loss on the grid. "
        "Gaps are non-finite losses."
    )
    figs = [(contour, f"{prefix}-contour", caption)]
    figs.append((surf, f"{prefix}-surface3d", "The same loss as a 3D surface; drag to rotate."))
    for name, values in s.metrics.items():
        bar = {"title": {"text": name}}
        trace = go.Contour(z=_clean(values.T), colorscale="Cividis", colorbar=bar, **grid)
        trace.update(customdata=None, hovertemplate=None)
        fig = go.Figure([trace, *marks[-1:]]).update_layout(title=name, **axes)
        figs.append((fig, f"{prefix}-metric-{name}", f"The metric {name!r} on the same grid."))
    return figs


def _figures_1d(s: Surface, prefix: str, log: bool) -> list[tuple[Any, str, str]]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    x = s.coords[0]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=x, y=_clean(s.loss), name="loss", mode="lines+markers"))
    for name, values in s.metrics.items():
        dashed = go.Scatter(x=x, y=_clean(values), name=name, line={"dash": "dash"})
        fig.add_trace(dashed, secondary_y=True)
    fig.add_vline(x=0, line={"dash": "dot", "color": "grey"})
    legend = {"orientation": "h", "y": -0.2}
    fig.update_layout(title="loss", xaxis_title="direction 1 (coefficient)", legend=legend)
    fig.update_yaxes(title_text="loss", type="log" if log else "linear", secondary_y=False)
    fig.update_yaxes(title_text=", ".join(s.metrics), secondary_y=True)
    caption = (
        "Loss along the direction (solid, left axis) and metrics (dashed, right axis); "
        "the dotted line is the centre. Gaps are non-finite losses."
    )
    return [(fig, f"{prefix}-line", caption)]


def _div(fig: Any, div_id: str) -> str:
    config = {"displaylogo": False, "responsive": True}
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config=config,
        default_height=460,
        default_width="100%",  # the grid cell's width, not plotly's fixed 700 px default
    )


def _section(i: int, s: Surface, log: bool) -> str:
    """One surface's headline numbers, figures and settings table."""
    if s.ndim not in (1, 2):
        raise LossatlasError(f"can only report 1D or 2D surfaces, surface {i} is {s.ndim}D")
    build = _figures_2d if s.ndim == 2 else _figures_1d
    figures = "".join(
        f"<figure>{_div(fig, div_id)}<figcaption>{html.escape(caption)}</figcaption></figure>"
        for fig, div_id, caption in build(s, f"la-s{i}", log)
    )
    head = headline(s)
    items = {"loss at the centre": head["loss_center"], "lowest loss": head["loss_min"]}
    items["at"] = head["argmin"] and "(" + ", ".join(f"{c:.3g}" for c in head["argmin"]) + ")"
    items.update({f"{m} at the centre": head[f"{m}_center"] for m in s.metrics})
    items["non-finite points"] = head["nonfinite"]
    cards = "".join(
        f"<li>{html.escape(k)}: <b>{html.escape(_fmt(v))}</b></li>"
        for k, v in items.items()
        if v is not None
    )
    return (
        f"<section><h2>Surface {i}: {html.escape(_describe(s))}</h2>"
        f"<ul class='headline'>{cards}</ul><div class='grid'>{figures}</div>"
        f"{_table(s)}</section>"
    )


def write_report(
    results: list[Surface] | Surface,
    path: str | Path,
    *,
    title: str = "lossatlas report",
    log: bool = False,
) -> Path:
    """Write one self-contained HTML report (plotly.js inline, works offline).

    Args:
        results: one surface or a list; each gets a section with its figures and settings.
        path: the HTML file to write (parent folders are created).
        title: the page heading.
        log: colour (2D) or scale (1D) the loss logarithmically; non-positive losses become gaps.

    Returns:
        The path written.
    """
    from plotly.offline import get_plotlyjs

    from lossatlas import __version__

    surfaces = [results] if isinstance(results, Surface) else list(results)
    if not surfaces or not all(isinstance(s, Surface) for s in surfaces):
        raise LossatlasError("write_report needs a Surface or a non-empty list of them")
    sections = "".join(_section(i, s, log) for i, s in enumerate(surfaces, 1))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body><main>"
        f"<h1>{html.escape(title)}</h1><p class='sub'>lossatlas {__version__}, {stamp}</p>"
        f"{sections}</main></body></html>"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def save_figure(surface: Surface, path: str | Path, *, log: bool = False, dpi: int = 200) -> Path:
    """Save a static figure (PNG, SVG or PDF by the file suffix) with matplotlib.

    2D: filled contours with labelled contour lines, a colour bar, the centre (cross) and the
    lowest loss (star). 1D: the loss along the line, metrics on a second axis.

    Args:
        surface: a 1D or 2D surface.
        path: the file to write; its suffix picks the format.
        log: logarithmic loss colours (2D) or axis (1D).
        dpi: resolution of PNG output.
    """
    from matplotlib import colors, ticker
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    path = figure_path(path)
    if surface.ndim not in (1, 2):
        raise LossatlasError(f"can only plot 1D or 2D surfaces, this one is {surface.ndim}D")
    loss = np.ma.masked_invalid(
        np.where(surface.loss > 0, surface.loss, np.nan) if log else surface.loss
    )
    if loss.count() == 0:
        raise LossatlasError("the surface has no finite (positive, with log) loss to plot")
    fig = Figure(figsize=(6.4, 5.2) if surface.ndim == 2 else (6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlabel("direction 1 (coefficient)")
    fig.suptitle(_describe(surface), fontsize=9)
    if surface.ndim == 2:
        x, y = surface.coords
        lo, hi = float(loss.min()), float(loss.max())
        if log and hi > lo:  # 1-2-5 levels per decade: round numbers on the lines
            levels = ticker.LogLocator(subs=(1, 2, 5)).tick_values(lo, hi)
            levels = levels[(levels >= levels[levels <= lo].max()) & (levels <= hi * 5)]
            norm, lines_at = colors.LogNorm(levels[0], levels[-1]), levels
        else:
            levels, norm = ticker.MaxNLocator(20).tick_values(lo, hi), None
            lines_at = levels[::2]
        filled = ax.contourf(x, y, loss.T, levels=levels, norm=norm, cmap="viridis")
        lines = ax.contour(
            x, y, loss.T, levels=lines_at, norm=norm, colors="k", linewidths=0.5, alpha=0.7
        )
        ax.clabel(lines, fmt="%.3g", fontsize=7)
        bar = fig.colorbar(filled, ax=ax, label="loss (log scale)" if log else "loss")
        if log:
            bar.ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
            bar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        low = surface.argmin()
        if any(low):  # else the star would hide the centre's cross
            ax.plot(*low, marker="*", ms=12, color="red", ls="", label="lowest loss")
        if _has_center(surface):
            label = "centre" + ("" if any(low) else " (lowest loss)")
            ax.plot(0, 0, marker="X", ms=9, mfc="white", mec="k", ls="", label=label)
        ax.set_ylabel("direction 2 (coefficient)")
        ax.set_aspect("equal" if math.isclose(np.ptp(x), np.ptp(y)) else "auto")
        fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    else:
        ax.plot(surface.coords[0], loss, color="C0", label="loss")
        ax.axvline(0, color="grey", ls=":", lw=1)
        ax.set_ylabel("loss")
        ax.set_yscale("log" if log else "linear")
        if surface.metrics:
            twin = ax.twinx()
            for j, (name, grid) in enumerate(surface.metrics.items(), 1):
                twin.plot(surface.coords[0], grid, ls="--", color=f"C{j}", label=name)
            twin.set_ylabel(", ".join(surface.metrics))
            twin.legend(loc="upper right", fontsize=8)
        ax.legend(loc="upper left", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
