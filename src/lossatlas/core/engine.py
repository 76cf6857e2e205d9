"""Batched evaluation: the loss and metrics at many points of parameter space per data pass.

A point is `theta = theta0 + sum_j c_j d_j` for a coefficient vector `c` and directions `d_j`.
For a chunk of K points the engine stacks the moved parameters into `(K, *shape)` tensors and
runs `vmap(functional_call)` over them, so every batch of data is read once per chunk and each
layer runs as one batched product instead of K small ones. Parameters that no direction moves
stay unbatched. If the input layer is linear in the moved weights, its products are computed
once per batch (`core.shortcut`). Under `Problem(bn="recompute")` (on a model with BatchNorm)
every point instead runs alone: a pass that recomputes the BatchNorm statistics at its weights
(`lossatlas.core.batchnorm`), then the loss pass with them. Chunks are independent: they can be
computed anywhere, in any order; recomputing a chunk on the same machine gives bit-identical
values.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.func import vmap

from lossatlas.core import batches as B
from lossatlas.core.batchnorm import recomputed_stats
from lossatlas.core.compiling import Compilation
from lossatlas.core.directions import Directions, as_center, as_directions
from lossatlas.core.planning import (
    Footprint,
    Plan,
    default_budget,
    make_plan,
    parse_bytes,
    tune_malloc,
)
from lossatlas.core.problem import Problem, batch_value
from lossatlas.core.shortcut import InputLayerShortcut
from lossatlas.errors import LossatlasError, LossatlasWarning, one_line

PATHS = ("auto", "vmap", "sequential")
VMAP_FALLBACK = "There is a performance drop because we have not yet implemented the batching"


@dataclass(frozen=True)
class ChunkResult:
    """Loss and metrics (float64) at the points of one chunk; `slopes` (K, m) when asked for."""

    loss: np.ndarray
    metrics: dict[str, np.ndarray]
    slopes: np.ndarray | None = None


def _has_spatial_layers(module: torch.nn.Module) -> bool:
    spatial = (
        torch.nn.modules.conv._ConvNd,
        torch.nn.modules.pooling._MaxPoolNd,
        torch.nn.modules.pooling._AvgPoolNd,
        torch.nn.modules.batchnorm._BatchNorm,
    )
    return any(isinstance(m, spatial) for m in module.modules())


def _has_conv2d(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in module.modules())


@dataclass(frozen=True)
class Probe:
    """What one small forward pass at the centre tells: activation sizes and the values there.

    `values` (loss, then metrics, on the first two samples) go into run keys, so that a changed
    loss function or model code is not mistaken for the same run.
    """

    footprint: Footprint
    values: tuple[float, ...]


def probe(problem: Problem, center: Mapping[str, torch.Tensor] | None = None) -> Probe:
    """Run the model once at `center` on two samples; user errors become `LossatlasError`s."""
    center = problem.params if center is None else center
    x, y = problem.first_batch()
    n = B.size(x)
    sizes: list[int] = [sum(t.numel() for t in B.leaves(x))]

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel())

    handles = [m.register_forward_hook(hook) for m in problem.module.modules()]
    try:
        with torch.no_grad():
            out = problem.call((dict(center), problem.buffers), x)
    except Exception as exc:  # the user's model rejected the user's data
        raise LossatlasError(f"the model fails on the data: {one_line(exc)}") from exc
    finally:
        for h in handles:
            h.remove()
    values = []
    for name, fn in [("loss_fn", problem.loss_fn), *problem.metrics.items()]:
        try:
            value = fn(out, y)
        except Exception as exc:
            raise LossatlasError(f"{name} fails on the model's outputs: {one_line(exc)}") from exc
        if not isinstance(value, torch.Tensor):
            raise LossatlasError(f"{name} must return a tensor, got {type(value).__name__}")
        values.append(float(batch_value(value)))
    footprint = Footprint(total=max(1, sum(sizes) // n), largest=max(1, max(sizes) // n))
    return Probe(footprint=footprint, values=tuple(values))


class Evaluator:
    """Evaluates the loss and metrics at `theta0 + C @ D` for chunks of coefficient rows `C`.

    Args:
        problem: the model, loss and data.
        directions: the directions `D` (checked with `as_directions`).
        center: the origin `theta0`; defaults to the problem's weights.
        memory_budget: bytes (or e.g. "512MB") one pass may use; bounds points per chunk.
        path: `"auto"` (vmap, falling back to sequential with a warning), `"vmap"` or
            `"sequential"`.
        shortcut: precompute the input layer's products when it is linear in the weights.
        chunk_size: points per chunk, overriding the plan.
        batch_size: samples per batch for an `(X, y)` pair, overriding the plan.
        slopes: also compute `dL/dc_j` at every point: the loss's derivative along each
            direction (reverse mode through `torch.func.grad_and_value`; no input-layer shortcut).
            Not available with `bn="recompute"` on a model with BatchNorm.
        plan: a complete plan (for resuming a run exactly as it started).
        n_points: points the whole run will evaluate, if known (chunks are capped so a run has
            several, for progress and resume).
        probed: the result of `probe(problem, center)`, if already computed.
        compile: run the forward functions under `torch.compile`: `"auto"` (when the run's
            remaining eager time, measured on its second chunk, exceeds
            `core.compiling.PAYS_AFTER_SECONDS`), `True` or `False`. Equal values to float
            rounding. A model whose vmap path falls back per operator (e.g. fused attention)
            runs compiled one point at a time, which compiles to faster code.

    The problem's `bn="recompute"` (on a model with BatchNorm) takes the sequential path
    without the shortcut: `path="auto"` and `shortcut` give way, `path="vmap"` is refused.
    """

    def __init__(
        self,
        problem: Problem,
        directions: Directions,
        *,
        center: Mapping[str, torch.Tensor] | None = None,
        memory_budget: int | str | None = None,
        path: str = "auto",
        shortcut: bool = True,
        chunk_size: int | None = None,
        batch_size: int | None = None,
        slopes: bool = False,
        plan: Plan | None = None,
        n_points: int | None = None,
        probed: Probe | None = None,
        compile: bool | str = "auto",
    ) -> None:
        self.compilation = Compilation(False if slopes else compile, n_points)
        if path not in PATHS:
            raise LossatlasError(f"path={path!r} is not one of {PATHS}")
        if chunk_size is not None and chunk_size < 1:
            raise LossatlasError(f"chunk_size must be at least 1, got {chunk_size}")
        self.problem = problem
        self.stats = recomputed_stats(problem, path=path, slopes=slopes)  # bn="recompute"
        if self.stats is not None:
            path, shortcut = "sequential", False
            plan = None if plan is None else replace(plan, path="sequential", shortcut=False)
        self.buffers = problem.buffers  # the point's buffers while a recompute chunk runs
        self.directions = directions = as_directions(problem, directions)
        self.center = as_center(problem, center)
        moving = [n for n in problem.params if any(n in d and d[n].any() for d in directions)]
        # D[name]: (m, *shape); directions that leave a parameter out contribute zeros.
        self.stacks = {
            n: torch.stack([d.get(n, torch.zeros_like(self.center[n])) for d in directions])
            for n in moving
        }
        self.fixed = {n: t for n, t in self.center.items() if n not in moving}
        self.fall_back = path == "auto"
        self.vmap_per_op = False  # whether vmap falls back to a loop for some operator
        self.n_model_calls = 0
        self.n_point_passes = 0
        footprint = (probed or probe(problem, self.center)).footprint
        if path == "auto" and problem.device.type == "cpu" and _has_spatial_layers(problem.module):
            path = "sequential"  # vmap's conv/pool/BatchNorm rules re-layout tensors on the CPU
        if path == "auto" and moving and not slopes and not self._runs_under_vmap():
            path = "sequential"  # planned as such: its batches differ from a vmap plan's
        self.shortcut = None
        if shortcut and moving and not slopes and (plan is None or plan.shortcut):
            x, _ = problem.first_batch()
            if B.is_tensor(x):  # the shortcut reads the first layer's one input tensor
                self.shortcut = InputLayerShortcut.detect(
                    problem.module, x, self.center, problem.buffers, self.stacks
                )
        if plan is None:
            plan = make_plan(
                device=problem.device,
                itemsize=torch.finfo(problem.dtype).bits // 8,
                footprint=footprint,
                moving_numel=sum(self.center[n].numel() for n in moving),
                n_samples=problem.n_samples,
                data_batch=problem.max_batch_size(),
                splittable=problem.splittable,
                budget=parse_bytes(memory_budget) or default_budget(problem.device),
                path="sequential" if path == "sequential" else "vmap",
                shortcut=self.shortcut is not None,
                channels_last=problem.device.type == "cpu" and _has_conv2d(problem.module),
                chunk_size=chunk_size,
                batch_size=batch_size,
                n_points=n_points,
            )
            plan = replace(plan, slopes=slopes)
        self.plan = plan
        if problem.device.type == "cpu":
            tune_malloc()

    def _runs_under_vmap(self) -> bool:
        """Whether the model runs under vmap (two points on two samples); warns if not."""
        x, y = self.problem.first_batch()
        two = {n: self.center[n].expand(2, *self.center[n].shape) for n in self.stacks}
        try:
            with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                vmap(self._per_point, in_dims=(0, None, None, None))(two, self.fixed, x, y)
        except Exception as exc:
            self._warn_sequential(exc)
            return False
        self.vmap_per_op = any(VMAP_FALLBACK in str(w.message) for w in caught)
        return True

    @staticmethod
    def _warn_sequential(exc: Exception) -> None:
        warnings.warn(
            f"lossatlas: this model cannot run under vmap ({one_line(exc)}); "
            "using the slower sequential path",
            LossatlasWarning,
            stacklevel=5,
        )

    # -- evaluation -----------------------------------------------------------------------
    def _values(self, module, moving, fixed, x, y) -> tuple[torch.Tensor, ...]:
        problem = self.problem
        out = B.call(module, (moving, fixed, self.buffers), x)
        values = [batch_value(problem.loss_fn(out, y))]
        values += [batch_value(fn(out, y)) for fn in problem.metrics.values()]
        return tuple(values)

    def _per_point(self, moving, fixed, x, y):
        return self._values(self.problem.module, moving, fixed, x, y)

    def _per_point_shortcut(self, moving, fixed, pre, x, y):
        assert self.shortcut is not None
        fixed = {**fixed, self.shortcut.output_name: pre}
        return self._values(self.shortcut.module, moving, fixed, x, y)

    def _per_point_at(self, c, fixed, x, y):
        """One point's values; its weights are made here, so a compiled call fuses them."""
        return self._per_point(self._moved(c), fixed, x, y)

    def _per_point_shortcut_at(self, c, fixed, pre, x, y):
        assert self.shortcut is not None
        return self._per_point_shortcut(self._moved(c, self.shortcut.owned), fixed, pre, x, y)

    def _per_point_slopes(self, c, x, y):
        """Loss, metrics and the loss's gradient in the coefficients `c` (m,) at one point."""
        problem = self.problem

        def at(c):
            out = problem.call((self._moved(c), self.fixed, self.buffers), x)
            metrics = tuple(batch_value(fn(out, y)) for fn in problem.metrics.values())
            return batch_value(problem.loss_fn(out, y)), metrics

        slope, (loss, metrics) = torch.func.grad_and_value(at, has_aux=True)(c)
        return (loss, *metrics, slope.to(torch.float64))

    def points(self, coeffs: np.ndarray) -> dict[str, torch.Tensor]:
        """Stacked moved parameters `theta0 + C @ D` for coefficient rows `C` of shape (K, m)."""
        return self._moved(self._coeffs(coeffs))

    def _moved(self, c: torch.Tensor, skip: Collection[str] = ()) -> dict[str, torch.Tensor]:
        """`theta0 + c @ D` for coefficients `c` of shape (K, m), or (m,) for one point."""
        return {
            n: self.center[n] + torch.tensordot(c, d, dims=1)
            for n, d in self.stacks.items()
            if n not in skip
        }

    def _coeffs(self, coeffs: np.ndarray) -> torch.Tensor:
        c = np.asarray(coeffs, dtype=np.float64).reshape(-1, len(self.directions))
        return torch.as_tensor(c, dtype=self.problem.dtype, device=self.problem.device)

    def _forward(self, moving, coeffs: torch.Tensor, index: int, x, y) -> list[torch.Tensor]:
        if self.plan.slopes:
            if self.plan.path == "sequential":
                self.n_model_calls += len(coeffs)
                rows = [self._per_point_slopes(c, x, y) for c in coeffs]
                return [torch.stack(col) for col in zip(*rows)]
            self.n_model_calls += 1
            return list(vmap(self._per_point_slopes, in_dims=(0, None, None))(coeffs, x, y))
        sc = self.shortcut if self.plan.shortcut else None
        fixed, products = self.fixed, None
        compiled = self.compilation.function  # the eager function unless compiling
        if sc is not None:
            products = sc.products(x, index if self.problem.in_memory else None)
            moving = {n: t for n, t in moving.items() if n not in sc.owned}
            fixed = {n: t for n, t in fixed.items() if n not in sc.owned}
        if self.plan.path == "sequential":
            self.n_model_calls += len(coeffs)
            rows = []
            for i, c in enumerate(coeffs):
                if moving:  # stacked already (a vmap plan that fell back)
                    point = {n: t[i] for n, t in moving.items()}
                    rows.append(self._per_point(point, fixed, x, y))
                elif sc is None:  # one point at a time: K stacked copies of a large model cost more
                    rows.append(compiled("point", self._per_point_at)(c, fixed, x, y))
                else:  # one point's pre-activation at a time keeps it in cache
                    pre = sc.combine(products, coeffs[i : i + 1])[0]
                    fn = compiled("point-shortcut", self._per_point_shortcut_at)
                    rows.append(fn(c, fixed, pre, x, y))
            return [torch.stack(col) for col in zip(*rows)]
        self.n_model_calls += 1
        if sc is None:
            fn = compiled("vmap", vmap(self._per_point, in_dims=(0, None, None, None)))
            return list(fn(moving, fixed, x, y))
        fn = vmap(self._per_point_shortcut, in_dims=(0, None, 0, None, None))
        fn = compiled("vmap-shortcut", fn)
        return list(fn(moving, fixed, sc.combine(products, coeffs), x, y))

    def __call__(self, coeffs: np.ndarray) -> ChunkResult:
        """Loss and metrics at `theta0 + C @ D` for each row of `coeffs` (shape (K, m))."""
        rows = np.asarray(coeffs, dtype=np.float64).reshape(-1, len(self.directions))
        if self.compilation.active and self.vmap_per_op and self.plan.path == "vmap":
            self.plan = replace(self.plan, path="sequential")  # compiles to faster code
        self.compilation.start_chunk()
        result = self._points(rows)
        self.compilation.end_chunk(len(rows))
        return result

    def _points(self, rows: np.ndarray) -> ChunkResult:
        if self.stats is None or not len(rows):
            return self._chunk(rows)
        parts = []
        try:
            for row in rows[:, None]:  # one point at a time: its statistics, then its loss
                point = {n: t[0] for n, t in self.points(row).items()}
                forwards = self.stats.forwards
                self.buffers = self.stats({**self.fixed, **point})
                self.n_model_calls += self.stats.forwards - forwards
                self.n_point_passes += self.stats.forwards - forwards
                parts.append(self._chunk(row))
        finally:
            self.buffers = self.problem.buffers
        metrics = {m: np.concatenate([p.metrics[m] for p in parts]) for m in self.problem.metrics}
        return ChunkResult(np.concatenate([p.loss for p in parts]), metrics)

    def _chunk(self, coeffs: np.ndarray) -> ChunkResult:
        c = self._coeffs(coeffs)
        sequential = self.plan.slopes or self.plan.path == "sequential"
        moving = {} if sequential else self.points(coeffs)  # sequential: point by point
        problem = self.problem
        totals = None
        with torch.no_grad(), warnings.catch_warnings():
            # vmap's per-op fallback (e.g. for fused attention) is correct, and it is no news
            # on every chunk: the plan and bench/ say what each path costs
            warnings.filterwarnings("ignore", message=VMAP_FALLBACK)
            for index, (x, y) in enumerate(problem.batches(self.plan.batch_size)):
                if self.plan.channels_last and B.is_tensor(x) and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                values = self._forward_or_fall_back(moving, c, index, x, y)
                units = problem.units(x, y)
                weights = [problem.batch_weight(units)] + [units] * len(problem.metrics)
                weights += [problem.batch_weight(units)] * self.plan.slopes  # as the loss
                scaled = [v * w for v, w in zip(values, weights)]
                totals = scaled if totals is None else [t + s for t, s in zip(totals, scaled)]
                self.n_point_passes += len(c)
        assert totals is not None
        divisor = problem.loss_divisor
        metrics = {
            m: (t / problem.n_units).cpu().numpy() for m, t in zip(problem.metrics, totals[1:])
        }
        slopes = (totals[-1] / divisor).cpu().numpy() if self.plan.slopes else None
        return ChunkResult((totals[0] / divisor).cpu().numpy(), metrics, slopes)

    def _forward_or_fall_back(self, moving, coeffs, index, x, y) -> list[torch.Tensor]:
        try:
            return self._forward(moving, coeffs, index, x, y)
        except Exception as exc:
            if self.compilation.active:
                self.compilation.failed(exc)  # raises for compile=True
                return self._forward_or_fall_back(moving, coeffs, index, x, y)
            if self.plan.path == "sequential" or not self.fall_back:
                raise
            self._warn_sequential(exc)
            self.plan = replace(self.plan, path="sequential")
            return self._forward(moving, coeffs, index, x, y)
