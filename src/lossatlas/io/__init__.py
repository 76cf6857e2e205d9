"""Files: any result record as HDF5 (by stable class names), a 2D surface as VTK for ParaView."""

from __future__ import annotations

from lossatlas.io.storage import load, save
from lossatlas.io.vtk import export_vtp

__all__ = [
    "export_vtp",
    "load",
    "save",
]
