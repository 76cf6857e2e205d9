"""Provenance shared by every result record: package versions, and values as plain JSON."""

from __future__ import annotations

import math
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    __version__ = version("lossatlas")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"


def versions() -> dict[str, str]:
    """Versions of lossatlas, torch, numpy and Python, for provenance."""
    return {
        "lossatlas": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def jsonable(value: Any) -> Any:
    """A value as JSON types (for `--json` and `to_dict`): NaN and inf become None, numpy
    scalars and arrays plain numbers, paths strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
