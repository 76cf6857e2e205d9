"""Animations of optimizer runs: the paths moving over the landscape's contour, step by step.

The background is drawn once, exactly as `plot_paths` draws it; each frame moves every run's
path, its current position and, once the run has ended, its end marker. GIF always works
(Pillow); MP4 needs ffmpeg on the PATH.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lossatlas.descent.functions import Box, TestFunction
from lossatlas.errors import LossatlasError
from lossatlas.landscape.record import Surface
from lossatlas.plot._common import base_figure, check_size, colors, end_style, halo, legend
from lossatlas.scene.background import background_of
from lossatlas.scene.tracks import as_tracks, last_inside

FORMATS = (".gif", ".mp4")


def _count(name: str, value: Any, *, allow_none: bool = True) -> int | None:
    """`value` as a positive integer (or None); a one-line error otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise LossatlasError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def frame_steps(n_positions: int, frames: int | None = None) -> np.ndarray:
    """The steps shown, one per frame: every one, or `frames` of them evenly spread.

    The first and the final state are always included (just the final one for `frames=1`).
    """
    if frames is None or frames >= n_positions:
        return np.arange(n_positions)
    if frames == 1:
        return np.array([n_positions - 1])
    # floor(x + 0.5), not np.round: banker's rounding could give two frames the same step.
    return np.floor(np.linspace(0, n_positions - 1, frames) + 0.5).astype(int)


def animate(
    background: TestFunction | Surface,
    runs: Any,
    path: str | Path,
    *,
    fps: float = 20,
    frames: int | None = None,
    log: bool = True,
    tail: int | None = None,
    steps: int = 201,
    labels: Any = None,
    box: Box | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 6.4),
    dpi: float = 100,
) -> Path:
    """Write an animation of the runs moving over the landscape: one frame per step.

    Runs that end early stay at their end (a square, or a cross if they diverged) while the
    others go on. Paths that leave the box are clipped. A counter in the corner gives the step.

    Args:
        background: a `TestFunction` or a 2D `Surface`, as for `plot_paths`.
        runs: as for `plot_paths`: Trajectories, Runs, a Sweep, `(n, 2)` arrays, a list or dict.
        path: `.gif` (Pillow, always available) or `.mp4` (needs ffmpeg on the PATH).
        fps: frames per second.
        frames: at most this many frames, evenly spread over the steps; the final state is
            always the last frame. Default: every step.
        log: log colours, as for `plot_paths`.
        tail: show only each path's last `tail` steps (a comet tail); default the whole path.
        steps, labels, box, title, figsize: as for `plot_paths`.
        dpi: resolution; a frame is `figsize * dpi` pixels.

    Returns:
        The path written.
    """
    from matplotlib.animation import FFMpegWriter, FuncAnimation, PillowWriter

    path = Path(path)
    kind = path.suffix.lower()
    if kind not in FORMATS:
        raise LossatlasError(f"cannot write an animation as {path.name!r}; use one of {FORMATS}")
    if kind == ".mp4" and shutil.which("ffmpeg") is None:
        raise LossatlasError(
            f"cannot write {path.name!r}: ffmpeg is not on the PATH; save as .gif or install ffmpeg"
        )
    number = not isinstance(fps, bool) and isinstance(fps, (int, float, np.number))
    if not number or not (math.isfinite(fps) and fps > 0):
        raise LossatlasError(f"fps must be a positive number, got {fps!r}")
    frames, tail = _count("frames", frames), _count("tail", tail)
    size = check_size(figsize, dpi)

    bg = background_of(background, log=log, steps=steps, box=box, title=title)
    tracks = as_tracks(runs, labels=labels)
    # The same background as plot_paths. The figure keeps matplotlib's inert base canvas (no
    # pyplot): the writers render each frame with Agg, and the redraw FuncAnimation asks for
    # after every frame costs nothing.
    fig, ax = base_figure(bg, size)
    artists = []
    for t, color in zip(tracks, colors(len(tracks))):
        p = t.positions
        line = ax.plot([], [], color=color, lw=1.6, label=t.label, path_effects=halo())[0]
        ax.plot(*p[0], ls="", marker="o", ms=7, mfc=color, mec="k", zorder=5)
        head = ax.plot(*p[0], ls="", marker="o", ms=6, color=color, mec="white", zorder=6)[0]
        style = {"ls": "", "mfc": color, "mec": "k", "zorder": 6, **end_style(t)}
        end = ax.plot(*p[0], clip_on=False, **style)[0]
        artists.append((p, line, head, end))
    lines = [a[1] for a in artists]
    marks = [a for a in ax.lines if not a.get_label().startswith("_") and a not in lines]
    legend(ax, lines + marks, tracks)
    n = max(len(p) for p, *_ in artists)
    box = {"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.5", "alpha": 0.85}
    where = {"transform": ax.transAxes, "ha": "left", "va": "top", "zorder": 8}
    counter = ax.text(0.02, 0.98, "", fontsize=9, bbox=box, **where)

    def draw(k: int) -> list:
        for p, line, head, end in artists:
            m = min(k, len(p) - 1)
            shown = p[0 if tail is None else max(0, m - tail) : m + 1]
            line.set_data(shown[:, 0], shown[:, 1])
            now = last_inside(p[: m + 1], bg.box)  # where it is, or where it left the box
            # Hidden rather than emptied: the layout reads an empty marker as a point at (0, 0).
            head.set_visible(now is not None)
            end.set_visible(now is not None and m == len(p) - 1)
            if now is not None:
                head.set_data([now[0]], [now[1]])
                end.set_data([now[0]], [now[1]])
        counter.set_text(f"step {k} of {n - 1}")
        return [counter, *(a for _, *group in artists for a in group)]

    picked = [int(k) for k in frame_steps(n, frames)]
    draw(picked[-1])  # lay the figure out once, for its final state, then keep that layout:
    fig.draw_without_rendering()  # redoing it every frame is slow, and would make it jitter
    fig.set_layout_engine("none")
    anim = FuncAnimation(fig, draw, frames=picked, cache_frame_data=False, repeat=False)
    writer = PillowWriter(fps=fps) if kind == ".gif" else FFMpegWriter(fps=fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=writer, dpi=dpi)
    return path
