"""Runs to draw, normalised: Trajectories, Runs, Sweeps, arrays or dicts of them as `Track`s.

Labels come from the runs' own settings (optimizer and lr, plus schedule, options, start or seed
where runs differ in them), so a legend tells runs apart without the user naming them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from lossatlas.descent.functions import Box
from lossatlas.descent.run import Trajectory
from lossatlas.descent.sweeps import Run, Sweep
from lossatlas.errors import LossatlasError


class Track(NamedTuple):
    """One path to draw: legend label, `(n, 2)` positions (non-finite rows NaN), status, loss."""

    label: str
    positions: np.ndarray | None
    status: str | None
    loss: np.ndarray | None


def run_items(runs: Any, name: str | None = None) -> list[tuple[str | None, Any]]:
    """Flatten runs into `(given label, Run | Trajectory | array)` pairs."""
    if isinstance(runs, Mapping):
        out = []
        for key, value in runs.items():
            got = run_items(value)
            out += [
                (str(key) if len(got) == 1 else f"{key} {i}", v) for i, (_, v) in enumerate(got)
            ]
        return out
    if isinstance(getattr(runs, "sweep", None), Sweep):  # a Comparison
        runs = runs.sweep
    if isinstance(runs, (Run, Trajectory)):
        return [(name, runs)]
    if isinstance(runs, Sweep):
        return [(None, r) for r in runs]
    if isinstance(runs, (list, tuple)) and runs and not _numeric(runs):
        return [item for r in runs for item in run_items(r)]
    try:
        arr = np.asarray(runs.detach().cpu() if isinstance(runs, torch.Tensor) else runs, float)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.ndim == 3:
        return [(None, a) for a in arr]
    if arr.ndim != 2 or arr.size == 0:
        raise LossatlasError(
            "runs must be Trajectories, Runs, a Sweep, a dict or list of them, or (n, 2) "
            f"arrays of positions; got {type(runs).__name__}"
            + (f" of shape {arr.shape}" if arr.size else "")
        )
    return [(name, arr)]


def _numeric(seq: Any) -> bool:
    """Whether a list is a list of points (numbers), rather than a list of runs."""
    first = seq[0]
    return isinstance(first, (int, float)) or (
        isinstance(first, (list, tuple)) and all(isinstance(v, (int, float)) for v in first)
    )


def _fields(obj: Any) -> dict[str, Any]:
    """What can tell runs apart, for labels."""
    t = obj.trajectory if isinstance(obj, Run) else obj
    if not isinstance(t, Trajectory):
        return {}
    s = t.settings
    start = s.get("start")
    if isinstance(obj, Run):
        start = f"start {obj.start}"
    elif isinstance(start, list):
        start = "from (" + ", ".join(f"{v:.3g}" for v in start) + ")"
    return {
        "optimizer": obj.optimizer if isinstance(obj, Run) else s.get("optimizer", "?"),
        "lr": f"lr={obj.lr if isinstance(obj, Run) else s.get('lr', math.nan):g}",
        "schedule": s.get("schedule") and f"{s['schedule']} schedule",
        "options": ", ".join(f"{k}={v}" for k, v in s.get("optimizer_kwargs", {}).items()),
        "start": start,
        "seed": f"seed {s.get('seed')}",
    }


def as_tracks(runs: Any, *, labels: Any = None, dims: int | None = 2) -> list[Track]:
    """Normalise runs to `Track`s, labelled by optimizer and lr (and whatever else differs).

    Args:
        runs: a Trajectory, a Run, a Sweep (or Comparison), `(n, 2)` positions, a list of these,
            or a dict `{label: any of these}`.
        labels: one legend label per track, overriding the automatic ones.
        dims: coordinates each position must have (None: positions are not needed).
    """
    items = run_items(runs)
    fields = [_fields(obj) for _, obj in items]
    auto = [[f["optimizer"], f["lr"]] if f else [] for f in fields]
    for k in ("schedule", "options", "start", "seed"):  # only where it tells runs apart
        groups: dict[str, set[str]] = {}
        for a, f in zip(auto, fields):
            groups.setdefault(str(a), set()).add(str(f.get(k)))
        if any(len(g) > 1 for g in groups.values()):
            auto = [[*a, f[k]] if f and f[k] else a for a, f in zip(auto, fields)]
    tracks = []
    for i, ((given, obj), words) in enumerate(zip(items, auto), 1):
        t = obj.trajectory if isinstance(obj, Run) else obj
        traj = isinstance(t, Trajectory)
        label = given or ", ".join(words) or f"path {i}"
        if traj and t.diverged:
            label += " (diverged)"
        pos = t.positions if traj else t
        if dims is not None:
            if pos is None:
                raise LossatlasError(f"{label}: no positions were recorded; rerun with them kept")
            if pos.shape[1] != dims:
                raise LossatlasError(
                    f"{label}: positions have {pos.shape[1]} coordinates, need {dims}; project "
                    "them (e.g. onto PCA directions) and pass an (n, 2) array"
                )
            pos = np.where(np.isfinite(pos).all(1, keepdims=True), pos, np.nan)
        loss = np.asarray(t.loss, float) if traj else None
        tracks.append(Track(label, pos, t.status if traj else None, loss))
    if labels is not None:
        labels = [str(v) for v in labels]
        if len(labels) != len(tracks):
            raise LossatlasError(f"got {len(labels)} labels for {len(tracks)} runs")
        tracks = [t._replace(label=s) for t, s in zip(tracks, labels)]
    names = [t.label for t in tracks]
    for i, t in enumerate(tracks):  # repeated labels get a number, or the legend would lie
        if names.count(t.label) > 1:
            tracks[i] = t._replace(label=f"{t.label} #{names[: i + 1].count(t.label)}")
    return tracks


def last_inside(p: np.ndarray, box: Box) -> np.ndarray | None:
    """The last finite position; for a run that ended outside the box, where it last left it."""
    lo, hi = np.array(box).T
    ok = np.isfinite(p).all(1)
    inside = ok & (p >= lo).all(1) & (p <= hi).all(1)
    if not ok.any() or not inside.any():
        return None
    last = np.flatnonzero(ok)[-1]
    if inside[last]:
        return p[last]
    j = np.flatnonzero(inside[:last])[-1]
    a, d = p[j], p[j + 1] - p[j]
    if not np.isfinite(d).all():
        return a
    with np.errstate(divide="ignore", invalid="ignore"):  # where the segment meets the edge
        t = np.where(d > 0, (hi - a) / d, np.where(d < 0, (lo - a) / d, np.inf))
    return a + min(1.0, float(t.min())) * d
