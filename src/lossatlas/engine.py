"""Batched evaluation: the loss and metrics at many points of parameter space per data pass.

A point is `theta = theta0 + sum_j c_j d_j` for a coefficient vector `c` and directions `d_j`.
For a chunk of K points the engine stacks the moved parameters into `(K, *shape)` tensors and
runs `vmap(functional_call)` over them, so every batch of data is read once per chunk and each
layer runs as one batched matrix product instead of K small ones. Parameters that no direction
moves stay unbatched. Chunks are independent: they can be computed anywhere, in any order.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, vmap

from lossatlas.directions import Directions
from lossatlas.errors import LossatlasError
from lossatlas.problem import Problem

PATHS = ("auto", "vmap", "sequential")


class LossatlasWarning(UserWarning):
    """A one-line notice: lossatlas changed course (for example fell back to a slower path)."""


@dataclass(frozen=True)
class Plan:
    """How points are cut into chunks and data into batches; fixed for a run so resumes match."""

    chunk_size: int
    batch_size: int
    path: str


@dataclass(frozen=True)
class ChunkResult:
    """Loss and metrics at the points of one chunk."""

    loss: np.ndarray
    metrics: dict[str, np.ndarray]


def parse_bytes(value: int | str | None) -> int | None:
    """Read a memory size: an int in bytes or a string such as `"512MB"` or `"2GiB"`."""
    if value is None or isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?i?b?)\s*", str(value).lower())
    if not match:
        raise LossatlasError(f"cannot read memory size {value!r}; write e.g. 512MB or 2GiB")
    unit = match.group(2).rstrip("b").rstrip("i")
    return int(float(match.group(1)) * 1024 ** "_kmgt".index(unit or "_"))


def default_budget(device: torch.device) -> int:
    """Half the free GPU memory, or a cache-friendly share of the host's memory on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        available = 4 << 30
    # Past a few hundred MiB per chunk the CPU gains nothing and page faults start to cost.
    return int(min(512 << 20, available // 4))


def _reduce(value: torch.Tensor) -> torch.Tensor:
    """A per-batch value as a float64 scalar (per-sample outputs are averaged)."""
    value = torch.as_tensor(value).to(torch.float64)
    return value.mean() if value.ndim > 0 else value


class Evaluator:
    """Evaluates `theta0 + C @ D` for chunks of coefficient rows `C`.

    Args:
        problem: the model, loss and data.
        directions: the directions `D` (checked with `as_directions`).
        center: the origin `theta0`; defaults to the problem's weights.
        memory_budget: bytes (or e.g. "512MB") one chunk may use for activations and stacked
            parameters; sets the number of points per chunk.
        path: `"auto"` (vmap, falling back to sequential with a warning), `"vmap"` or
            `"sequential"`.
        chunk_size: points per chunk, overriding the budget.
    """

    def __init__(
        self,
        problem: Problem,
        directions: Directions,
        *,
        center: Mapping[str, torch.Tensor] | None = None,
        memory_budget: int | str | None = None,
        path: str = "auto",
        chunk_size: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        if path not in PATHS:
            raise LossatlasError(f"path={path!r} is not one of {PATHS}")
        self.problem = problem
        self.directions = directions
        self.center = dict(center) if center is not None else problem.params
        moving = [n for n in problem.params if any(n in d and d[n].any() for d in directions)]
        self.fixed = {n: t for n, t in self.center.items() if n not in moving}
        # D[name]: (m, *shape), directions that leave a parameter out contribute zeros.
        self.stacks = {
            n: torch.stack([d.get(n, torch.zeros_like(self.center[n])) for d in directions])
            for n in moving
        }
        self.moving_numel = sum(self.center[n].numel() for n in moving)
        self.path = path
        self.n_model_calls = 0
        self.n_point_passes = 0
        act_per_sample = self._probe()
        budget = parse_bytes(memory_budget) or default_budget(problem.device)
        self.plan = self._plan(act_per_sample, budget, chunk_size, batch_size)
        self._batched = vmap(self._per_point, in_dims=(0, None, None, None))

    # -- probing and planning -------------------------------------------------------------
    def _probe(self) -> int:
        """Run the model once at the centre on two samples; return activations per sample."""
        problem = self.problem
        x, y = problem.first_batch()
        sizes: list[int] = []

        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                sizes.append(output.numel())

        handles = [m.register_forward_hook(hook) for m in problem.module.modules()]
        try:
            with torch.no_grad():
                out = functional_call(problem.module, (self.center, problem.buffers), (x,))
        except Exception as exc:  # the user's model rejected the user's data
            raise LossatlasError(f"the model fails on the data: {_one_line(exc)}") from exc
        finally:
            for h in handles:
                h.remove()
        for name, fn in [("loss_fn", problem.loss_fn), *problem.metrics.items()]:
            try:
                value = fn(out, y)
            except Exception as exc:
                raise LossatlasError(f"{name} fails on the model's outputs: {_one_line(exc)}") from exc
            if not isinstance(value, torch.Tensor) or not (
                value.is_floating_point() or value.dtype == torch.bool
            ):
                raise LossatlasError(f"{name} must return a tensor, got {type(value).__name__}")
        return max(1, (sum(sizes) + x[0].numel()) // x.shape[0])

    def _plan(
        self, act_per_sample: int, budget: int, chunk_size: int | None, batch_size: int | None
    ) -> Plan:
        problem = self.problem
        item = torch.finfo(problem.dtype).bits // 8
        # Activations are counted at module outputs; temporaries inside them take about as much.
        per_sample = 3 * act_per_sample * item
        batch = batch_size or problem.max_batch_size()
        if batch_size is None and problem.batch_size is None and problem._pair is not None:
            # Shrink the batch of an (X, y) pair until a useful number of points fits in one pass.
            while batch > 256 and budget // (batch * per_sample + self.moving_numel * item) < 16:
                batch = math.ceil(batch / 2)
        if chunk_size is None:
            chunk_size = max(1, budget // (batch * per_sample + self.moving_numel * item))
        path = "sequential" if self.path == "sequential" else "vmap"
        return Plan(chunk_size=int(chunk_size), batch_size=int(batch), path=path)

    # -- evaluation -------------------------------------------------------------------------
    def _per_point(self, moving, fixed, x, y):
        problem = self.problem
        out = functional_call(problem.module, (moving, fixed, problem.buffers), (x,))
        values = [_reduce(problem.loss_fn(out, y))]
        values += [_reduce(fn(out, y)) for fn in problem.metrics.values()]
        return tuple(values)

    def points(self, coeffs: np.ndarray) -> dict[str, torch.Tensor]:
        """Stacked moved parameters `theta0 + C @ D` for coefficient rows `C` of shape (K, m)."""
        c = torch.as_tensor(np.asarray(coeffs), dtype=self.problem.dtype, device=self.problem.device)
        return {
            n: self.center[n] + torch.tensordot(c, d, dims=1) for n, d in self.stacks.items()
        }

    def _forward(self, moving: dict[str, torch.Tensor], k: int, x, y) -> list[torch.Tensor]:
        if self.plan.path == "vmap":
            self.n_model_calls += 1
            return list(self._batched(moving, self.fixed, x, y))
        self.n_model_calls += k
        rows = [self._per_point({n: t[i] for n, t in moving.items()}, self.fixed, x, y)
                for i in range(k)]
        return [torch.stack(col) for col in zip(*rows)]

    def __call__(self, coeffs: np.ndarray) -> ChunkResult:
        """Loss and metrics at `theta0 + C @ D` for each row of `coeffs` (shape (K, m))."""
        coeffs = np.asarray(coeffs, dtype=np.float64).reshape(-1, len(self.directions))
        k = coeffs.shape[0]
        moving = self.points(coeffs)
        problem = self.problem
        totals = None
        with torch.no_grad():
            for x, y in problem.batches(self.plan.batch_size):
                values = self._forward_or_fall_back(moving, k, x, y)
                n = x.shape[0]
                weights = [1.0 if problem.reduction == "sum" else n] + [n] * len(problem.metrics)
                scaled = [v.reshape(k) * w for v, w in zip(values, weights)]
                totals = scaled if totals is None else [t + s for t, s in zip(totals, scaled)]
                self.n_point_passes += k
        assert totals is not None
        divisor = 1.0 if problem.reduction == "sum" else problem.n_samples
        loss = (totals[0] / divisor).cpu().numpy()
        metrics = {
            name: (t / problem.n_samples).cpu().numpy()
            for name, t in zip(problem.metrics, totals[1:])
        }
        return ChunkResult(loss=loss, metrics=metrics)

    def _forward_or_fall_back(self, moving, k, x, y) -> list[torch.Tensor]:
        if self.plan.path != "vmap" or self.path == "vmap":
            return self._forward(moving, k, x, y)
        try:
            return self._forward(moving, k, x, y)
        except Exception as exc:
            warnings.warn(
                f"lossatlas: this model cannot run under vmap ({_one_line(exc)}); "
                "using the slower sequential path",
                LossatlasWarning,
                stacklevel=4,
            )
            self.plan = Plan(self.plan.chunk_size, self.plan.batch_size, "sequential")
            self.path = "sequential"
            return self._forward(moving, k, x, y)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
