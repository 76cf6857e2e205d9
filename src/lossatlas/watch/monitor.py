"""`Monitor`: the loss landscape's geometry measured at the live weights while a model trains.

Every `every` optimizer steps (and whenever `record` is called, e.g. at the end of an epoch) it
measures, on a fixed subset of the training data: the loss and its gradient's norm; the top
Hessian eigenvalue `lambda_max` by Lanczos, warm-started from the previous record's eigenvector
with a tenth of the unit gradient mixed in (the gradient lies mostly in the top eigenspace, so
a new top direction is in the start even if the old eigenvector has turned into the second
one), stopped when the residual bound meets `tol` (a warm start resolves the top Ritz value
before the others, so a gap estimated from them would be too large); Cohen et al. 2021 follow
`lambda_max` against `2 / lr`, the edge of stability; optionally the Hessian trace (Hutch++,
Meyer et al. 2021) and the loss on validation data (the generalisation gap). It reads the
optimizer's learning rate and momentum at each record, and streams every row (and, for a PCA
trajectory, the flattened weights) to an HDF5 file as it is taken (`watch.record`).

The model is only read: the measurements run on the Problem's own copy at the live weights
(`HessianOperator(problem, at=model)`), with the live BatchNorm statistics copied into that
copy, and draw their random vectors from private generators, so training with and without a
monitor gives bit-identical weights.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lossatlas.core.planning import blas_on_one_thread
from lossatlas.core.problem import Problem
from lossatlas.curvature.edge import lr_and_momentum
from lossatlas.curvature.eigen import hessian_eigen
from lossatlas.curvature.operator import HessianOperator
from lossatlas.curvature.trace import hessian_trace
from lossatlas.errors import LossatlasError, LossatlasWarning, check_count
from lossatlas.watch.record import COLUMNS, MonitorFile, MonitorRecord

WARM_GRADIENT = 0.1  # weight of the unit gradient added to the previous unit eigenvector


def _threshold(lr: float, momentum: float) -> float:
    """`(2 + 2 momentum) / lr`, the largest stable `lambda_max`; inf at lr 0 (a schedule's
    end), NaN without a learning rate."""
    if lr == 0:
        return math.inf
    return (2.0 + 2.0 * momentum) / lr


class Monitor:
    """Records the loss, gradient norm, `lambda_max` (and trace, validation gap) during training.

    Call `step()` after every optimizer step (it records when the step count is a multiple of
    `every`), or `record()` to record now. `history` returns what was recorded, `last` the
    latest row; `lossatlas.load(out)` reads the file.

    Args:
        problem: the loss and (training) data; the Hessian is taken on it.
        model: the module being trained; default the one `problem` was built on
            (`problem.model`), so `Problem(net, ...)` watches `net` as it trains.
        every: record every `every` optimizer steps (steps `every`, `2 every`, ...).
        out: stream the rows to this HDF5 file (appended to when resuming).
        optimizer: where the learning rate and momentum are read at each record; or `lr` and
            `momentum` fixed.
        data: samples of `problem` measured on (a fixed subset drawn with `seed`), or "all".
        max_hvps: the most Hessian-vector products one `lambda_max` may take (the budget of
            a record; `tol` usually stops it first).
        tol: relative accuracy of `lambda_max` (a bound of its error, see `hessian_eigen`).
        trace: Hessian-vector products for a trace estimate per record (0: none).
        val: a Problem on validation data, for the gap `val_loss - loss`.
        val_data: samples of `val` used ("all" by default).
        weights: keep the flattened weights of every record in `out` (for a PCA trajectory).
        seed: seed of the subsets and of the first start vector.
    """

    def __init__(
        self,
        problem: Problem,
        *,
        model: nn.Module | None = None,
        every: int = 50,
        out: str | Path | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float | None = None,
        momentum: float = 0.0,
        data: int | str = 512,
        max_hvps: int = 20,
        tol: float = 1e-2,
        trace: int = 0,
        val: Problem | None = None,
        val_data: int | str = "all",
        weights: bool = True,
        seed: int = 0,
    ) -> None:
        if not isinstance(problem, Problem):
            raise LossatlasError(f"problem must be a lossatlas Problem, got {type(problem)}")
        self.problem, self.model = problem, problem.model if model is None else model
        self.every = check_count("every", every)
        self.max_hvps = check_count("max_hvps", max_hvps, 4)
        if optimizer is not None and lr is not None:
            raise LossatlasError("give optimizer= (its lr is read) or lr=, not both")
        self.optimizer, self.lr, self.momentum, self.tol = optimizer, lr, momentum, tol
        self.trace = 0 if not trace else check_count("trace", trace, 3)
        self.val, self.val_data, self.seed = val, val_data, seed
        self.data = data if data == "all" else min(int(data), problem.n_samples)
        # One operator per data set, moved along the training run (a bad option fails here)
        self._op = self._operator(problem, self.data)
        self._val_op = None if val is None else self._operator(val, val_data)
        self.settings = {
            "every": every, "data": self.data, "max_hvps": max_hvps, "tol": tol,
            "trace": self.trace, "val_data": val_data if val is not None else None,
            "seed": seed, "n_params": problem.n_params, "weights": weights,
        }  # fmt: skip
        n_params = problem.n_params if weights else None
        self.file = None if out is None else MonitorFile(out, self.settings, n_params)
        self.keep_weights = weights
        self.steps_seen = 0
        self._rows: list[dict[str, float]] = []
        self._v0: np.ndarray | None = None

    def _operator(self, problem: Problem, data: Any) -> HessianOperator:
        return HessianOperator(problem, at=self.model, data=data, seed=self.seed)

    def _moved(self, op: HessianOperator) -> HessianOperator:
        """`op` at the live weights and BatchNorm statistics."""
        self._sync_buffers(op.problem)
        op.move_to(self.model)
        return op

    def _sync_buffers(self, problem: Problem) -> None:
        """The live model's BatchNorm statistics into the problem's copy (read, not moved)."""
        live = dict(self.model.named_buffers())
        with torch.no_grad():
            for name, buffer in problem.buffers.items():
                if name in live and live[name].shape == buffer.shape:
                    buffer.copy_(live[name])

    def _lr_momentum(self) -> tuple[float, float]:
        if self.optimizer is not None:
            return lr_and_momentum(self.optimizer)
        return (math.nan if self.lr is None else float(self.lr)), float(self.momentum)

    def step(self, step: int | None = None, *, epoch: float | None = None) -> bool:
        """Call after every optimizer step: records when the step count (this call's number,
        or `step` as a training loop counts it) is a multiple of `every`. Returns whether it
        recorded."""
        self.steps_seen = self.steps_seen + 1 if step is None else int(step)
        if self.steps_seen % self.every:
            return False
        self.record(self.steps_seen, epoch=epoch)
        return True

    @blas_on_one_thread
    def record(self, step: int | None = None, *, epoch: float | None = None) -> dict[str, float]:
        """Measure now, at the live weights; returns the row (also appended to `out`)."""
        step = self.steps_seen if step is None else int(step)
        if self._rows and step <= self._rows[-1]["step"]:
            return self._rows[-1]  # this step is already recorded (an epoch end at a record)
        began = time.perf_counter()
        op = self._moved(self._op)
        hvps = op.hvps
        op.gradient()  # builds the kept graphs: the loss, gradient and products share one pass
        loss, gradient = op.loss_and_grad()
        v0 = None
        if self._v0 is not None:  # the last eigenvector, a little of the gradient mixed in
            v0 = self._v0 / np.linalg.norm(self._v0)
            size = float(gradient.norm())
            if math.isfinite(size) and size > 0:
                v0 = v0 + WARM_GRADIENT * (gradient / size).cpu().numpy()
        with warnings.catch_warnings():  # a budget that runs out is recorded, not warned
            warnings.simplefilter("ignore", LossatlasWarning)
            eig = hessian_eigen(
                op, k=1, tol=self.tol, v0=v0, max_hvps=self.max_hvps, refine=v0 is None
            )
        lam = float(eig.eigenvalues[0])
        if math.isfinite(lam):
            # float32, as `state_dict` saves it: a resumed run starts from the same vector
            self._v0 = eig.eigenvectors[:, 0].astype(np.float32)
        trace = stderr = math.nan
        if self.trace:
            t = hessian_trace(op, n_vectors=self.trace, seed=self.seed + step, quiet=True)
            trace, stderr = t.estimate, t.stderr
        val_loss = math.nan
        if self.val is not None:
            val_loss = self._moved(self._val_op).metrics()["loss"]
        lr, momentum = self._lr_momentum()
        row = {
            "step": step, "epoch": math.nan if epoch is None else float(epoch), "loss": loss,
            "grad_norm": float(gradient.double().norm()), "lambda_max": lam,
            "lambda_error": float(eig.settings["error_bounds"][0]), "lr": lr,
            "momentum": momentum, "threshold": _threshold(lr, momentum), "trace": trace,
            "trace_stderr": stderr, "val_loss": val_loss, "gap": val_loss - loss,
            "hvps": float(op.hvps - hvps), "seconds": time.perf_counter() - began,
        }  # fmt: skip
        op.release()  # no graph held while training goes on
        self._rows.append(row)
        if self.file is not None:
            self.file.append(row, self._flat_weights() if self.keep_weights else None)
        return row

    def _flat_weights(self) -> np.ndarray:
        params = dict(self.model.named_parameters())
        return torch.cat(
            [params[n].detach().reshape(-1).float().cpu() for n in self.problem.params]
        ).numpy()

    @property
    def last(self) -> dict[str, float] | None:
        """The latest row recorded (None before the first)."""
        return dict(self._rows[-1]) if self._rows else None

    @property
    def history(self) -> MonitorRecord:
        """What was recorded so far (in memory; the weights stay in the file)."""
        columns = {name: np.array([r[name] for r in self._rows], dtype=float) for name in COLUMNS}
        columns["step"] = columns["step"].astype(np.int64)
        path = None if self.file is None else str(self.file.path)
        return MonitorRecord(**columns, settings=dict(self.settings), path=path)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed training needs: the rows, the step count and the last eigenvector
        (float32: a warm start needs no more)."""
        v0 = None if self._v0 is None else torch.from_numpy(self._v0.copy())
        return {"rows": [dict(r) for r in self._rows], "steps_seen": self.steps_seen, "v0": v0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`: rows the file holds after its step are dropped."""
        self._rows = [dict(r) for r in state["rows"]]
        self.steps_seen = int(state["steps_seen"])
        self._v0 = None if state.get("v0") is None else np.asarray(state["v0"], dtype=np.float32)
        if self.file is not None:
            self.file.truncate(self.steps_seen)

    def plane(self, *, steps: int = 21, out: str | Path | None = None, quiet: bool = True) -> Any:
        """The loss over the PCA plane of the recorded weights, with the training path on it.

        The plane is spanned by the two principal directions of the records' weights, centred
        on the last (Li et al. 2018, sec. 7; `landscape.pca.pca_directions`), at the live
        BatchNorm statistics; the path's points are the records' coordinates, and
        `settings["off_plane"]` their distances from the plane (how much of the path the picture
        leaves out). Needs `out` and `weights=True` and at least 3 records.

        Args:
            steps: grid points per direction.
            out: where to save the surface; default `<out>.plane.h5` beside the monitor's file
                (what `lossatlas report monitor.h5` draws).
            quiet: no progress bar.
        """
        from dataclasses import replace

        from lossatlas.landscape.grid import surface
        from lossatlas.landscape.pca import pca_directions
        from lossatlas.landscape.record import with_paths

        if self.file is None or not self.keep_weights:
            raise LossatlasError("the PCA plane needs the recorded weights: Monitor(out=...)")
        if len(self._rows) < 3:
            raise LossatlasError(f"the PCA plane needs 3 records or more, got {len(self._rows)}")
        self.file.file.flush()
        names_shapes = [(n, tuple(t.shape)) for n, t in self.problem.params.items()]
        pca = pca_directions(self.history.weights(), n=2, names_shapes=names_shapes)
        spans = []
        for j in range(2):  # the path with a margin, and the origin (the last record)
            lo, hi = min(pca.coords[:, j].min(), 0.0), max(pca.coords[:, j].max(), 0.0)
            spans.append((lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo)))
        self._sync_buffers(self.problem)
        out = Path(out) if out is not None else self.file.path.with_suffix(".plane.h5")
        plane = surface(
            self.problem, pca.directions, steps, spans, center=pca.center, quiet=quiet,
            out=out, overwrite=True,
        )  # fmt: skip
        plane = with_paths(plane, {"training (monitor records)": pca.coords})
        settings = {**plane.settings, "off_plane": [float(d) for d in pca.off_plane]}
        plane = replace(plane, settings=settings)
        plane.save(out)
        return plane

    def close(self) -> None:
        """Close the file (rows are flushed as they are written; closing is for tidiness)."""
        if self.file is not None:
            self.file.close()
