"""1D lines and 2D grids of the loss around a point, computed in resumable chunks."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lossatlas.core.cluster import (
    RayOptions,
    as_ray_options,
    problem_on_worker,
    shipped_problem,
)
from lossatlas.core.directions import Directions, as_center, as_directions
from lossatlas.core.engine import Evaluator, probe
from lossatlas.core.files import OutputLock
from lossatlas.core.planning import Plan, available_memory
from lossatlas.core.problem import Problem
from lossatlas.core.progress import progress
from lossatlas.core.provenance import __version__, versions
from lossatlas.errors import LossatlasError, LossatlasWarning
from lossatlas.landscape.distributed import chunk_values, evaluate_on_ray
from lossatlas.landscape.journal import Journal
from lossatlas.landscape.record import FORMAT_VERSION, Surface, load


def _per_axis(value: Any, m: int, what: str, single: type | tuple) -> list:
    """One setting for every direction, or a sequence of one per direction."""
    if isinstance(value, single) or (
        what == "span"
        and isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, (int, float, np.number)) for v in value)
    ):
        return [value] * m
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != m:
        raise LossatlasError(f"{what} must be one value or one per direction ({m}), got {value!r}")
    return list(value)


def grid_axes(steps: Any, span: Any, m: int, *, rows: int = 1) -> tuple[np.ndarray, ...]:
    """Check `steps` and `span` (one for all directions, or one per direction); make the axes.

    `rows` values per point (loss, metrics, slopes) size the feasibility check: a grid whose
    coordinates and values cannot fit in memory is refused before anything is allocated.
    """
    ranges = []
    for n, s in zip(
        _per_axis(steps, m, "steps", (int, np.integer)), _per_axis(span, m, "span", ())
    ):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise LossatlasError(f"steps must be integers of at least 2, got {n!r}")
        try:
            lo, hi = (float(v) for v in s)
        except (TypeError, ValueError):
            raise LossatlasError(f"span must be a (low, high) pair of numbers, got {s!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise LossatlasError(f"span must be finite, got ({lo}, {hi})")
        if not lo < hi:
            raise LossatlasError(f"span must have low < high, got ({lo}, {hi})")
        if not math.isfinite(hi - lo):  # linspace would overflow to inf and NaN
            raise LossatlasError(f"span ({lo}, {hi}) is too wide: high - low overflows")
        ranges.append((lo, hi, int(n)))
    check_feasible([n for _, _, n in ranges], rows)
    return tuple(np.linspace(lo, hi, n) for lo, hi, n in ranges)


def _run_key(
    settings: dict, fingerprint: str, problem: Problem, dirs: Directions, center: dict
) -> str:
    """A digest of everything that decides the grid values, to match files and journals."""
    # The version is part of the key: a file written by other code is recomputed, not reused.
    stamp = {**settings, "lossatlas": __version__, "format": FORMAT_VERSION}
    h = hashlib.blake2b(json.dumps(stamp, sort_keys=True).encode(), digest_size=16)
    h.update(fingerprint.encode())
    tensors = [*center.items(), *problem.buffers.items()]
    tensors += [(f"{i}:{k}", t) for i, d in enumerate(dirs) for k, t in d.items()]
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def surface(
    problem: Problem,
    directions: Directions | Sequence[Mapping[str, torch.Tensor]],
    steps: int | Sequence[int] = 21,
    span: tuple[float, float] | Sequence[tuple[float, float]] = (-1.0, 1.0),
    *,
    center: nn.Module | Mapping[str, torch.Tensor] | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    memory_budget: int | str | None = None,
    path: str = "auto",
    chunk_size: int | None = None,
    slopes: bool = False,
    bn: str | None = None,
    compile: bool | str = "auto",
    ray: str | RayOptions | None = None,
    quiet: bool | None = None,
) -> Surface:
    """The loss (and metrics) on a line or grid `theta0 + sum_j c_j d_j`, `c_j` in `span`.

    Args:
        problem: model, loss and data.
        directions: a `Directions` or a list of `{name: tensor}` dicts (one per axis).
        steps: grid points per axis (one int for all axes, or one per axis), at least 2.
        span: `(low, high)` coefficient range, or one range per axis.
        center: the origin `theta0` (a model or parameter dict); the problem's weights by
            default. With `direction_between` and `span=(0, 1)` this interpolates models.
        out: HDF5 file to write. While running, finished chunks go to `<out>.partial`; an
            interrupted run called again with the same arguments computes only what is missing
            and gives bit-identical grids. An existing finished file for the same run is
            returned as is.
        overwrite: replace an existing `out` (and its `.partial` progress) that holds a
            different surface. Progress of the same run is still resumed.
        memory_budget: bytes (or "512MB") for one chunk of points; sets points per pass.
        path: engine path, `"auto"`, `"vmap"` or `"sequential"`.
        chunk_size: points per chunk, overriding the memory budget.
        slopes: also record the loss's derivative along every direction at every point
            (`Surface.slopes`, from autograd): the gradient of a 1D line, the gradient field of a
            2D slice. Costs about one backward pass per point. Not with `bn="recompute"`.
        bn: the BatchNorm mode for this call, overriding the problem's (None: the problem's):
            `"eval"` uses the stored statistics, `"recompute"` recomputes them at every point
            on the problem's data (`lossatlas.core.batchnorm`; two passes over the data per point,
            one point at a time). Recorded in `settings["bn"]` and part of the run key, so a
            file or journal of one mode is never reused for the other.
        compile: evaluate under `torch.compile`: `"auto"` when the run is long enough to repay
            the compile time (measured on its second chunk), `True` or `False`
            (`lossatlas.core.compiling`). The same values to float rounding;
            `provenance["compiled_points"]` counts the points computed compiled.
        ray: evaluate the chunks on a Ray cluster: its address (`"auto"`, `"host:port"`) or
            `RayOptions` (workers, CPUs and GPUs per worker). The same plan and chunks as a
            local run; a worker that dies loses only its chunks in flight, which are
            requeued (`lossatlas.landscape.distributed`). Needs `pip install 'lossatlas[ray]'`.
        quiet: no progress bar (default: the LOSSATLAS_QUIET environment variable).
    """
    if not isinstance(problem, Problem):
        raise LossatlasError(f"expected a lossatlas.Problem, got {type(problem).__name__}")
    if bn is not None:
        problem = problem.with_bn(bn)
    dirs = as_directions(problem, directions)
    # A chunk's record: its losses, then each metric, then the slope along each direction.
    rows = 1 + len(problem.metrics) + (len(dirs) if slopes else 0)
    axes = grid_axes(steps, span, len(dirs), rows=rows)
    origin = as_center(problem, center)
    settings: dict[str, Any] = {
        "steps": [len(a) for a in axes],
        "span": [[float(a[0]), float(a[-1])] for a in axes],
        "center": "weights" if center is None else "custom",
        "bn": problem.bn,
        "dtype": str(problem.dtype),
        "loss_reduction": problem.reduction,
        "metrics": list(problem.metrics),
        "slopes": bool(slopes),
    }
    fingerprint = problem.fingerprint()
    probed = probe(problem, origin)
    key = _run_key({**settings, "probe": probed.values}, fingerprint, problem, dirs, origin)
    run = functools.partial(
        _run, problem, dirs, axes, origin, settings, key, fingerprint, probed,
        memory_budget=memory_budget, path=path, chunk_size=chunk_size, slopes=bool(slopes),
        compile=compile, quiet=quiet, ray=as_ray_options(ray), rows=rows,
    )  # fmt: skip
    if out is None:
        return run(None)
    out = Path(out)
    with OutputLock(out):  # one run at a time per output file, from any process
        if out.exists():
            try:
                previous = load(out)
            except LossatlasError:
                previous = None
            if previous is not None and previous.settings.get("key") == key:
                return previous
            if not overwrite:
                raise LossatlasError(
                    f"{out} exists and holds a different result; pass overwrite=True "
                    "(--overwrite in the CLI) or choose another file"
                )
        partial = out.with_name(out.name + ".partial")
        journal = None
        try:
            journal = Journal.resume(partial, key)
            plan = None if journal is None else Plan(**journal.header["plan"])
            if journal is not None:
                n_points, size = math.prod(len(a) for a in axes), plan.chunk_size
                journal.check([rows * min(size, n_points - i) for i in range(0, n_points, size)])
        except (LossatlasError, TypeError):  # TypeError: a plan this version cannot read
            if journal is not None:
                journal.close()
            if not overwrite:
                raise
            partial.unlink()  # progress of another run, which overwrite=True replaces
            journal, plan = None, None
        result = run(partial, journal=journal, plan=plan)
        result.save(out)
        partial.unlink(missing_ok=True)
        return result


LONG_RUN_SECONDS = 600.0  # runs expected to take longer say so on stderr, even when quiet


def _announce_long_run(
    steps: list[int], n_points: int, seconds: float, partial: Path | None
) -> None:
    """One line on stderr when the first chunks say the run will take long."""
    if seconds < LONG_RUN_SECONDS:
        return
    hours, minutes = divmod(round(seconds / 60), 60)
    took = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    keep = f"finished chunks are kept in {partial}" if partial else "pass out= to make it resumable"
    print(
        f"lossatlas: surface {'x'.join(map(str, steps))}: about {took} for {n_points:,} "
        f"points (estimated from the first chunks); {keep}",
        file=sys.stderr,
    )


def check_feasible(steps: Sequence[int], rows: int) -> None:
    """Refuses a grid whose coordinates and values cannot fit in the available memory."""
    n_points = math.prod(steps)
    need = n_points * (len(steps) + 2 * rows) * 8  # coordinates, values, their final table
    available = available_memory()
    if need > available // 2:
        raise LossatlasError(
            f"the grid has {n_points:,} points; its coordinates and values need "
            f"{need / 2**30:,.1f} GiB, more than half the {available / 2**30:.1f} GiB available: "
            "use fewer steps"
        )


def _on_worker(ray: RayOptions, problem: Any, dirs: Directions, origin: dict) -> tuple:
    """What a Ray worker builds its evaluator from (`problem` shipped, or built there)."""
    return problem_on_worker(ray, problem), dirs, origin


def _run(
    problem: Problem,
    dirs: Directions,
    axes: tuple[np.ndarray, ...],
    origin: dict[str, torch.Tensor],
    settings: dict[str, Any],
    key: str,
    fingerprint: str,
    probed: Any,
    partial: Path | None,
    *,
    journal: Journal | None = None,
    plan: Plan | None = None,
    memory_budget: int | str | None,
    path: str,
    chunk_size: int | None,
    slopes: bool,
    compile: bool | str,
    quiet: bool | None,
    ray: RayOptions | None,
    rows: int,
) -> Surface:
    """The grid's values, chunk by chunk, recorded in the journal at `partial` if given."""
    ray_stats: dict[str, Any] = {}
    evaluator = Evaluator(
        problem,
        dirs,
        center=origin,
        memory_budget=memory_budget,
        path=path,
        chunk_size=chunk_size,
        slopes=slopes,
        plan=plan,
        n_points=math.prod(len(a) for a in axes),
        probed=probed,
        compile=compile,
    )
    n_points, size = math.prod(len(a) for a in axes), evaluator.plan.chunk_size
    n_chunks = math.ceil(n_points / size)
    if journal is None and partial is not None:
        journal = Journal.create(partial, {"key": key, "plan": vars(evaluator.plan)})
    done: dict[int, np.ndarray] = journal.done if journal else {}
    resumed = len(done)
    coeffs = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    start = time.perf_counter()
    try:
        with progress(
            f"surface {'x'.join(map(str, settings['steps']))}", n_points, quiet=quiet
        ) as advance:
            finished = sum(len(v) for v in done.values()) // rows
            evaluator.compilation.expect(n_points - finished)
            advance(finished)
            estimate = None
            pending = [i for i in range(n_chunks) if i not in done]

            def record(i: int, values: np.ndarray) -> None:
                if journal is not None:
                    journal.append(i, values)
                else:
                    done[i] = values
                advance(len(values) // rows)

            if ray is not None:  # the chunks go to Ray actors; this process only records
                shipped = functools.partial(
                    _on_worker, ray, shipped_problem(ray, problem), dirs, origin
                )
                options = {"plan": evaluator.plan, "path": evaluator.plan.path, "slopes": slopes}
                options["compile"] = compile is True
                chunks = {i: coeffs[i * size : (i + 1) * size] for i in pending}
                for i, values in evaluate_on_ray(ray, shipped, options, chunks, ray_stats):
                    record(i, values)
            for count, i in enumerate(pending if ray is None else []):
                began = time.perf_counter()
                chunk = evaluator(coeffs[i * size : (i + 1) * size])
                if count == 1:  # the first chunk also pays warm-ups (tracing, compiling)
                    left = sum(min(size, n_points - j * size) for j in pending[1:])
                    per_point = (time.perf_counter() - began) / len(chunk.loss)
                    estimate = began - start + per_point * left
                    _announce_long_run(settings["steps"], n_points - finished, estimate, partial)
                record(i, chunk_values(chunk))
    except KeyboardInterrupt:
        if journal is not None:
            journal.close()
            print(
                f"lossatlas: interrupted; {len(journal.done)}/{n_chunks} chunks are saved in "
                f"{journal.path}; run the same call again to resume",
                file=sys.stderr,
            )
        raise
    seconds = time.perf_counter() - start
    estimated = {} if estimate is None else {"estimated_seconds": estimate}

    table = np.concatenate([done[i].reshape(rows, -1) for i in range(n_chunks)], axis=1)
    shape = tuple(len(a) for a in axes)
    settings.update(key=key, plan=vars(evaluator.plan))
    result = Surface(
        coords=axes,
        loss=table[0].reshape(shape),
        metrics={m: table[j + 1].reshape(shape) for j, m in enumerate(problem.metrics)},
        slopes=np.stack(table[-len(axes) :], -1).reshape(*shape, -1) if slopes else None,
        directions=Directions(
            tuple({k: t.detach().cpu() for k, t in d.items()} for d in dirs), dirs.settings
        ),
        settings=settings,
        provenance={
            "n_samples": problem.n_samples,
            "data_fingerprint": fingerprint,
            "n_params": problem.n_params,
            "n_points": n_points,
            "n_model_calls": evaluator.n_model_calls,
            "n_point_passes": evaluator.n_point_passes,
            "compiled_points": evaluator.compilation.compiled_points,
            **({"ray": ray_stats} if ray is not None else {}),
            "chunks_resumed": resumed,
            "seconds": seconds,
            **estimated,
            "device": str(problem.device),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(),
        },
    )
    counts = {"loss": result.nonfinite}
    counts.update({m: int((~np.isfinite(g)).sum()) for m, g in result.metrics.items()})
    counts = {name: n for name, n in counts.items() if n}
    if counts:
        listed = ", ".join(f"{n} for {name!r}" for name, n in counts.items())
        warnings.warn(
            f"lossatlas: non-finite values at {listed} of {n_points} points "
            "(kept as NaN/inf in the result)",
            LossatlasWarning,
            stacklevel=4,
        )
    if journal is not None:
        journal.close()
    return result
