"""What a `Monitor` recorded: one row per record, streamed to HDF5 as it is taken.

File layout (`format = "lossatlas.monitor"`): one resizable 1-D dataset per column of
`COLUMNS` (float64; `step` int64), an optional `weights` dataset `(rows, n_params)` float32 of
the flattened parameters (for a PCA trajectory), and attributes `settings` (JSON) and
`format_version`. Every row is flushed when written, so a killed training keeps every record
taken; `MonitorFile.truncate` drops rows after a resumed step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lossatlas.errors import LossatlasError, one_line

FORMAT = "lossatlas.monitor"
FORMAT_VERSION = 1
COLUMNS = (
    "step", "epoch", "loss", "grad_norm", "lambda_max", "lambda_error", "lr", "momentum",
    "threshold", "trace", "trace_stderr", "val_loss", "gap", "hvps", "seconds",
)  # fmt: skip


def positive(*series: np.ndarray) -> bool:
    """Whether every finite value is above zero (a log axis shows lambda_max far below its
    threshold, e.g. 0.16 against 76, which a linear axis flattens onto zero)."""
    values = np.concatenate([np.asarray(s, dtype=float) for s in series])
    values = values[np.isfinite(values)]
    return bool(values.size) and bool((values > 0).all())


@dataclass(frozen=True, eq=False)
class MonitorRecord:
    """A training run watched by `Monitor`: one entry per record, NaN where not measured.

    Attributes:
        step, epoch: the training step (optimizer steps) and epoch of each record.
        loss, grad_norm: the training loss and its gradient's norm on the monitor's data.
        lambda_max, lambda_error: the top Hessian eigenvalue (the top Ritz value, never above
            it) and its residual bound: an eigenvalue lies within `lambda_error` of it, the
            top one once Lanczos has found the top of the spectrum, which is what `tol` and
            the warm start are for (a Krylov method cannot see a direction its start lacks).
        lr, momentum, threshold: the optimizer's learning rate and heavy-ball momentum, and
            `(2 + 2 momentum) / lr`, the largest `lambda_max` stable at that rate.
        trace, trace_stderr: the Hessian trace (Hutch++) and its standard error, if asked.
        val_loss, gap: the validation loss and `val_loss - loss`, with `val=`.
        hvps, seconds: Hessian-vector products and seconds each record took.
        settings: the monitor's options, the data used, the parameter count.
        path: the file the record streams to (its `weights` are read from there).
    """

    step: np.ndarray
    epoch: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    lambda_max: np.ndarray
    lambda_error: np.ndarray
    lr: np.ndarray
    momentum: np.ndarray
    threshold: np.ndarray
    trace: np.ndarray
    trace_stderr: np.ndarray
    val_loss: np.ndarray
    gap: np.ndarray
    hvps: np.ndarray
    seconds: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def __len__(self) -> int:
        return len(self.step)

    @property
    def ratio(self) -> np.ndarray:
        """`lambda_max / threshold`: 1 is the edge of stability (Cohen et al. 2021)."""
        return self.lambda_max / self.threshold

    def weights(self) -> np.ndarray:
        """The recorded weights, `(rows, n_params)` float32, read from the file."""
        if self.path is None:
            raise LossatlasError("this record has no file: its weights were not kept")
        with h5py.File(self.path, "r") as f:
            if "weights" not in f:
                raise LossatlasError(f"{self.path} holds no weights (Monitor(weights=False))")
            return f["weights"][: len(self)]

    def headline(self) -> dict[str, Any]:
        """Records, the last step, the last loss, `lambda_max`, threshold and their ratio, the
        peak `lambda_max`, the last gap and trace (None when not measured), the products and
        seconds in all."""

        def last(values: np.ndarray) -> float | None:
            finite = values[np.isfinite(values)]
            return float(finite[-1]) if finite.size else None

        lam = self.lambda_max[np.isfinite(self.lambda_max)]
        n = len(self)
        return {
            "records": n,
            "last_step": int(self.step[-1]) if n else None,
            "loss_last": last(self.loss),
            "lambda_max_last": last(self.lambda_max),
            "threshold_last": last(self.threshold),
            "ratio_last": last(self.ratio) if n else None,
            "lambda_max_peak": float(lam.max()) if lam.size else None,
            "gap_last": last(self.gap),
            "trace_last": last(self.trace),
            "hvps": int(np.sum(self.hvps)),
            "seconds": float(np.sum(self.seconds)),
        }


class MonitorFile:
    """The HDF5 file a `Monitor` streams its rows to (append mode; one open handle)."""

    def __init__(self, path: str | Path, settings: dict[str, Any], n_params: int | None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        try:
            self.file = h5py.File(self.path, "a")
        except OSError as exc:
            raise LossatlasError(
                f"cannot open {self.path} for the monitor: {one_line(exc)}"
            ) from None
        f = self.file
        if fresh or len(f.keys()) == 0:
            f.attrs["format"], f.attrs["format_version"] = FORMAT, FORMAT_VERSION
            f.attrs["settings"] = json.dumps(settings)
            for name in COLUMNS:
                dtype = np.int64 if name == "step" else np.float64
                f.create_dataset(name, (0,), maxshape=(None,), dtype=dtype, chunks=(256,))
            if n_params is not None:
                chunk = (1, min(n_params, 1 << 20))
                f.create_dataset(
                    "weights", (0, n_params), maxshape=(None, n_params), dtype=np.float32,
                    chunks=chunk,
                )  # fmt: skip
        elif f.attrs.get("format") != FORMAT:
            self.file.close()
            raise LossatlasError(f"{self.path} is not a monitor file; choose another out=")
        elif n_params is not None and f.get("weights", np.zeros((0, 0))).shape[1] != n_params:
            self.file.close()
            raise LossatlasError(
                f"{self.path} was recorded from another model (weights of another size); "
                "choose another out="
            )
        f.flush()
        # Open handles: looking a dataset up by name costs more than writing a row to it.
        self.columns = {name: f[name] for name in COLUMNS}
        self.weights = f.get("weights")

    @property
    def rows(self) -> int:
        return int(self.columns["step"].shape[0])

    def append(self, row: dict[str, float], weights: np.ndarray | None) -> None:
        n = self.rows
        for name, column in self.columns.items():
            column.resize((n + 1,))
            column[n] = row[name]
        if weights is not None and self.weights is not None:
            self.weights.resize((n + 1, self.weights.shape[1]))
            self.weights[n] = weights
        self.file.flush()

    def truncate(self, last_step: int) -> None:
        """Drop the rows after `last_step` (a training resumed from an earlier checkpoint)."""
        f = self.file
        keep = int(np.searchsorted(f["step"][:], last_step, side="right"))
        for name in [*COLUMNS, *(["weights"] if "weights" in f else [])]:
            f[name].resize((keep, *f[name].shape[1:]))
        f.flush()

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()


def load_monitor(path: str | Path) -> MonitorRecord:
    """The `MonitorRecord` of a monitor file (also what `lossatlas.load` returns for one)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise LossatlasError(f"{path} is not a monitor file")
            n = int(f["step"].shape[0])
            columns = {name: f[name][:n] for name in COLUMNS}
            settings = json.loads(f.attrs["settings"])
    except (OSError, KeyError, ValueError) as exc:
        raise LossatlasError(f"{path} is a damaged monitor file ({one_line(exc)})") from None
    return MonitorRecord(**columns, settings=settings, path=str(path))
