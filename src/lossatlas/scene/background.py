"""The landscape behind a figure: a test function's or a 2D surface's losses on a grid, as coloured.

Shared by the static figures (`lossatlas.plot`) and the HTML report (`lossatlas.report`), so both
show the same colours, offsets and marks. Log colours need positive values: a function that goes
below zero (Styblinski-Tang, six-hump camel) is shown as `loss - min_value` when its minimum is
known, on a linear scale otherwise; zeros (a minimum on the grid) are raised to the smallest
positive value shown.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lossatlas.descent.functions import Box, TestFunction, check_box
from lossatlas.errors import LossatlasError
from lossatlas.landscape.inputs import InputSurface
from lossatlas.landscape.record import Surface
from lossatlas.scene.labels import describe, direction_labels, has_center

MINIMUM = {"marker": "*", "ms": 15, "mfc": "white", "mec": "k", "mew": 1.0}


CENTRE = {"marker": "X", "ms": 10, "mfc": "white", "mec": "k"}


@dataclass
class Background:
    """A 2D landscape as figures colour it: the grid, the colour scale, marks and labels."""

    xs: np.ndarray
    ys: np.ndarray
    z: np.ma.MaskedArray  # values as coloured; rows follow y, as matplotlib expects
    log: bool
    offset: float  # subtracted from losses before colouring
    floor: float  # smallest coloured value (log), zeros are raised to it
    label: str
    box: Box
    axes: tuple[str, str]
    title: str
    marks: list[tuple[np.ndarray, str, dict]]
    loss_at: Callable[[np.ndarray], np.ndarray]  # raw loss at (n, 2) points

    def shade(self, loss: np.ndarray) -> np.ndarray:
        """Losses as coloured (shifted; floored and log10 when `log`), NaN where non-finite."""
        v = np.asarray(loss, float) - self.offset
        v = np.where(np.isfinite(v), v, np.nan)
        return np.log10(np.maximum(v, self.floor)) if self.log else v


def background_of(background: Any, *, log: bool, steps: int, box: Any, title: str | None):
    if isinstance(background, TestFunction):
        f = background
        box = f.box if box is None else check_box(box)
        xs, ys, raw = f.grid(steps, box)
        minima = [m for m in f.minima]
        label = "global minimum" if len(minima) == 1 else "global minima"
        marks = [(np.array(minima), label, MINIMUM)] if minima else []

        def loss_at(p: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return f(torch.from_numpy(np.ascontiguousarray(p, dtype=np.float64))).numpy()

        axes, default, min_value = ("x", "y"), f"{f.name}: {f.formula}", f.min_value
    elif (isinstance(background, Surface) and background.ndim == 2) or isinstance(
        background, InputSurface
    ):
        from scipy.interpolate import RegularGridInterpolator

        s = background
        xs, ys = (np.asarray(c, float) for c in s.coords)
        raw = s.loss.T
        grid_box = ((xs.min(), xs.max()), (ys.min(), ys.max()))
        box = grid_box if box is None else check_box(box)
        interp = RegularGridInterpolator((xs, ys), s.loss, bounds_error=False)
        loss_at, marks = interp, []
        if isinstance(s, Surface):
            low = s.argmin() if np.isfinite(s.loss).any() else (0.0, 0.0)
            if any(low):  # as in save_figure: the star would hide the centre's cross
                marks.append((np.array([low]), "lowest loss on the grid", MINIMUM))
            if has_center(s) and s.directions.settings.get("kind") != "models-plane":
                what = (
                    "the weights" if s.settings.get("center", "weights") == "weights" else "c = 0"
                )
                marks.append((np.zeros((1, 2)), f"centre ({what})", CENTRE))
            axes, default = direction_labels(s.directions.settings), describe(s)
        else:
            axes, default = tuple(s.axes), "loss over the input plane"
        min_value = math.nan
    else:
        what = type(background).__name__
        if isinstance(background, Surface):
            what = f"a {background.ndim}D Surface"
        raise LossatlasError(f"background must be a TestFunction or a 2D Surface, got {what}")
    finite = raw[np.isfinite(raw)]
    if finite.size == 0:
        raise LossatlasError("the background has no finite loss to plot")
    offset, label, floor = 0.0, "loss", 0.0
    if log and finite.min() < 0:
        if math.isfinite(min_value) and min_value <= finite.min():
            offset, label = min_value, f"loss − min (min = {min_value:.4g})"
        else:
            log, label = False, "loss (linear: it goes below 0)"
    positive = finite[finite - offset > 0] - offset
    log = log and positive.size > 0
    if log:  # at most 12 decades: deeper holes would squash the colours of everything else
        floor = max(positive.min(), positive.max() * 1e-12)
        label += ", log scale"
    z = raw - offset
    z = np.ma.masked_invalid(np.maximum(z, floor) if log else z)
    title = default if title is None else title
    return Background(xs, ys, z, log, offset, floor, label, box, axes, title, marks, loss_at)
