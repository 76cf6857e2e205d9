"""The record classes a file may name, by stable public name, and where lossatlas 0.1.0 kept them.

Files name a record's class by its public name (`lossatlas.Sweep`), not by the module that
happens to define it, so moving code never orphans a file. Files written by lossatlas 0.1.0
name `module:QualName` in its flat layout (`lossatlas.sweep:Sweep`); `LEGACY_MODULES` lists
those modules and the classes each held, so such files keep loading.
"""

from __future__ import annotations

from lossatlas.core.directions import Directions
from lossatlas.curvature import (
    AdaptiveSharpness,
    AverageSharpness,
    Density,
    EdgeHistory,
    Eigen,
    EpsilonSharpness,
    SharpnessReport,
    StableLR,
    Trace,
)
from lossatlas.descent import Comparison, Run, Sweep, Trajectory
from lossatlas.errors import LossatlasError
from lossatlas.landscape import PCA, InputSurface, PathLosses, Surface
from lossatlas.minima import (
    BarrierMatrix,
    Curve,
    CurveLosses,
    FlatSharpStudy,
    Interpolation,
    MinimaComparison,
)
from lossatlas.training import TrainedModel
from lossatlas.watch import MonitorRecord

RECORDS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Directions,
        Surface,
        InputSurface,
        PCA,
        PathLosses,
        Trajectory,
        Run,
        Sweep,
        Comparison,
        Eigen,
        Trace,
        Density,
        StableLR,
        EpsilonSharpness,
        AdaptiveSharpness,
        AverageSharpness,
        EdgeHistory,
        SharpnessReport,
        TrainedModel,
        Interpolation,
        BarrierMatrix,
        Curve,
        CurveLosses,
        MinimaComparison,
        FlatSharpStudy,
        MonitorRecord,
    )
}

LEGACY_MODULES: dict[str, tuple[str, ...]] = {
    "lossatlas.directions": ("Directions",),
    "lossatlas.result": ("Surface",),
    "lossatlas.inputs": ("InputSurface",),
    "lossatlas.trajectory": ("PCA", "PathLosses"),
    "lossatlas.descent": ("Trajectory",),
    "lossatlas.sweep": ("Run", "Sweep"),
    "lossatlas.compare": ("Comparison",),
    "lossatlas.spectrum": ("Eigen",),
    "lossatlas.trace": ("Trace",),
    "lossatlas.density": ("Density",),
    "lossatlas.stability": ("StableLR",),
    "lossatlas.sharpness": ("EpsilonSharpness", "AdaptiveSharpness"),
    "lossatlas.sharpness_average": ("AverageSharpness",),
    "lossatlas.edge": ("EdgeHistory",),
    "lossatlas.curvature": ("SharpnessReport",),
    "lossatlas.training": ("TrainedModel",),
    "lossatlas.interpolation": ("Interpolation", "BarrierMatrix"),
    "lossatlas.curves": ("Curve", "CurveLosses"),
    "lossatlas.minima": ("MinimaComparison",),
    "lossatlas.flat_sharp": ("FlatSharpStudy",),
}


def record_name(cls: type) -> str | None:
    """The stable name files store for `cls` (`lossatlas.Sweep`), or None if it is no record."""
    return f"lossatlas.{cls.__name__}" if RECORDS.get(cls.__name__) is cls else None


def record_class(name: str) -> type:
    """The class a file names: `lossatlas.Sweep`, or 0.1.0's `lossatlas.sweep:Sweep`."""
    module, colon, qualname = name.partition(":")
    if colon:  # the 0.1.0 layout
        known = qualname in LEGACY_MODULES.get(module, ())
    else:
        module, _, qualname = name.rpartition(".")
        known = module == "lossatlas" and qualname in RECORDS
    if not known:
        raise LossatlasError(f"refusing to build {name!r}: not a lossatlas record class")
    return RECORDS[qualname]
