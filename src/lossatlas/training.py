"""A small built-in trainer, so that one network trained several times gives several minima.

`train` runs mini-batch training of a private copy of a Problem's model (BatchNorm and dropout
in training mode, so running statistics are learned) with the Problem's loss function, and
returns a `TrainedModel`: the final weights and buffers, a loss history, the settings and their
provenance. The user's model and the Problem are never modified, and the global torch RNG is
left as it was (every draw comes from private generators seeded from `seed`). `train_runs` runs a
grid of seeds, batch sizes, learning rates, optimizers and schedules; `from_checkpoints` brings
in models trained elsewhere. `lossatlas.minima` compares the minima.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import lr_scheduler

from lossatlas.engine import LossatlasWarning, one_line
from lossatlas.errors import LossatlasError
from lossatlas.optimizers import check_lr, make_schedule, resolve_optimizer
from lossatlas.problem import Problem, batch_value
from lossatlas.problem_common import check_seed, init_layers
from lossatlas.result import versions

INITS = ("fresh", "problem")
EVAL_BATCH = 4096  # samples per batch when evaluating an (X, y) pair


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

    def __repr__(self) -> str:
        loss = self.history.get("train_loss")
        tail = f", train_loss={float(loss[-1]):.4g}" if loss is not None and len(loss) else ""
        return f"TrainedModel(name={self.name!r}, n_params={self.flat().numel()}{tail})"


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


def check_same_model(problem: Problem, other: Problem, what: str = "val") -> None:
    """A one-line error unless `other` has the problem's parameter names and shapes."""
    if not isinstance(other, Problem):
        raise LossatlasError(f"{what} must be a lossatlas.Problem, got {type(other).__name__}")
    mine = {k: tuple(v.shape) for k, v in problem.params.items()}
    theirs = {k: tuple(v.shape) for k, v in other.params.items()}
    if mine != theirs:
        diff = sorted(set(mine) ^ set(theirs)) or sorted(k for k in mine if mine[k] != theirs[k])
        raise LossatlasError(f"{what} has other parameters than the problem (e.g. {diff[0]!r})")


def evaluate(problem: Problem, module: nn.Module | None = None) -> dict[str, float]:
    """Loss and metrics over all of `problem`'s data, sample-weighted as in the engine.

    `module` (default the problem's own) is put in evaluation mode for the pass and restored.
    """
    module = problem.module if module is None else module
    device, dtype = next(module.parameters()).device, next(module.parameters()).dtype
    was_training, total = module.training, {"loss": 0.0, **dict.fromkeys(problem.metrics, 0.0)}
    module.eval()
    try:
        with torch.no_grad():
            for x, y in problem.batches(EVAL_BATCH):
                x = x.to(device, dtype) if x.is_floating_point() else x.to(device)
                y = y.to(device, dtype) if y.is_floating_point() else y.to(device)
                out = module(x)
                total["loss"] += float(batch_value(problem.loss_fn(out, y))) * (
                    problem.batch_weight(x.shape[0]) / problem.loss_divisor
                )
                for k, fn in problem.metrics.items():
                    total[k] += float(batch_value(fn(out, y))) * x.shape[0] / problem.n_samples
    except Exception as exc:
        raise LossatlasError(f"the model fails on the data: {one_line(exc)}") from exc
    finally:
        module.train(was_training)
    return total


def _count(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise LossatlasError(f"{name} must be an integer of at least {least}, got {value!r}")
    return int(value)


def _all_data(problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample, concatenated (a DataLoader-backed problem is read once, here)."""
    xs, ys = zip(*problem.batches())
    try:
        return torch.cat(xs), torch.cat(ys)
    except RuntimeError as exc:
        raise LossatlasError(f"the batches cannot be joined for training: {one_line(exc)}") from exc


def _fresh(model: nn.Module, seed: int) -> None:
    """Default initialisation of every layer, all draws from `seed` (global RNG forked)."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    cpu = model.to("cpu")
    init_layers(cpu, gen)  # Linear, Conv2d, BatchNorm1d/2d from the private generator
    covered = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)
    for name, layer in cpu.named_modules():
        own = list(layer.parameters(recurse=False))
        if not own or isinstance(layer, covered):
            continue
        if not callable(getattr(layer, "reset_parameters", None)):
            raise LossatlasError(
                f"init='fresh' cannot re-initialise module {name!r} ({type(layer).__name__} has "
                "no reset_parameters); pass init='problem' to start from the problem's weights"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (), generator=gen)))
            layer.reset_parameters()
    model.to(device)


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
        optimizer: a name from `lossatlas.optimizers.OPTIMIZERS` or an Optimizer subclass.
        lr: learning rate; `optimizer_kwargs` more options.
        schedule, schedule_kwargs: a learning-rate schedule as in `lossatlas.descent.descend`.
        init: `"fresh"` (a seeded default initialisation) or `"problem"` (the problem's weights
            and buffers).
        val: a validation problem of the same model (its data, loss and metrics).
        eval_every: steps between full evaluations on the training (and validation) data,
            also done at step 0 and the last step; default `steps // 10` (at least 1).
        name: the label; default optimizer, lr, batch size and seed.

    Raises:
        LossatlasError: a bad argument, or a model or loss that fails in training.
    """
    seed = check_seed(seed)
    steps = _count("steps", steps, 1)
    n = problem.n_samples
    batch = n if batch_size is None else _count("batch_size", batch_size, 1)
    if batch > n:
        raise LossatlasError(f"batch_size={batch} exceeds the {n} samples of the problem")
    label, cls, opt_kwargs = resolve_optimizer(optimizer, optimizer_kwargs)
    lr = check_lr(lr)
    if init not in INITS:
        raise LossatlasError(f"init must be one of {INITS}, got {init!r}")
    every = max(1, steps // 10) if eval_every is None else _count("eval_every", eval_every, 1)
    if val is not None:
        check_same_model(problem, val)
    s_init, s_order, s_global = stream_seeds(seed)

    began = time.perf_counter()
    x_all, y_all = _all_data(problem)
    model = copy.deepcopy(problem.module)
    device = problem.device
    cuda = [device.index or 0] if device.type == "cuda" else []
    history: dict[str, list[float]] = {"step": [], "loss": [], "lr": [], "eval_step": []}
    status = "finished"
    with torch.random.fork_rng(devices=cuda):
        if init == "fresh":
            _fresh(model, s_init)
        torch.manual_seed(s_global)
        try:
            opt = cls(model.parameters(), lr=lr, **opt_kwargs)
        except (TypeError, ValueError) as exc:
            raise LossatlasError(
                f"optimizer {label!r} rejects its options: {one_line(exc)}"
            ) from exc
        scheduler, schedule_label = (None, None)
        if schedule is not None:
            scheduler, schedule_label = make_schedule(schedule, schedule_kwargs, opt, lr, steps)
        order_gen = torch.Generator().manual_seed(s_order)
        order, pos = None, n

        def record(step: int) -> None:
            history["eval_step"].append(step)
            for prefix, source in (("train", problem), ("val", val)):
                if source is not None:
                    for k, v in evaluate(source, model).items():
                        history.setdefault(f"{prefix}_{k}", []).append(v)

        record(0)
        model.train()
        for step in range(1, steps + 1):
            if batch == n:
                x, y = x_all, y_all
            else:
                if pos + batch > n:
                    order, pos = torch.randperm(n, generator=order_gen).to(device), 0
                idx = order[pos : pos + batch]
                pos += batch
                x, y = x_all[idx], y_all[idx]

            def closure(x=x, y=y) -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                loss = batch_value(problem.loss_fn(model(x), y))
                loss.backward()
                return loss

            history["lr"].append(float(opt.param_groups[0]["lr"]))
            try:
                loss = float(opt.step(closure))
            except Exception as exc:
                raise LossatlasError(f"training fails at step {step}: {one_line(exc)}") from exc
            history["step"].append(step)
            history["loss"].append(loss)
            if not math.isfinite(loss):
                status = f"diverged at step {step}"
                warnings.warn(
                    f"train: the loss is {loss} at step {step}; stopping",
                    LossatlasWarning,
                    stacklevel=2,
                )
                break
            if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
                scheduler.step(loss)
            elif scheduler is not None:
                scheduler.step()
            if step % every == 0 or step == steps:
                record(step)
        if history["eval_step"][-1] != history["step"][-1]:
            record(history["step"][-1])
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
