"""Evaluating a model on batches of inputs for `landscape.inputs`: per-sample losses, targets,
input gradients, predictions and how many inputs go into one forward pass."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from lossatlas.core import batches as B
from lossatlas.core.engine import probe
from lossatlas.core.planning import CPU_ACTIVATION_TARGET, default_budget
from lossatlas.core.problem import Problem
from lossatlas.errors import LossatlasError, LossatlasWarning, one_line

# Losses whose reduction="none" output, reduced per sample like the original reduction, equals
# the loss of that one sample (class weights excepted: they change a one-sample mean).
UNREDUCED = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss)
UNREDUCED += (nn.BCEWithLogitsLoss, nn.SoftMarginLoss, nn.CrossEntropyLoss, nn.NLLLoss)


class PerSample:
    """`loss_fn` per sample: `out[i] = loss_fn(outputs[i:i+1], targets[i:i+1])` (averaged if it
    returns more than a scalar). `method` is how: `"unreduced"` (a copy with reduction="none"
    for the torch losses in `UNREDUCED`), `"vmap"` (any other callable), or `"loop"` (one call
    per sample, after vmap failed; announced with a `LossatlasWarning`)."""

    def __init__(self, loss_fn: Callable) -> None:
        base = B.unwrapped(loss_fn)  # a torch.nn loss that reads logits
        self.on_logits = base is not loss_fn
        self.loss_fn, self.method = base, "vmap"
        loss_fn = base
        reduction = getattr(loss_fn, "reduction", None)
        weighted = getattr(loss_fn, "weight", None) is not None
        if type(loss_fn) in UNREDUCED and reduction in ("mean", "sum") and not weighted:
            self.unreduced, self.method = copy.copy(loss_fn), "unreduced"
            self.unreduced.reduction = "none"

    def _one(self, o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        value = torch.as_tensor(self.loss_fn(o[None], t[None]))
        return value.mean() if value.ndim else value

    def __call__(self, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        if self.on_logits:
            outputs = B.logits_of(outputs)
        if self.method == "unreduced":
            value = self.unreduced(outputs, targets).reshape(len(outputs), -1)
            return value.sum(1) if self.loss_fn.reduction == "sum" else value.mean(1)
        if self.method == "vmap":
            try:
                return vmap(self._one)(outputs, targets)
            except Exception as exc:
                self.method = "loop"
                warnings.warn(
                    f"lossatlas: the loss cannot run under vmap ({one_line(exc)}); "
                    "computing per-sample losses one sample at a time",
                    LossatlasWarning,
                    stacklevel=3,
                )
        return torch.stack([self._one(outputs[i], targets[i]) for i in range(len(outputs))])


def per_sample_loss(loss_fn: Callable, outputs: torch.Tensor, targets: torch.Tensor):
    """The loss of every sample alone, shape `(N,)`: `loss_fn(outputs[i:i+1], targets[i:i+1])`."""
    return PerSample(loss_fn)(outputs, targets)


class Targets:
    """Targets of a batch of grid inputs: `target(x)`, or the labels of their anchors `a`."""

    def __init__(self, problem: Problem, fn: Callable | None, labels: torch.Tensor | None):
        self.problem, self.fn, self.labels, self.last = problem, fn, labels, None

    def __call__(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if self.fn is None:
            self.last = self.labels[a.to(self.labels.device)]
            return self.last
        y = self.fn(x)
        if not isinstance(y, torch.Tensor) or y.ndim == 0 or y.shape[0] != len(x):
            raise LossatlasError(
                f"target(x) must return a tensor of {len(x)} targets for {len(x)} inputs, got "
                + (f"shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__)
            )
        self.last = y.to(self.problem.dtype) if y.is_floating_point() else y
        return self.last


def forward(problem: Problem, per: PerSample, targets: Targets, x, a):
    """Model outputs and per-sample losses of a batch of grid inputs; failures are one line."""
    try:
        out = functional_call(problem.module, (problem.params, problem.buffers), (x,))
        return out, per(out, targets(x, a))
    except (LossatlasError, Warning):
        raise
    except Exception as exc:
        message = f"the model or loss fails on the plane's inputs: {one_line(exc)}"
        raise LossatlasError(message) from exc


def input_gradient(problem, per, targets, X, scales, shape, chunk) -> tuple[torch.Tensor, int]:
    """`g = grad_delta mean_a loss(x_a + s_a delta)` at 0 (float64, CPU), and forward passes."""
    g, passes = torch.zeros(X.shape[1], dtype=torch.float64), 0
    for lo in range(0, len(X), chunk):
        a = torch.arange(lo, min(lo + chunk, len(X)), device=X.device)
        delta = torch.zeros(X.shape[1], dtype=X.dtype, device=X.device, requires_grad=True)
        with torch.enable_grad():
            x = (X[a] + scales[a, None].to(X) * delta).reshape(-1, *shape)
            loss = forward(problem, per, targets, x, a)[1].sum() / len(X)
            if not loss.requires_grad:
                raise LossatlasError("the loss does not depend differentiably on the input")
            g += torch.autograd.grad(loss, delta)[0].double().cpu()
        passes += 1
    if not (torch.isfinite(g).all() and g.norm() > 0):
        raise LossatlasError(
            "the input gradient at the anchors is zero or not finite; use 'random'"
        )
    return g, passes


def prediction_kind(loss_fn, out: torch.Tensor, y: torch.Tensor) -> str | None:
    """`"output"` for one output per sample, `"class"` for class scores, else None."""
    width = out[0].numel()
    if width == 1:
        return "output"
    loss_fn = B.unwrapped(loss_fn)
    classify = isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)) or not y.is_floating_point()
    return "class" if out.ndim == 2 and classify else None


def chunk_size(problem: Problem) -> int:
    """Inputs per forward pass: the CPU keeps its largest activation in cache-sized blocks."""
    footprint, item = probe(problem).footprint, torch.finfo(problem.dtype).bits // 8
    if problem.device.type == "cuda":
        return int(
            min(1 << 20, max(1, default_budget(problem.device) // (4 * footprint.total * item)))
        )
    return int(min(1 << 16, max(16, CPU_ACTIVATION_TARGET // (footprint.largest * item))))
