"""Reports: one self-contained interactive HTML file (plotly.js inline, works offline).

`write_report` takes results (surfaces, optimizer runs, curvature reports, densities, input-space
landscapes) or `Section`s wrapping them with a heading, a paragraph and extra facts. Each gets a
section with headline numbers, interactive figures, tables, and the settings and provenance of
what was drawn. Static PNG/SVG/PDF figures come from `lossatlas.plot`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lossatlas.core.provenance import __version__
from lossatlas.errors import LossatlasError
from lossatlas.report.parts import fmt
from lossatlas.report.sections import parts

__all__ = ["Section", "write_report"]

_CSS = """body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1200px;margin:auto;padding:1.5rem}h1{margin:.2rem 0}.sub{color:#666;margin-top:0}
section{background:#fff;border:1px solid #eee;border-radius:8px;padding:1rem 1.5rem;margin:1rem 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:1rem}
figure{margin:0;min-width:0}figure.wide{grid-column:1/-1}
figcaption{color:#555;font-size:.9rem;margin-top:.3rem}
.headline{display:flex;flex-wrap:wrap;gap:.5rem 2rem;padding:0;list-style:none}
.headline b{font-size:1.2rem}table{border-collapse:collapse;font-size:.85rem;margin-top:1rem;
display:block;overflow-x:auto;max-width:100%}
td,th{border-bottom:1px solid #eee;padding:.25rem .8rem;text-align:left;vertical-align:top}
th{color:#555;font-weight:600}details{margin-top:.8rem}summary{cursor:pointer;color:#555}
nav a{margin-right:1rem}.text{max-width:75ch;line-height:1.45}"""


@dataclass(frozen=True)
class Section:
    """A result with its own heading, a paragraph of explanation and extra headline facts.

    Attributes:
        result: what to draw (see `write_report`).
        title: the heading (default: one made from the result).
        text: a paragraph under the heading (plain text).
        facts: extra headline numbers, e.g. `{"predicted largest stable lr": 0.97}`.
        background: for optimizer runs, the landscape to draw them over (a `TestFunction` or a
            2D `Surface`); a built-in function named by the runs is found on its own.
        log: this section's loss scale, overriding the report's.
    """

    result: Any
    title: str | None = None
    text: str = ""
    facts: Mapping[str, Any] = field(default_factory=dict)
    background: Any = None
    log: bool | None = None


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


def _table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as an HTML table; columns in first-seen order."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(row.get(c, '')))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _settings(groups: dict[str, Any]) -> str:
    rows = [
        {"group": group, "setting": key, "value": value}
        for group, values in groups.items()
        for key, value in (values or {}).items()
        if key != "key"
    ]
    return f"<details><summary>settings and provenance</summary>{_table(rows)}</details>"


def _section(i: int, item: Any, log: bool) -> tuple[str, str]:
    """One section's HTML and its heading."""
    sec = item if isinstance(item, Section) else Section(item)
    p = parts(sec.result, log=log if sec.log is None else sec.log, background=sec.background)
    title = sec.title or p.title
    cards = "".join(
        f"<li>{html.escape(k)}: <b>{html.escape(fmt(v))}</b></li>"
        for k, v in {**p.cards, **sec.facts}.items()
        if v is not None
    )
    figures = "".join(
        f"<figure{' class=wide' if 'xaxis2' in fig.layout else ''}>{_div(fig, f'la-s{i}-f{j}')}"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for j, (fig, caption) in enumerate(p.figures, 1)  # several panels: the full width
    )
    text = f"<p class='text'>{html.escape(sec.text)}</p>" if sec.text else ""
    tables = "".join(  # long tables (every run of a sweep) start folded
        f"<details><summary>all {len(rows)} rows</summary>{_table(rows)}</details>"
        if len(rows) > 12
        else _table(rows)
        for rows in p.tables
        if rows
    )
    body = (
        f"<section id='s{i}'><h2>{i}. {html.escape(title)}</h2>{text}"
        f"<ul class='headline'>{cards}</ul><div class='grid'>{figures}</div>{tables}"
        f"{_settings(p.settings)}</section>"
    )
    return body, title


def write_report(
    results: Any,
    path: str | Path,
    *,
    title: str = "lossatlas report",
    log: bool = False,
    intro: str = "",
) -> Path:
    """Write one self-contained HTML report (plotly.js inline, works offline).

    Args:
        results: one result or a list; each a `Surface` (1D: loss and slope; 2D: contour and 3D
            surface with its paths, and metric maps), runs (`Trajectory`, `Sweep`,
            `Comparison`: paths over the function's contours when it is known, and loss
            histories), a `SharpnessReport` (spectrum and sharpness table), a `Density`, an
            `InputSurface`, or a `Section` wrapping any of them.
        path: the HTML file to write (parent folders are created).
        title: the page heading.
        log: logarithmic loss colours and axes; non-positive losses become gaps.
        intro: a paragraph under the heading.

    Returns:
        The path written.
    """
    from plotly.offline import get_plotlyjs

    items = list(results) if isinstance(results, (list, tuple)) else [results]
    if not items:
        raise LossatlasError("write_report needs at least one result")
    built = [_section(i, item, log) for i, item in enumerate(items, 1)]
    nav = "".join(f"<a href='#s{i}'>{i}. {html.escape(t)}</a>" for i, (_, t) in enumerate(built, 1))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    intro_html = f"<p class='text'>{html.escape(intro)}</p>" if intro else ""
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body><main>"
        f"<h1>{html.escape(title)}</h1><p class='sub'>lossatlas {__version__}, {stamp}</p>"
        f"{intro_html}{'<nav>' + nav + '</nav>' if len(built) > 1 else ''}"
        f"{''.join(body for body, _ in built)}</main></body></html>"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
