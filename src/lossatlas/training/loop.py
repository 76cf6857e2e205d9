"""The training loop behind `lossatlas.training.trainer.train`, and evaluation helpers it shares.

`evaluate` (loss and metrics of a module over all of a problem's data, in evaluation mode) and
`check_same_model` are used by `lossatlas.minima.comparison` too.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from lossatlas.core import batches as B
from lossatlas.core.problem import Problem, batch_value
from lossatlas.core.seeding import init_layers
from lossatlas.errors import LossatlasError, LossatlasWarning, one_line

EVAL_BATCH = 4096  # samples per batch when evaluating an (X, y) pair


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
                x, y = (B.apply(v, lambda t: _to(t, device, dtype)) for v in (x, y))
                out = _forward(module, x)
                units = problem.units(x, y)
                total["loss"] += float(batch_value(problem.loss_fn(out, y))) * (
                    problem.batch_weight(units) / problem.loss_divisor
                )
                for k, fn in problem.metrics.items():
                    total[k] += float(batch_value(fn(out, y))) * units / problem.n_units
    except Exception as exc:
        raise LossatlasError(f"the model fails on the data: {one_line(exc)}") from exc
    finally:
        module.train(was_training)
    return total


def _to(t: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return t.to(device, dtype) if t.is_floating_point() else t.to(device)


def _forward(module: nn.Module, x: B.Inputs) -> Any:
    """`module(x)`, `module(*x)` or `module(**x)`, as the batch's inputs say."""
    if isinstance(x, dict):
        return module(**x)
    return module(*x) if isinstance(x, (tuple, list)) else module(x)


def mean_loss(
    problem: Problem, model: nn.Module, parts: list[tuple[B.Inputs, B.Targets]]
) -> torch.Tensor:
    """The loss of `model` on the batches `parts` taken as one, backpropagated batch by batch
    (parts exist where padded batches of different widths cannot be joined); detached."""
    if len(parts) == 1:
        x, y = parts[0]
        loss = batch_value(problem.loss_fn(_forward(model, x), y))
        loss.backward()
        return loss.detach()
    divisor, total = problem.divisor_of(parts), torch.zeros((), dtype=torch.float64)
    for x, y in parts:
        w = problem.batch_weight(problem.units(x, y))
        loss = batch_value(problem.loss_fn(_forward(model, x), y)) * (w / divisor)
        loss.backward()
        total += loss.detach().to("cpu", torch.float64)
    return total


def fresh_init(model: nn.Module, seed: int) -> None:
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
            torch.default_generator.manual_seed(int(torch.randint(2**62, (), generator=gen)))
            layer.reset_parameters()
    model.to(device)


@contextlib.contextmanager
def threads_for(threads: int | None, device: torch.device) -> Iterator[None]:
    """`torch.set_num_threads(threads)` for a CPU run, restored afterwards."""
    before = torch.get_num_threads()
    if threads is not None and device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def batch_order(
    n: int, batch: int, seed: int, device: torch.device
) -> Iterator[torch.Tensor | None]:
    """Each step's sample indices: epochs of a seeded permutation (None: the full batch)."""
    gen, pos, order = torch.Generator().manual_seed(seed), n, torch.arange(0)
    while True:
        if batch == n:
            yield None
            continue
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=gen).to(device), 0
        yield order[pos : pos + batch]
        pos += batch


def run_steps(model, opt, scheduler, data, order, steps: int, every: int):
    """The training steps; the history (lists) and a status."""
    problem, val, samples = data
    history: dict[str, list[float]] = {"step": [], "loss": [], "lr": [], "eval_step": []}

    def record(step: int) -> None:
        history["eval_step"].append(step)
        for prefix, source in (("train", problem), ("val", val)):
            if source is not None:
                for k, v in evaluate(source, model).items():
                    history.setdefault(f"{prefix}_{k}", []).append(v)

    record(0)
    model.train()
    status = "finished"
    for step, idx in zip(range(1, steps + 1), order):
        parts = samples.take(idx)

        def closure(parts=parts) -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            return mean_loss(problem, model, parts)

        history["lr"].append(float(opt.param_groups[0]["lr"]))
        try:
            loss = float(opt.step(closure))
        except Exception as exc:
            raise LossatlasError(f"training fails at step {step}: {one_line(exc)}") from exc
        history["step"].append(step)
        history["loss"].append(loss)
        if not math.isfinite(loss):
            status = f"diverged at step {step}"
            message = f"train: the loss is {loss} at step {step}; stopping"
            warnings.warn(message, LossatlasWarning, stacklevel=3)
            break
        if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
            scheduler.step(loss)
        elif scheduler is not None:
            scheduler.step()
        if step % every == 0 or step == steps:
            record(step)
    if history["eval_step"][-1] != history["step"][-1]:
        record(history["step"][-1])
    return history, status
