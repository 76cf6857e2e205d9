"""`LossatlasCallback` for Lightning: a `Monitor` driven by the Trainer, with TensorBoard scalars.

    problem = la.Problem(module.net, nn.CrossEntropyLoss(), (X, y))   # or la.Problem(module, ...)
    trainer = L.Trainer(max_steps=1000, callbacks=[LossatlasCallback(problem, every=50,
                                                                     out="monitor.h5")])
    trainer.fit(module, loader)
    la.load("monitor.h5")                                             # a MonitorRecord

The Problem is built on the module being trained (the LightningModule or any of its
submodules): the monitor reads that object's live weights. Everything runs on the main process
(`trainer.is_global_zero`); the model is only read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lossatlas.core.problem import Problem
from lossatlas.errors import LossatlasError
from lossatlas.integrations import check_options, check_trained
from lossatlas.integrations.tensorboard import log_scalars, log_trajectory
from lossatlas.watch.monitor import Monitor
from lossatlas.watch.record import MonitorRecord

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
    from lightning.pytorch.loggers import TensorBoardLogger
except ModuleNotFoundError as exc:  # only the framework itself missing, not a broken one
    if (exc.name or "").split(".")[0] != "lightning":
        raise
    raise LossatlasError(
        "lossatlas.integrations.lightning needs Lightning: pip install 'lossatlas[lightning]'"
    ) from None


def plain_state(state: dict[str, Any]) -> dict[str, Any]:
    """A monitor state with plain Python floats (loadable by `torch.load(weights_only=True)`)."""
    rows = [{k: float(v) for k, v in row.items()} for row in state["rows"]]
    return {"rows": rows, "steps_seen": int(state["steps_seen"]), "v0": state.get("v0")}


class LossatlasCallback(Callback):
    """Records the loss landscape's geometry while a Lightning Trainer trains (see `Monitor`).

    At fit start (main process only) it builds `Monitor(problem, every=every, out=out,
    optimizer=<the trainer's first optimizer>, **monitor_options)`; after every optimizer step
    it calls `monitor.step(trainer.global_step, epoch=trainer.current_epoch)`, which records
    when the step is a multiple of `every` (with gradient accumulation, once per optimizer
    step). At train end (or on an exception) the file is closed.

    TensorBoard: when the trainer has a `TensorBoardLogger`, every record writes the scalars
    `lossatlas/lambda_max`, `lossatlas/threshold` (the stability bound `(2 + 2 momentum) / lr`),
    `lossatlas/grad_norm` and, when measured, `lossatlas/trace` and `lossatlas/gap`; at train
    end, with at least 3 records and their weights in `out`, the PCA trajectory over its loss
    surface (figure `lossatlas/trajectory`, an 11 x 11 grid: 121 loss evaluations of all the
    Problem's data) and that surface as a mesh (`lossatlas/surface`); `weights=False` keeps no
    weights and so skips them.

    Checkpoints: `state_dict()` is the monitor's (its rows, step count and last eigenvector),
    saved by Lightning in every checkpoint, so `trainer.fit(..., ckpt_path=...)` continues the
    record: rows the file holds after the checkpoint's step are dropped. Use one callback per
    training run; a fit that is not resumed appends to an existing `out`, as `Monitor` does.

    Args:
        problem: the loss and data, built on the module being trained: the LightningModule
            (`Problem(module, ...)`, its `forward`) or a submodule (`Problem(module.net, ...)`).
        every: record every `every` optimizer steps.
        out: the HDF5 file the rows (and weights, for the PCA trajectory) stream to.
        **monitor_options: more `Monitor` options (`data`, `tol`, `max_hvps`, `trace`, `val`,
            `weights`, `seed`, ...). `optimizer=` or `lr=` given here replace the trainer's
            optimizer as the source of the learning rate.

    Raises:
        LossatlasError: not a Problem, an unknown option, or (at fit start) a Problem whose
            model is not part of the module being trained.
    """

    def __init__(
        self, problem: Problem, *, every: int = 50, out: str | Path | None = None, **monitor_options
    ) -> None:
        check_options(problem, every, out, monitor_options)
        self.problem, self.every, self.out = problem, every, out
        self.monitor_options = monitor_options
        self.monitor: Monitor | None = None
        self._running = False  # a monitor built at this fit's start, its file open
        self._pending: dict[str, Any] | None = None  # checkpoint state loaded before fit start
        self._last_step: int | None = None
        self._writer: Any = None

    @property
    def state_key(self) -> str:
        """Where Lightning keeps this callback's state in a checkpoint: one per `every` and
        file name (not its folder, so that a moved run still resumes)."""
        out = None if self.out is None else Path(self.out).name
        return self._generate_state_key(every=self.every, out=out)

    @property
    def history(self) -> MonitorRecord | None:
        """What was recorded (None before the first fit starts)."""
        return None if self.monitor is None else self.monitor.history

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Build the monitor (main process), with the checkpoint's state when resuming."""
        if not trainer.is_global_zero:
            return
        options = dict(self.monitor_options)
        check_trained(self.problem, options.get("model"), pl_module)
        if "optimizer" not in options and "lr" not in options:
            if not trainer.optimizers:
                raise LossatlasError(
                    "the trainer has no optimizer to read the learning rate from; give lr="
                )
            options["optimizer"] = trainer.optimizers[0]
        self.monitor = Monitor(self.problem, every=self.every, out=self.out, **options)
        self._running = True
        if self._pending is not None:
            self.monitor.load_state_dict(self._pending)
            self._pending = None
        self._writer = next(
            (lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None
        )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Note the step training starts from (restored by now when resuming)."""
        self._last_step = int(trainer.global_step)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """After an optimizer step: `monitor.step(global_step)`, and its scalars if it recorded."""
        if not self._running or self.monitor is None:
            return
        step = int(trainer.global_step)
        if step == self._last_step:  # an accumulation batch: no optimizer step since the last
            return  # (nor before the first: training starts at `on_train_start`'s step)
        self._last_step = step
        if self.monitor.step(step, epoch=trainer.current_epoch) and self._writer is not None:
            log_scalars(self._writer, self.monitor.last, step)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close the file; with TensorBoard, log the PCA trajectory and its surface."""
        if not self._running or self.monitor is None:
            return
        self.monitor.close()
        self._running = False
        if self._writer is not None:
            log_trajectory(self._writer, self.monitor.history, self.problem)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Close the file (every row written so far is kept)."""
        if self._running and self.monitor is not None:
            self.monitor.close()
        self._running = False

    def state_dict(self) -> dict[str, Any]:
        """The monitor's state (rows, step count, last eigenvector) for Lightning's checkpoints."""
        if self._pending is not None:  # loaded, not yet applied
            return dict(self._pending)
        return {} if self.monitor is None else plain_state(self.monitor.state_dict())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a checkpoint's state (applied at fit start if the monitor is not built
        yet); the file's rows after the checkpoint's step are dropped."""
        if not state_dict:
            return
        if self._running and self.monitor is not None:
            self.monitor.load_state_dict(state_dict)
            self._last_step = None
        else:
            self._pending = dict(state_dict)
