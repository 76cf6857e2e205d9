"""Watching training: `Monitor` measures the loss, gradient norm, `lambda_max` (against the
edge of stability `2 / lr`), the trace and the generalisation gap at the live weights every few
steps, streaming them to HDF5; `lossatlas.integrations` drives it from Lightning and the
Hugging Face Trainer."""

from __future__ import annotations

from lossatlas.watch.checkpoints import watch_checkpoints
from lossatlas.watch.monitor import Monitor
from lossatlas.watch.record import MonitorRecord, load_monitor

__all__ = ["Monitor", "MonitorRecord", "load_monitor", "watch_checkpoints"]
