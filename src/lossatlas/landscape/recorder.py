"""Record weights while training: `WeightRecorder` snapshots a model's parameters in a plain
training loop, in memory or streamed row by row to HDF5, for PCA directions (`landscape.pca`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

from lossatlas.core.provenance import versions
from lossatlas.errors import LossatlasError

NamesShapes = tuple[tuple[str, tuple[int, ...]], ...]


FORMAT = "lossatlas.weights"


FORMAT_VERSION = 1


def names_shapes_of(value: Any) -> NamesShapes:
    """`(name, shape)` pairs from pairs, a `{name: shape}` or a `{name: tensor}` mapping."""
    items = value.items() if isinstance(value, Mapping) else value
    try:
        return tuple((str(n), tuple(int(d) for d in getattr(s, "shape", s))) for n, s in items)
    except (TypeError, ValueError):
        raise LossatlasError("names_shapes must be (name, shape) pairs") from None


def flat_size(names_shapes: NamesShapes) -> int:
    return sum(math.prod(s) for _, s in names_shapes)


def unflatten(row: np.ndarray, names_shapes: NamesShapes) -> dict[str, torch.Tensor]:
    pieces = np.split(row, np.cumsum([math.prod(s) for _, s in names_shapes])[:-1])
    return {n: torch.from_numpy(p.reshape(s).copy()) for (n, s), p in zip(names_shapes, pieces)}


class WeightRecorder:
    """Snapshots of a model's parameters during training, as float32 rows.

    Call `record()` once before training and after every optimizer step: the step number
    defaults to the number of earlier calls (so it counts optimizer steps), or is given as
    `record(step=k)`; it must increase. Every call whose step is a multiple of `every` stores
    all parameters, flattened in `model.named_parameters()` order, as one float32 row on the
    CPU. The model is only read (detached copies), never modified. Read back with `len`,
    `steps`, `checkpoints()`, `iter_blocks(rows)`, `rows(start, stop)` and `params(i)`; a file
    holds datasets `weights` (T, P) float32 and `steps` (T,) int64, and can be opened read-only
    with `WeightRecorder.load(path)`.

    Args:
        model: the model being trained.
        every: keep steps that are multiples of this.
        path: stream rows to this HDF5 file (a resizable dataset, flushed after every row, so
            a killed run keeps every row recorded and memory stays small). An existing file is
            appended to if it was recorded from parameters of the same names and shapes.
    """

    def __init__(self, model: nn.Module, *, every: int = 1, path: str | Path | None = None):
        if not isinstance(model, nn.Module):
            raise LossatlasError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise LossatlasError(f"every must be an integer of at least 1, got {every!r}")
        self._model: nn.Module | None = model
        self.every, self.names_shapes = every, names_shapes_of(model.named_parameters())
        if not self.names_shapes:
            raise LossatlasError("the model has no parameters to record")
        self.n_params, self._next, self._file = flat_size(self.names_shapes), 0, None
        self._rows: list[np.ndarray] = []
        self._steps: list[int] = []
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self._open(self.path, "a")

    def _open(self, path: Path, mode: str) -> None:
        if mode == "r" and not path.exists():
            raise LossatlasError(f"no such file: {path}")
        fresh = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            f = h5py.File(path, mode)
        except OSError as exc:
            raise LossatlasError(f"{path} is not a readable HDF5 file ({exc})") from None
        if fresh:
            # Chunks of at most 1 MiB: appending a row rewrites little, reading rows is direct.
            chunks = (max(1, min(1024, (1 << 18) // self.n_params)), min(self.n_params, 1 << 18))
            f.create_dataset(
                "weights", (0, self.n_params), "f4", maxshape=(None, None), chunks=chunks
            )
            f.create_dataset("steps", (0,), "i8", maxshape=(None,), chunks=(1024,))
            f.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, next_step=0)
            f.attrs["names_shapes"] = json.dumps(self.names_shapes)
            f.attrs["versions"] = json.dumps(versions())
            f.flush()
        stored = names_shapes_of(json.loads(f.attrs.get("names_shapes", "[]")))
        problem = None
        if f.attrs.get("format") != FORMAT or f.attrs["format_version"] > FORMAT_VERSION:
            problem = f"{path} is not a lossatlas weights file (or is from a newer lossatlas)"
        elif self._model is not None and stored != self.names_shapes:
            problem = f"{path} was recorded from a model with other parameters; use a new file"
        if problem:
            f.close()
            raise LossatlasError(problem)
        self.names_shapes, self.n_params, self._file = stored, flat_size(stored), f
        self._next = int(f.attrs["next_step"])

    @classmethod
    def load(cls, path: str | Path) -> WeightRecorder:
        """Open a recorded file read-only (no model attached; `record` is refused)."""
        rec = cls.__new__(cls)
        rec._model, rec.every, rec._rows, rec._steps, rec.path = None, 1, [], [], Path(path)
        rec._open(rec.path, "r")
        return rec

    def record(self, step: int | None = None) -> bool:
        """Snapshot the parameters if this step is kept; returns whether it was."""
        if self._model is None:
            raise LossatlasError(f"this recorder was loaded from {self.path}; it is read-only")
        if self.path is not None and self._file is None:
            raise LossatlasError("this recorder is closed")
        step = self._next if step is None else step
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < self._next:
            raise LossatlasError(f"step must be an integer of at least {self._next}, got {step!r}")
        self._next = int(step) + 1
        if step % self.every:
            return False
        if names_shapes_of(self._model.named_parameters()) != self.names_shapes:
            raise LossatlasError("the model's parameters changed since recording began")
        with torch.no_grad():  # one float32 copy on the CPU; the model is only read
            row = torch.cat(
                [p.detach().reshape(-1).to("cpu", torch.float32) for p in self._model.parameters()]
            ).numpy()
        if self._file is None:
            self._rows.append(row)
            self._steps.append(int(step))
            return True
        weights, steps = self._file["weights"], self._file["steps"]
        n = len(steps)  # a row half-written by a killed run (weights resized first) is replaced
        weights.resize(n + 1, axis=0)
        steps.resize((n + 1,))
        weights[n], steps[n] = row, int(step)
        self._file.attrs["next_step"] = self._next
        self._file.flush()
        return True

    def _read(self, fn: Callable[[h5py.File], Any]) -> Any:
        """`fn(file)` on the open file, or on the file reopened read-only once closed."""
        if self._file is not None:
            return fn(self._file)
        with h5py.File(self.path, "r") as f:
            return fn(f)

    def __len__(self) -> int:
        return len(self._rows) if self.path is None else self._read(lambda f: len(f["steps"]))

    @property
    def steps(self) -> np.ndarray:
        """The step number of every recorded row (int64)."""
        if self.path is None:
            return np.array(self._steps, dtype=np.int64)
        return self._read(lambda f: f["steps"][()])

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Recorded rows `start:stop` as a float32 array."""
        if self.path is not None:
            return self._read(lambda f: f["weights"][start : min(stop, len(f["steps"]))])
        if start >= min(stop, len(self._rows)):
            return np.empty((0, self.n_params), np.float32)
        return np.stack(self._rows[start:stop])

    def checkpoints(self) -> np.ndarray:
        """All recorded rows, (T, P) float32 (see `iter_blocks` for files larger than memory)."""
        return self.rows(0, len(self))

    def iter_blocks(self, rows: int) -> Iterator[np.ndarray]:
        """The recorded rows in blocks of at most `rows` rows, read one at a time."""
        for start in range(0, len(self), max(1, int(rows))):
            yield self.rows(start, start + rows)

    def params(self, index: int) -> dict[str, torch.Tensor]:
        """Recorded row `index` as a `{name: tensor}` dict (float32, CPU)."""
        return unflatten(self.rows(index, index + 1)[0], self.names_shapes)

    def close(self) -> None:
        """Close the file (it can still be read: each read reopens it read-only)."""
        if self._file is not None:
            if self._file.mode != "r":
                self._file.attrs["next_step"] = self._next
            self._file.close()
            self._file = None

    def __enter__(self) -> WeightRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WeightRecorder(rows={len(self)}, n_params={self.n_params}, path={self.path})"
