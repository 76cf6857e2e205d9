"""A small built-in trainer, so that one network trained several times gives several minima.

`train` runs mini-batch training of a private copy of a Problem's model (BatchNorm and dropout
in training mode, so running statistics are learned) with the Problem's loss function, and
returns a `TrainedModel`: the final weights and buffers, a loss history, the settings and their
provenance. The user's model and the Problem are never modified, and the global torch RNG is
left as it was (every draw comes from private generators seeded from `seed`). `train_runs` runs a
grid of seeds, batch sizes, learning rates, optimizers and schedules; `from_checkpoints` brings
in models trained elsewhere. `lossatlas.minima.comparison` compares the minima.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossatlas.core import batches as B
from lossatlas.core.problem import Problem
from lossatlas.core.provenance import versions
from lossatlas.descent.optimizers import check_lr, make_schedule, resolve_optimizer
from lossatlas.errors import LossatlasError, check_count, check_seed, one_line
from lossatlas.training.loop import (
    batch_order,
    check_same_model,
    fresh_init,
    run_steps,
    threads_for,
)

INITS = ("fresh", "problem")


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """One trained (or loaded) model: its weights, how training went, and how it was asked for.

    Attributes:
        name: a label for tables and legends.
        params, buffers: `{name: tensor}` on the CPU, in the problem's dtype (buffers hold e.g.
            BatchNorm's running statistics).
        history: float64 arrays. `step` (1..steps), `loss` (the mini-batch loss of each step,
            before its update) and `lr`; `eval_step` (0, every `eval_every` steps, and the last)
            with `train_loss`, `train_<metric>` over all training data and, with a validation
            problem, `val_loss`, `val_<metric>` (weights in evaluation mode). Empty for a
            checkpoint.
        settings: everything asked (seed, steps, batch size, optimizer and options, lr, schedule,
            init, eval_every, ...), or the checkpoint's source.
        provenance: seconds, steps taken, samples seen, status, device, dtype, versions.
    """

    name: str
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    history: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def problem(self, problem: Problem) -> Problem:
        """`problem` (or a validation problem of the same model) at these weights and buffers."""
        return at(problem, self)

    def flat(self) -> torch.Tensor:
        """All parameters flattened in order, as a float64 CPU vector."""
        return torch.cat([p.reshape(-1).to(torch.float64) for p in self.params.values()])

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the name, the number of parameters, the steps taken and how
        training ended, the last mini-batch loss, and the last evaluation's `train_loss`,
        `val_loss` and metrics (`train_<metric>`, `val_<metric>`); None where not recorded
        (a checkpoint has no history)."""
        out: dict[str, Any] = {
            "name": self.name,
            "n_params": int(sum(p.numel() for p in self.params.values())),
            "steps": self.provenance.get("steps"),
            "status": self.provenance.get("status"),
            "final_batch_loss": _last(self.history.get("loss")),
            "train_loss": _last(self.history.get("train_loss")),
            "val_loss": _last(self.history.get("val_loss")),
        }
        for key, values in self.history.items():
            if key.startswith(("train_", "val_")) and key not in out:
                out[key] = _last(values)
        out["seconds"] = self.provenance.get("seconds")
        return out

    def __repr__(self) -> str:
        loss = self.history.get("train_loss")
        tail = f", train_loss={float(loss[-1]):.4g}" if loss is not None and len(loss) else ""
        return f"TrainedModel(name={self.name!r}, n_params={self.flat().numel()}{tail})"


def _last(values: np.ndarray | None) -> float | None:
    """The last entry of a history array as a float, None for a missing or empty one."""
    return float(values[-1]) if values is not None and len(values) else None


def at(problem: Problem, trained: TrainedModel) -> Problem:
    """`problem.with_weights(trained.params, trained.buffers)`: the problem at those weights."""
    if not isinstance(trained, TrainedModel):
        raise LossatlasError(f"expected a TrainedModel, got {type(trained).__name__}")
    return problem.with_weights(trained.params, trained.buffers)


def stream_seeds(seed: int) -> tuple[int, int, int]:
    """The seeds of the initialisation, the batch order and the global RNG inside a run.

    `numpy.random.SeedSequence(seed).generate_state(3, numpy.uint64)`: independent streams.
    """
    return tuple(
        int(s) for s in np.random.SeedSequence(check_seed(seed)).generate_state(3, np.uint64)
    )


def train(
    problem: Problem,
    *,
    seed: int = 0,
    steps: int = 500,
    batch_size: int | None = 32,
    optimizer: str | type[torch.optim.Optimizer] = "sgd",
    lr: float = 0.1,
    optimizer_kwargs: Mapping[str, Any] | None = None,
    schedule: Any = None,
    schedule_kwargs: Mapping[str, Any] | None = None,
    init: str = "fresh",
    val: Problem | None = None,
    eval_every: int | None = None,
    name: str | None = None,
    threads: int | None = 1,
) -> TrainedModel:
    """Mini-batch training of a private copy of `problem`'s model; returns a `TrainedModel`.

    Every step draws `batch_size` samples without replacement from all of the problem's data
    (in-memory batches are concatenated; a DataLoader is read once and held in memory): an epoch
    is a permutation from the order generator, taken in consecutive slices, and a new
    permutation starts when fewer than `batch_size` samples are left (the rest is skipped). A
    full batch (`batch_size` None or the number of samples) takes all samples in order, with no
    draw: plain gradient descent. The model is in training mode (BatchNorm uses and learns batch
    statistics, dropout is active), the loss is the problem's, and the optimizer is stepped with
    a closure (so L-BFGS works, on the step's batch). Schedules step after every step.

    Randomness: `stream_seeds(seed)` seeds the initialisation (`init_layers` on a
    `torch.Generator().manual_seed(s_init)`; other layers' `reset_parameters` under a forked
    global RNG), the batch order (`torch.randperm(n, generator=...manual_seed(s_order))`) and the
    global RNG inside the run (dropout), which is restored afterwards. The run is deterministic.

    Args:
        problem: model, loss and training data (its weights are the start with `init="problem"`).
        seed: the seed of every draw.
        steps: optimizer steps, at least 1.
        batch_size: samples per step, from 1 to the number of samples; None for all.
        optimizer: a name from `lossatlas.descent.optimizers.OPTIMIZERS` or an Optimizer subclass.
        lr: learning rate; `optimizer_kwargs` more options.
        schedule, schedule_kwargs: a learning-rate schedule as in `lossatlas.descent.run.descend`.
        init: `"fresh"` (a seeded default initialisation) or `"problem"` (the problem's weights
            and buffers).
        val: a validation problem of the same model (its data, loss and metrics).
        eval_every: steps between full evaluations on the training (and validation) data,
            also done at step 0 and the last step; default `steps // 10` (at least 1).
        name: the label; default optimizer, lr, batch size and seed.
        threads: CPU threads while training (`torch.set_num_threads`, restored afterwards).
            One by default: as fast for small models, immune to a busy machine, and the
            weights then do not depend on the number of cores. None keeps torch's setting.

    Raises:
        LossatlasError: a bad argument, or a model or loss that fails in training.
    """
    seed = check_seed(seed)
    steps = check_count("steps", steps, 1)
    samples = B.Samples(problem.batches())  # joined into one batch where shapes allow
    n = samples.n
    batch = n if batch_size is None else check_count("batch_size", batch_size, 1)
    if batch > n:
        raise LossatlasError(f"batch_size={batch} exceeds the {n} samples of the problem")
    label, cls, opt_kwargs = resolve_optimizer(optimizer, optimizer_kwargs)
    lr = check_lr(lr)
    if init not in INITS:
        raise LossatlasError(f"init must be one of {INITS}, got {init!r}")
    every = max(1, steps // 10) if eval_every is None else check_count("eval_every", eval_every, 1)
    if val is not None:
        check_same_model(problem, val)
    if threads is not None:
        check_count("threads", threads, 1)
    s_init, s_order, s_global = stream_seeds(seed)

    began = time.perf_counter()
    model = copy.deepcopy(problem.module)
    device = problem.device
    cuda = [device.index or 0] if device.type == "cuda" else []
    with threads_for(threads, device), torch.random.fork_rng(devices=cuda):
        if init == "fresh":
            fresh_init(model, s_init)
        torch.default_generator.manual_seed(s_global)  # dropout; not other devices' generators
        if cuda:
            with torch.cuda.device(cuda[0]):
                torch.cuda.manual_seed(s_global)
        try:
            opt = cls(model.parameters(), lr=lr, **opt_kwargs)
        except (TypeError, ValueError) as exc:
            raise LossatlasError(
                f"optimizer {label!r} rejects its options: {one_line(exc)}"
            ) from exc
        scheduler, schedule_label = (None, None)
        if schedule is not None:
            scheduler, schedule_label = make_schedule(schedule, schedule_kwargs, opt, lr, steps)
        order = batch_order(n, batch, s_order, device)
        data = (problem, val, samples)
        history, status = run_steps(model, opt, scheduler, data, order, steps, every)
    seconds = time.perf_counter() - began
    taken = len(history["step"])
    settings = {
        "seed": seed,
        "steps": steps,
        "batch_size": batch,
        "optimizer": label,
        "optimizer_class": f"{cls.__module__}.{cls.__qualname__}",
        "optimizer_kwargs": opt_kwargs,
        "lr": lr,
        "schedule": schedule_label,
        "schedule_kwargs": dict(schedule_kwargs or {}),
        "init": init,
        "eval_every": every,
        "threads": threads,
        "val": val is not None,
        "sampling": "full batch" if batch == n else "epochs without replacement, rest dropped",
    }
    provenance = {
        "seconds": seconds,
        "steps": taken,
        "samples_seen": taken * batch,
        "epochs": taken * batch / n,
        "status": status,
        "n_samples": n,
        "n_params": problem.n_params,
        "device": str(device),
        "dtype": str(problem.dtype),
        "versions": versions(),
    }
    params = {k: p.detach().to("cpu").clone() for k, p in model.named_parameters()}
    buffers = {k: b.detach().to("cpu").clone() for k, b in model.named_buffers()}
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in history.items()}
    label_name = name or f"{label} lr {lr:g} batch {batch} seed {seed}"
    return TrainedModel(label_name, params, buffers, arrays, settings, provenance)
