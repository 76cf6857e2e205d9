"""Report sections for paths between minima: straight lines, barrier matrices, trained curves."""

from __future__ import annotations

from typing import Any

import numpy as np

from lossatlas.report import figures as rf
from lossatlas.report.parts import Parts


def _chords(
    fig: Any,
    t: np.ndarray,
    loss: np.ndarray,
    color: str,
    name: str,
    *,
    col: int = 1,
    legend: bool = True,
) -> None:
    """A path's loss and the chord between its ends (the barrier is measured from it)."""
    import plotly.graph_objects as go

    line = go.Scatter(
        x=t, y=rf.clean(loss), name=name, line={"color": color}, showlegend=legend, legendgroup=name
    )
    ends = np.searchsorted(t, [0.0, 1.0])
    chord = go.Scatter(
        x=[0.0, 1.0],
        y=rf.clean(loss[ends]),
        mode="lines+markers",
        showlegend=False,
        legendgroup=name,
        hoverinfo="skip",
        line={"color": color, "dash": "dot", "width": 1},
    )
    fig.add_trace(line, row=1, col=col)
    fig.add_trace(chord, row=1, col=col)


def interpolation(results: list[Any], log: bool) -> Parts:
    """Loss (and error) along straight lines between models, with their barriers."""
    from plotly.subplots import make_subplots

    errors = [r for r in results if r.error is not None]
    fig = make_subplots(
        rows=1, cols=2 if errors else 1, subplot_titles=("loss", "error") if errors else ("loss",)
    )
    out = Parts("Linear interpolation between models")
    rows, heads = [], []
    for i, r in enumerate(results):
        color = rf.PALETTE[i % len(rf.PALETTE)]
        label = f"{r.names[0]} → {r.names[1]}"
        _chords(fig, r.t, r.loss, color, label)
        if r.error is not None:
            _chords(fig, r.t, r.error, color, label, col=2, legend=False)
        head = r.headline()
        heads.append(head)
        rows.append(
            {
                "path": label,
                "loss barrier": head["loss_barrier"],
                "error barrier": head["error_barrier"],
                "at t": head["argmax_t"],
                "monotonic": head["monotonic"],
            }
        )
    fig.update_xaxes(title_text="t: (1 − t) θa + t θb")
    fig.update_yaxes(type="log" if log else "linear", row=1, col=1)
    fig.update_layout(legend=rf.LEGEND)
    caption = (
        "Loss along the straight line from one model (t = 0) to another (t = 1); the dotted "
        "chord joins the ends, and the barrier is the largest rise above it (as Entezari et "
        "al. 2022 measure it; Frankle et al. 2020 measure from the mean of the ends)."
    )
    out.figures.append((fig, caption))
    out.tables.append(rows)
    out.cards["largest loss barrier"] = max(h["loss_barrier"] for h in heads)
    out.settings = {"settings": results[0].settings, "provenance": results[0].provenance}
    return out


def barriers(matrix: Any) -> Parts:
    """Pairwise barriers of N models as heat maps."""
    import plotly.graph_objects as go

    out = Parts(f"Barriers between {len(matrix.names)} models")
    names = list(matrix.names)
    for which, values in (("loss", matrix.loss_barrier), ("error", matrix.error_barrier)):
        if values is None:
            continue
        fig = go.Figure(
            go.Heatmap(
                z=rf.clean(values),
                x=names,
                y=names,
                colorscale="Magma",
                reversescale=True,
                text=[[f"{v:.3g}" for v in row] for row in values],
                texttemplate="%{text}",
                colorbar={"title": {"text": f"{which} barrier"}},
            )
        )
        fig.update_layout(
            title=f"{which} barrier on the straight line between models",
            yaxis={"autorange": "reversed"},
        )
        out.figures.append((fig, f"Pairwise {which} barriers: 0 means linearly connected."))
    head = matrix.headline()
    out.cards["largest loss barrier"] = head["loss_barrier_max"]
    out.cards["smallest loss barrier"] = head["loss_barrier_min"]
    out.tables.append([{"model": n, "loss": v} for n, v in zip(names, head["endpoint_loss"])])
    out.settings = {"settings": matrix.settings, "provenance": matrix.provenance}
    return out


def curve(result: Any, log: bool) -> Parts:
    """Loss along a trained low-loss curve next to the straight line between the same ends."""
    from plotly.subplots import make_subplots

    names = ["loss", *result.metrics]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    kind = result.settings.get("kind", "curve")
    for col, name in enumerate(names, 1):
        on_curve = result.loss if name == "loss" else result.metrics[name]
        on_line = result.line_loss if name == "loss" else result.line_metrics[name]
        first = col == 1
        sub = make_subplots(rows=1, cols=1)
        _chords(sub, result.t, on_curve, rf.PALETTE[0], kind)
        _chords(sub, result.t, on_line, rf.PALETTE[2], "straight line")
        for trace in sub.data:
            fig.add_trace(
                trace.update(showlegend=first and trace.showlegend is not False), row=1, col=col
            )
    fig.update_xaxes(title_text="t along the path")
    fig.update_yaxes(type="log" if log else "linear", row=1, col=1)
    fig.update_layout(legend=rf.LEGEND)
    out = Parts(f"A low-loss path between two minima ({kind})")
    head = result.headline()
    out.cards = {
        "barrier on the curve": head["barrier"],
        "barrier on the straight line": head["line_barrier"],
    }
    caption = (
        "Loss along the trained curve (Garipov et al. 2018) and along the straight line "
        "between the same two minima; dotted chords join the ends."
    )
    out.figures.append((fig, caption))
    out.settings = {"settings": result.settings, "provenance": result.provenance}
    return out
