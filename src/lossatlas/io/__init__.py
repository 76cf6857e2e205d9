"""Files: any result record as HDF5, surfaces as VTK for ParaView, checkpoints read weights-only."""

from __future__ import annotations

from lossatlas.io.checkpoints import from_checkpoints, read_state_dict
from lossatlas.io.storage import load, save
from lossatlas.io.vtk import export_vtp

__all__ = [
    "export_vtp",
    "from_checkpoints",
    "load",
    "read_state_dict",
    "save",
]
