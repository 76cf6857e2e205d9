"""`LossatlasCallback` for the Hugging Face `Trainer`: a `Monitor` driven by its training loop.

    problem = la.Problem(model, None, batches, weight=la.token_count())  # the model's own loss
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      callbacks=[LossatlasCallback(problem, every=50, out="monitor.h5")])
    trainer.train()
    la.load("monitor.h5")                                                 # a MonitorRecord

The Problem is built on the model object the Trainer trains (or one of its submodules): the
monitor reads its live weights. Everything runs on the main process
(`state.is_world_process_zero`); the model is only read.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossatlas.core.problem import Problem
from lossatlas.errors import LossatlasError
from lossatlas.integrations import check_options, check_trained
from lossatlas.integrations.tensorboard import log_scalars, log_trajectory
from lossatlas.watch.monitor import Monitor
from lossatlas.watch.record import MonitorRecord

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ModuleNotFoundError as exc:  # only the framework itself missing, not a broken one
    if (exc.name or "").split(".")[0] != "transformers":
        raise
    raise LossatlasError(
        "lossatlas.integrations.transformers needs transformers: pip install transformers"
    ) from None

STATE_KEY = "lossatlas"  # where the monitor's state sits in `TrainerState.stateful_callbacks`
JSON_V0_LIMIT = 100_000  # the last eigenvector is kept in trainer_state.json up to this size
RUN = "lossatlas"  # the TensorBoard run (a folder beside the Trainer's runs)


def tensorboard_dir(args: TrainingArguments) -> str | None:
    """Where the callback writes TensorBoard events: a run `lossatlas` in the folder of the
    Trainer's own runs (`$TENSORBOARD_LOGGING_DIR`, else `<output_dir>/runs`); None unless
    `"tensorboard"` is in `args.report_to`."""
    report_to = args.report_to or []
    if isinstance(report_to, str):
        report_to = [report_to]
    if "tensorboard" not in report_to:
        return None
    root = os.getenv("TENSORBOARD_LOGGING_DIR") or os.path.join(args.output_dir, "runs")
    return os.path.join(os.path.expanduser(root), RUN)


def json_state(state: dict[str, Any]) -> dict[str, Any]:
    """A monitor state as JSON values: rows of floats (null for NaN: not measured), the step
    count, and the last eigenvector as a list while it has at most `JSON_V0_LIMIT`
    entries (else null)."""
    v0 = state.get("v0")
    if v0 is not None:
        v0 = None if v0.numel() > JSON_V0_LIMIT else [float(x) for x in v0.tolist()]
    rows = [
        {k: None if math.isnan(v) else float(v) for k, v in row.items()} for row in state["rows"]
    ]
    return {"rows": rows, "steps_seen": int(state["steps_seen"]), "v0": v0}


class LossatlasCallback(TrainerCallback):
    """Records the loss landscape's geometry while a Hugging Face `Trainer` trains.

    At train begin (main process only) it builds `Monitor(problem, every=every, out=out,
    optimizer=<the Trainer's optimizer>, **monitor_options)`; after every optimizer step it
    calls `monitor.step(state.global_step, epoch=state.epoch)`, which records when the step is
    a multiple of `every`. At train end the file is closed.

    TensorBoard: when `"tensorboard"` is in `args.report_to`, the callback opens its own
    `SummaryWriter` in a run `lossatlas` beside the Trainer's runs (`<output_dir>/runs/lossatlas`,
    or `$TENSORBOARD_LOGGING_DIR/lossatlas`): the Trainer's `TensorBoardCallback` keeps its
    writer to itself and logs only every `logging_steps`, and a second event file in its own
    folder would stop TensorBoard from following the first. Every record writes the scalars
    `lossatlas/lambda_max`, `lossatlas/threshold` (`(2 + 2 momentum) / lr`),
    `lossatlas/grad_norm` and, when measured, `lossatlas/trace` and `lossatlas/gap`; at train
    end, with at least 3 records and their weights in `out`, the PCA trajectory over its loss
    surface (figure `lossatlas/trajectory`, an 11 x 11 grid: 121 loss evaluations of all the
    Problem's data) and that surface as a mesh (`lossatlas/surface`); `weights=False` keeps no
    weights and so skips them.

    Checkpoints: the monitor's state (rows, step count, and its last eigenvector up to
    `JSON_V0_LIMIT` weights; a larger model's first record after a resume starts Lanczos
    afresh) is kept in `TrainerState.stateful_callbacks` under `"lossatlas:<out's file name>"`
    (`"lossatlas"` without `out`), which the Trainer writes to every checkpoint's
    `trainer_state.json`; `trainer.train(resume_from_checkpoint=...)` continues the record from
    it (rows the file holds after the checkpoint's step are dropped). It is not an
    `ExportableState` callback: the Trainer rebuilds those from JSON arguments
    (`restore_callback_states_from_checkpoint=True`), and a Problem is not JSON. With that
    option the Trainer logs that it ignores the "lossatlas:..." entry; the callback still
    resumes.

    Args:
        problem: the loss and data, built on the model the Trainer trains (the same object);
            `Problem(model, None, batches)` takes the model's own loss on dict batches.
        every: record every `every` optimizer steps.
        out: the HDF5 file the rows (and weights, for the PCA trajectory) stream to.
        **monitor_options: more `Monitor` options (`data`, `tol`, `max_hvps`, `trace`, `val`,
            `weights`, `seed`, ...). `optimizer=` or `lr=` given here replace the Trainer's
            optimizer as the source of the learning rate.

    Raises:
        LossatlasError: not a Problem, an unknown option, or (at train begin) a Problem whose
            model is not part of the model being trained.
    """

    def __init__(
        self, problem: Problem, *, every: int = 50, out: str | Path | None = None, **monitor_options
    ) -> None:
        check_options(problem, every, out, monitor_options)
        self.problem, self.every, self.out = problem, every, out
        self.monitor_options = monitor_options
        self.monitor: Monitor | None = None
        self._running = False  # a monitor built at this training's start, its file open
        self._writer: Any = None
        self._saved: dict[str, Any] | None = None  # the monitor's state as JSON values

    @property
    def history(self) -> MonitorRecord | None:
        """What was recorded (None before training begins)."""
        return None if self.monitor is None else self.monitor.history

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Build the monitor; when resuming, continue from the checkpoint's state."""
        if not state.is_world_process_zero:
            return
        options = dict(self.monitor_options)
        if kwargs.get("model") is not None:
            check_trained(self.problem, options.get("model"), kwargs["model"])
        if "optimizer" not in options and "lr" not in options:
            if kwargs.get("optimizer") is None:
                raise LossatlasError(
                    "the Trainer passed no optimizer to read the lr from; give lr="
                )
            options["optimizer"] = kwargs["optimizer"]
        self.monitor = Monitor(self.problem, every=self.every, out=self.out, **options)
        self._running = True
        saved = (state.stateful_callbacks or {}).get(self._key())
        if state.global_step > 0 or saved:
            self.monitor.load_state_dict(restored(saved, state.global_step))
        self._publish(state, True)
        log_dir = tensorboard_dir(args)
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=log_dir)

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """After an optimizer step: `monitor.step(global_step)`, and its scalars if it recorded."""
        if not self._running or self.monitor is None:
            return
        recorded = self.monitor.step(state.global_step, epoch=state.epoch)
        if recorded and self._writer is not None:
            log_scalars(self._writer, self.monitor.last, state.global_step)
            self._writer.flush()
        self._publish(state, recorded)

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Close the file; with TensorBoard, log the PCA trajectory and its surface."""
        if not self._running or self.monitor is None:
            return
        self.monitor.close()
        self._running = False
        if self._writer is not None:
            log_trajectory(self._writer, self.monitor.history, self.problem)
            self._writer.close()
            self._writer = None

    def _key(self) -> str:
        return STATE_KEY if self.out is None else f"{STATE_KEY}:{Path(self.out).name}"

    def _publish(self, state: TrainerState, changed: bool) -> None:
        """Put the monitor's state where the Trainer's next checkpoint saves it (after every
        step, before the Trainer decides to save); converted to JSON only when it `changed`."""
        if changed or self._saved is None:
            self._saved = json_state(self.monitor.state_dict())
        self._saved["steps_seen"] = int(state.global_step)
        if state.stateful_callbacks is None:
            state.stateful_callbacks = {}
        state.stateful_callbacks[self._key()] = self._saved


def restored(saved: dict[str, Any] | None, global_step: int) -> dict[str, Any]:
    """The monitor state to resume at `global_step` from the checkpoint's entry (none saved:
    no rows, so the file's rows after that step are dropped and recording goes on)."""
    if not saved:
        return {"rows": [], "steps_seen": int(global_step), "v0": None}
    rows = [
        {k: math.nan if v is None else float(v) for k, v in r.items()}
        for r in saved["rows"]
        if r["step"] <= global_step
    ]
    v0 = saved.get("v0")
    v0 = None if v0 is None else torch.from_numpy(np.asarray(v0, dtype=np.float64))
    return {"rows": rows, "steps_seen": int(global_step), "v0": v0}
