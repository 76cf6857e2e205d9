"""Blocks of probe vectors on Ray actors (`core.cluster`): `hessian_trace` and
`spectral_density` with `ray=`.

Each actor builds a `HessianOperator` once (`build_operator`) from the Problem and the options of
the driver's operator (`operator_recipe`), shipped once with `ray.put`, so every worker
multiplies by the same Hessian: the same point, parameters, data selection, product method and
memory budget (a resolved number of bytes, so every worker decides as the driver does whether to
keep the gradient graphs).

A task is a block of probe vectors described by the state of the driver's `torch.Generator`
before the block's first row and the number of rows: the worker restores that state and draws the
rows itself with the estimator's own drawing function (a `kernel`). The estimators draw row by
row, so a row does not depend on the block it falls in, and the driver gets each block's state by
drawing the rows before it into one reusable row (`seeded_tasks`): the same vectors as a local
run, without sending model-sized vectors to the workers. What comes back is small (quadratic
forms, Lanczos coefficients), except Hutch++'s sketch products `H S`, which the driver needs
whole to orthonormalise. A value that every task needs (Hutch++'s basis `Q`) goes to the object
store once (`RayBlocks.share`) and each worker fetches it once.

Faults are `run_on_ray`'s: a dead worker's blocks are requeued and drawn again from the same
generator states, so a lost worker changes neither the probes nor the estimate; only the
products of the blocks whose results were used are counted.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from lossatlas.core.cluster import (
    RayOptions,
    connect,
    problem_on_worker,
    run_on_ray,
    shipped_problem,
    worker_count,
)
from lossatlas.curvature.operator import HessianOperator
from lossatlas.curvature.probes import (
    basis_forms,
    bits,
    normals,
    residual_forms,
    sketch,
    skip_rows,
)
from lossatlas.curvature.selection import DataSelection

Kernel = Callable[..., Any]  # kernel(op, generator or None, *args) -> a block's value


class Block(NamedTuple):
    """What a worker returns for one task: the kernel's value (tensors on the CPU), the
    Hessian-vector products it spent, and how its operator computed them."""

    value: Any
    hvps: int
    method: str
    cached: bool


@dataclass
class WorkerState:
    """An actor's operator and the shared values (by object id) it has fetched."""

    op: HessianOperator
    shared: dict[str, Any] = field(default_factory=dict)

    def resolve(self, value: Any) -> Any:
        """`value`, or the object a `ray.ObjectRef` names, fetched once and moved onto the
        operator's device (only the latest shared value is kept)."""
        from ray import ObjectRef

        if not isinstance(value, ObjectRef):
            return value
        key = value.hex()
        if key not in self.shared:
            import ray

            got = ray.get(value)
            self.shared = {key: got.to(self.op.device) if isinstance(got, torch.Tensor) else got}
        return self.shared[key]


def operator_recipe(op: HessianOperator) -> dict[str, Any]:
    """`HessianOperator` keyword arguments that rebuild `op` on another machine.

    The point (`at`, fixed parameters included), the chosen parameters, the data selection
    (all data, the first batch, or a subset by its size and seed: `select_data` draws the same
    subset again), the product method as far as it is decided, the batch size, the vectors per
    pass and the memory budget in bytes.
    """
    selection = op.data
    data: str | int = selection.kind if selection.kind != "subset" else selection.n_samples
    return {
        "at": {**op.fixed, **op.point},
        "params": list(op.names),
        "data": data,
        "seed": 0 if selection.seed is None else selection.seed,
        "method": op.method,
        "batch_size": selection.batch_size,
        "vectors_per_pass": op.vectors_per_pass,
        "memory_budget": op.memory_budget,
    }


def build_operator(
    options: RayOptions,
    problem: Any,
    recipe: dict[str, Any],
    held: DataSelection | None = None,
) -> WorkerState:
    """A worker's `setup`: the operator of `recipe` on `problem` (the shipped Problem, or the
    one `options.build` makes on the worker: `core.cluster.problem_on_worker`). `held`
    replaces its data selection (the driver's first batch: a shuffling loader would give
    another one)."""
    op = HessianOperator(problem_on_worker(options, problem), **recipe)
    if held is not None:
        op.data = held
    return WorkerState(op)


def run_block(kernel: Kernel, state: WorkerState, payload: tuple) -> Block:
    """A worker's `work`: `kernel(op, generator, *args)` for a payload `(generator state or
    None, args)`; shared values among `args` are fetched first."""
    generator_state, args = payload
    generator = None
    if generator_state is not None:
        generator = torch.Generator()
        generator.set_state(generator_state)
    op, before = state.op, state.op.hvps
    value = kernel(op, generator, *(state.resolve(a) for a in args))
    if isinstance(value, torch.Tensor):
        value = value.cpu()
    return Block(value, op.hvps - before, op.method, op.cached)


def seeded_tasks(
    generator: torch.Generator,
    total: int,
    size: int,
    skip: Callable[[torch.Generator, int], Any],
    args: tuple = (),
) -> dict[int, tuple]:
    """`{i: (state, (count, *args))}` for blocks of `size` of `total` rows, block `i` starting
    at row `i * size`; `skip(generator, count)` draws (and drops) a block's rows, so the
    generator ends where a local run's would, after all `total` rows."""
    tasks = {}
    for i, first in enumerate(range(0, total, size)):
        count = min(size, total - first)
        tasks[i] = (generator.get_state(), (count, *args))
        skip(generator, count)
    return tasks


class RayBlocks:
    """An estimator's blocks of products on Ray actors that multiply by `op`'s Hessian.

    Each `run` is one `run_on_ray` pool (actors started, used, stopped); an estimator whose
    later blocks depend on earlier results (Hutch++) runs several. `stats` adds them up as the
    surfaces record one: `workers` (the most at once), `requeued`, `replaced`,
    `startup_seconds` (summed), and `pools` (the pools started). `hvps` counts the products of
    the blocks used; `operator` is how the workers' operators computed them (`method`,
    `cached_graphs`), for the result's settings.

    Args:
        options: the cluster and the workers.
        op: the driver's operator (no products are computed with it).
    """

    def __init__(self, options: RayOptions, op: HessianOperator) -> None:
        held = op.data if op.data.kind == "first_batch" else None
        self.options = options
        shipped = shipped_problem(options, op.problem)
        self.setup = functools.partial(build_operator, options, shipped, operator_recipe(op), held)
        self.workers = worker_count(options)
        self.stats: dict[str, Any] = {
            "workers": 0,
            "requeued": 0,
            "replaced": 0,
            "startup_seconds": 0.0,
            "pools": 0,
        }
        self.hvps = 0
        self.operator: dict[str, Any] = {}

    def block_size(self, total: int, most: int) -> int:
        """Rows per task: `total` spread over the tasks the workers hold at once (`in_flight`
        each: `run_on_ray` fills one actor's queue before the next, so fewer tasks would leave
        workers idle), at most `most` (the local block)."""
        return max(1, min(most, math.ceil(total / (self.workers * self.options.in_flight))))

    def share(self, value: Any) -> Any:
        """A `ray.ObjectRef` to `value`, put once in the object store; a task argument that
        workers fetch (once each) before calling the kernel."""
        return connect(self.options).put(value)

    def run(self, kernel: Kernel, tasks: Mapping[Hashable, tuple]) -> Iterator[tuple[Any, Block]]:
        """`(key, Block)` for every `{key: (generator state or None, args)}` of `tasks`, in the
        order they finish, computed by `kernel(op, generator, *args)` on the actors."""
        if not tasks:
            return
        stats: dict[str, Any] = {}
        work = functools.partial(run_block, kernel)
        for key, block in run_on_ray(self.options, self.setup, work, tasks, stats):
            self.hvps += block.hvps
            self.operator = {"method": block.method, "cached_graphs": block.cached}
            yield key, block
        self.stats["workers"] = max(self.stats["workers"], stats.get("workers", 0))
        self.stats["requeued"] += stats.get("requeued", 0)
        self.stats["replaced"] += stats.get("replaced", 0)
        self.stats["startup_seconds"] += stats.get("startup_seconds", 0.0)
        self.stats["pools"] += 1


# -- the trace's phases on Ray (`hessian_trace(..., ray=...)`) ---------------------------------
def quadratic_forms_on_ray(
    op: HessianOperator,
    generator: torch.Generator,
    m: int,
    advance: Callable[[int], Any],
    remote: RayBlocks,
) -> torch.Tensor:
    """`_quadratic_forms` (without `Q`) in blocks on Ray workers that draw the same rows."""
    skip = functools.partial(skip_rows, op.dim, op.dtype, bits)
    tasks = seeded_tasks(generator, m, remote.block_size(m, op.block_width()), skip)
    got = {}
    for key, block in remote.run(residual_forms, tasks):
        got[key] = block.value
        advance(len(block.value))
    return torch.cat([got[i] for i in sorted(got)])


def sketch_on_ray(
    op: HessianOperator, generator: torch.Generator, k: int, remote: RayBlocks
) -> torch.Tensor:
    """Hutch++'s `H S` from Ray workers that draw the Gaussian rows of `S` themselves."""
    skip = functools.partial(skip_rows, op.dim, op.dtype, normals)
    tasks = seeded_tasks(generator, k, remote.block_size(k, op.block_width()), skip)
    got = {key: block.value for key, block in remote.run(sketch, tasks)}
    return torch.cat([got[i] for i in sorted(got)], 1).to(op.device)


def basis_and_residual_on_ray(
    op: HessianOperator,
    generator: torch.Generator,
    Q: torch.Tensor,
    r: int,
    remote: RayBlocks,
    advance: Callable[[int], Any],
) -> tuple[float, torch.Tensor | None]:
    """`tr(Q^T H Q)` and the `r` deflated residual forms (None if `r` is 0), in one pool of Ray
    workers: both need only `Q`, which goes once to the object store."""
    shared, width = remote.share(Q.cpu()), op.block_width()
    size = remote.block_size(Q.shape[0], width)
    tasks: dict[tuple[str, int], tuple] = {
        ("basis", a): (None, (shared, a, min(a + size, Q.shape[0])))
        for a in range(0, Q.shape[0], size)
    }
    if r:
        skip = functools.partial(skip_rows, op.dim, op.dtype, bits)
        residual = seeded_tasks(generator, r, remote.block_size(r, width), skip, (shared,))
        tasks.update({("residual", i): task for i, task in residual.items()})
    got = {}
    for key, block in remote.run(_residual_or_basis, tasks):
        got[key] = block.value
        advance(len(block.value))
    low_rank = float(torch.cat([got[key] for key in sorted(got) if key[0] == "basis"]).sum())
    residual = [got[key] for key in sorted(got) if key[0] == "residual"]
    return low_rank, torch.cat(residual) if residual else None


def _residual_or_basis(
    op: HessianOperator, generator: torch.Generator | None, *args: Any
) -> torch.Tensor:
    """A Ray task of Hutch++'s second pool: `basis_forms` for `(Q, a, b)` (no generator),
    `residual_forms` for `(k, Q)`."""
    if generator is None:
        return basis_forms(op, None, *args)
    return residual_forms(op, generator, *args)
