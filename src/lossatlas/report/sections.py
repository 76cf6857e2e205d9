"""One report section per result: its headline numbers, figures, tables and settings.

`parts(result, ...)` turns a result into `Parts`; `report.write_report` lays them out. Every
section ends with the settings and provenance of the result its figures were drawn from.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossatlas.core.provenance import jsonable
from lossatlas.curvature.density import Density
from lossatlas.curvature.summary import SharpnessReport
from lossatlas.descent.comparison import Comparison
from lossatlas.descent.functions import FUNCTIONS, TestFunction
from lossatlas.descent.run import STATUSES, Trajectory
from lossatlas.descent.sweeps import Run, Sweep
from lossatlas.errors import LossatlasError
from lossatlas.landscape.inputs import InputSurface
from lossatlas.landscape.record import Surface
from lossatlas.minima.comparison import MinimaComparison
from lossatlas.minima.curves import CurveLosses
from lossatlas.minima.flat_sharp import FlatSharpStudy
from lossatlas.minima.interpolation import BarrierMatrix, Interpolation
from lossatlas.report import barriers as rb
from lossatlas.report import curves as rc
from lossatlas.report import figures as rf
from lossatlas.report import minima as rm
from lossatlas.report import monitor as rmon
from lossatlas.report.parts import Parts
from lossatlas.scene.background import background_of
from lossatlas.scene.labels import describe
from lossatlas.scene.tracks import as_tracks
from lossatlas.watch.record import MonitorRecord

RUNS = (Sweep, Comparison, Trajectory, Run)
GRID_STEPS = 121  # a function's background grid in the browser


def parts(result: Any, *, log: bool, background: Any = None) -> Parts:
    """The section of one result (a Surface, runs, a SharpnessReport, a Density, ...)."""
    if isinstance(result, Surface):
        return _surface(result, log)
    if isinstance(result, dict) and result and all(isinstance(s, Surface) for s in result.values()):
        return rm.side_by_side({str(k): v for k, v in result.items()}, log)
    if isinstance(result, RUNS) or (
        isinstance(result, (list, tuple)) and result and all(isinstance(r, RUNS) for r in result)
    ):
        return _runs(result, log, background)
    if isinstance(result, SharpnessReport):
        return _sharpness(result)
    if isinstance(result, Density):
        return _density(result)
    if isinstance(result, InputSurface):
        return _input(result, log)
    if isinstance(result, Interpolation) or (
        isinstance(result, (list, tuple))
        and result
        and all(isinstance(r, Interpolation) for r in result)
    ):
        return rb.interpolation(
            list(result) if isinstance(result, (list, tuple)) else [result], log
        )
    if isinstance(result, BarrierMatrix):
        return rb.barriers(result)
    if isinstance(result, CurveLosses):
        return rb.curve(result, log)
    if isinstance(result, MinimaComparison):
        return rm.comparison(result)
    if isinstance(result, FlatSharpStudy):
        return rm.flat_sharp(result, log)
    if isinstance(result, MonitorRecord):
        return rmon.monitor(result)
    raise LossatlasError(
        f"cannot report a {type(result).__name__}; reports take Surfaces (or a dict of them on "
        "one grid, shown side by side), runs, curvature and density records, InputSurfaces, "
        "Interpolations, BarrierMatrix, CurveLosses, MinimaComparison, FlatSharpStudy and "
        "MonitorRecord"
    )


def _surface(s: Surface, log: bool) -> Parts:
    if s.ndim not in (1, 2):
        raise LossatlasError(f"can only report 1D or 2D surfaces, this one is {s.ndim}D")
    text = describe(s)
    out = Parts(text[0].upper() + text[1:])
    head = s.headline()
    out.cards["loss at the centre"] = head["loss_center"]
    out.cards.update({f"{m} at the centre": head[f"{m}_center"] for m in s.metrics})
    out.cards["lowest loss"] = head["loss_min"]
    where = head["argmin"]
    d = s.directions.settings
    if where and d.get("kind") == "axis":  # say where in weights, not in offsets
        where = [w0 + c for w0, c in zip(d["origin_values"], where)]
        out.cards["at weights"] = ", ".join(f"{e} = {w:.4g}" for e, w in zip(d["entries"], where))
    elif where:
        out.cards["at"] = "(" + ", ".join(f"{c:.3g}" for c in where) + ")"
    out.cards["non-finite points"] = head["nonfinite"] or None
    if not np.isfinite(s.loss).any():  # nothing to draw: say so instead of failing
        out.cards["note"] = f"no finite loss at any of the {s.loss.size} points: nothing to draw"
    elif s.ndim == 1:
        caption = "Loss along the line; the dotted line is the centre. Gaps are non-finite losses."
        if s.slopes is not None:
            caption += " Right: its slope from autograd, with a finite-difference check."
        out.figures.append((rc.line_figure(s, log=log), caption))
    else:
        bg = background_of(s, log=log, steps=0, box=None, title="loss")
        tracks = as_tracks(s.paths, dims=2) if s.paths else []
        contour, surf = rf.field_figures(bg, tracks)
        caption = (
            "Loss on the plane through the weights (cross) spanned by the two directions; the "
            "star is the lowest loss on the grid"
            + ("; lines are paths projected onto the plane" if tracks else "")
            + ". Gaps are non-finite losses."
        )
        out.figures += [
            (contour, caption),
            (surf, "The same loss as a 3D surface; drag to rotate."),
        ]
        for name, grid in s.metrics.items():
            out.figures.append((rf.metric_figure(bg, name, grid), f"The metric {name!r}."))
    directions = dict(s.directions.settings)
    if s.ndim == 2:
        directions["cosine(d1, d2)"] = s.directions.cosine()
    out.settings = {"directions": directions, "grid": s.settings, "provenance": s.provenance}
    return out


def _runs(result: Any, log: bool, background: Any) -> Parts:
    sweep = result.sweep if isinstance(result, Comparison) else result
    items = list(sweep) if isinstance(sweep, (Sweep, list, tuple)) else [sweep]
    trajectories = [getattr(r, "trajectory", r) for r in items]
    objective = {t.settings.get("objective") for t in trajectories}
    name = objective.pop() if len(objective) == 1 else None
    if background is None and isinstance(name, str) and name in FUNCTIONS:
        background = FUNCTIONS[name]
    out = Parts(f"Optimizer runs on {name}" if name else "Optimizer runs")
    heads = [] if isinstance(sweep, Sweep) else [t.headline() for t in trajectories]
    if isinstance(result, (Sweep, Comparison)):
        counts = result.headline()
    else:
        counts = {status: sum(h["status"] == status for h in heads) for status in STATUSES}
        counts["runs"] = len(heads)
    out.cards["runs"] = counts["runs"]
    for status in STATUSES:
        out.cards[status.replace("_", " ")] = counts[status]
    drawn = result  # a comparison draws each optimizer at its best learning rate
    if isinstance(result, Comparison):
        drawn = [r for name in result.best_lr for r in result.runs(name)]
    tracks = as_tracks(drawn, dims=None)
    if isinstance(background, (TestFunction, Surface)) and all(
        t.positions is not None and t.positions.shape[1] == 2 for t in tracks
    ):
        bg = background_of(background, log=log, steps=GRID_STEPS, box=None, title=None)
        contour, surf = rf.field_figures(bg, tracks)
        caption = "Every run over the loss's contours: a circle marks the start, a square the end"
        out.figures.append((contour, caption + ", a cross a diverged run."))
        out.figures.append((surf, "The runs on the loss surface in 3D; drag to rotate."))
    out.figures.append((rc.history_figure(tracks, log=log), "Loss against step for every run."))
    if isinstance(sweep, Sweep):
        rows = sweep.table()
    else:
        keys = ("optimizer", "status", "steps_taken", "final_loss", "best_loss", "lr")
        rows = [{k: h[k] for k in keys} for h in heads]
    if isinstance(result, Comparison):
        out.tables.append(list(result.table()))
    out.tables.append(rows)
    shared = getattr(sweep, "settings", None) or trajectories[0].settings
    out.settings = {
        "runs": shared,
        "provenance": getattr(sweep, "provenance", None) or trajectories[0].provenance,
    }
    return out


def _sharpness(r: SharpnessReport) -> Parts:
    h = r.headline()
    d = jsonable(h)  # NaN and inf as None: such cards are left out
    out = Parts("Curvature and sharpness")
    out.cards = {
        "loss": d["loss"],
        **d["metrics"],
        "lambda_max": d["lambda_max"],
        "trace": None if d["trace"] is None else f"{h['trace']:.4g} ± {h['trace_stderr']:.2g}",
        "largest stable lr": d["max_stable_lr"],
    }
    out.figures.append(
        (
            rc.spectrum_figure(r.eigen.eigenvalues, r.eigen.residuals),
            "Top Hessian eigenvalues by Lanczos; error bars are the residuals ||Hv − λv||.",
        )
    )
    out.tables.append(
        [
            {"measure": "lambda_max (top Hessian eigenvalue)", "value": h["lambda_max"]},
            {
                "measure": "trace of the Hessian (Hutch++)",
                "value": h["trace"],
                "uncertainty": f"stderr {h['trace_stderr']:.2g}",
            },
            {
                "measure": "largest stable lr, (2 + 2 momentum) / lambda_max",
                "value": h["max_stable_lr"],
                "uncertainty": r.stable.describe(),
            },
            {
                "measure": "epsilon-sharpness (Keskar et al. 2017, %)",
                "value": h["epsilon_sharpness"],
                "uncertainty": f"loss increase {h['epsilon_loss_increase']:.4g}",
            },
            {
                "measure": "average sharpness (Gaussian perturbations)",
                "value": h["average_sharpness"],
                "uncertainty": f"stderr {h['average_sharpness_stderr']:.2g}",
            },
            {"measure": "adaptive sharpness (Kwon et al. 2021)", "value": h["adaptive_sharpness"]},
        ]
    )
    out.settings = {
        "settings": jsonable(r.settings),
        "provenance": {"hvps": h["hvps"], "seconds": h["seconds"], "versions": r.versions},
    }
    return out


def _density(density: Density) -> Parts:
    out = Parts("Hessian spectral density")
    head = density.headline()
    out.cards = {
        "lambda_min (Ritz)": head["lambda_min"],
        "lambda_max (Ritz)": head["lambda_max"],
        "HVPs": head["hvps"],
    }
    caption = "Gaussian-smoothed spectral density from stochastic Lanczos quadrature (log scale)."
    out.figures.append((rc.density_figure(density), caption))
    out.settings = {
        "settings": density.settings,
        "provenance": {
            "hvps": density.hvps,
            "seconds": density.seconds,
            "versions": density.versions,
        },
    }
    return out


def _input(s: Any, log: bool) -> Parts:
    out = Parts("Loss as a function of the input")
    bg = background_of(s, log=log, steps=0, box=None, title=None)
    tracks = []
    contour, surf = rf.field_figures(bg, tracks)
    if s.points is not None and len(s.points):
        import plotly.graph_objects as go

        contour.add_trace(
            go.Scatter(
                x=s.points[:, 0],
                y=s.points[:, 1],
                mode="markers",
                name="data",
                marker={"size": 4, "color": "white", "opacity": 0.6, "line": {"width": 0.5}},
            )
        )
    out.figures += [
        (contour, "Loss over the input plane; dots are data points."),
        (surf, "The same as a 3D surface; drag to rotate."),
    ]
    if s.prediction is not None:
        prediction = rf.metric_figure(bg, "prediction", s.prediction)
        out.figures.append((prediction, "The model's prediction over the same plane."))
    head = s.headline()
    if head["loss_min"] is not None:
        out.cards["lowest loss"] = head["loss_min"]
        out.cards["highest loss"] = head["loss_max"]
    out.settings = {"settings": s.settings, "provenance": s.provenance}
    return out
