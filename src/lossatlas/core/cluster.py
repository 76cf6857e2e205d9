"""Independent tasks on Ray actors that survive lost workers: the pool every `ray=` uses.

The driver (the process that called e.g. `surface(..., ray=...)`) starts one actor per worker
slot. Each actor runs `setup()` once (build the problem, an evaluator, an operator: shipped
once with `ray.put`), then `work(state, payload)` for each task it is sent. The driver keeps at
most `in_flight` tasks queued per actor (`ray.wait`) and receives every result itself, so it
alone writes journals and files: a task's result is used once, when it arrives.

Faults: an actor that dies (its process killed, its node lost) fails its tasks with a Ray
actor error; the driver puts those tasks back in the queue, sends them to the other actors,
and starts a new actor in the dead one's place. Ray itself neither restarts actors nor retries
tasks (`max_restarts=0`, `max_task_retries=0`), so there is never doubt about which attempt's
result was used. An error raised by `work` itself (the user's model or loss) stops the run
with one line.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lossatlas.errors import LossatlasError, one_line


@dataclass(frozen=True)
class RayOptions:
    """Where and how a run's tasks are evaluated on Ray.

    Attributes:
        address: the cluster (`"auto"`, `"host:port"`, `"ray://host:10001"`); None starts a
            local Ray in this process.
        workers: actors to start (default: as many as the cluster's CPUs, or GPUs when
            `gpus_per_worker` is set, allow; never more than there are tasks).
        cpus_per_worker: CPUs each actor reserves (and the torch threads it uses).
        gpus_per_worker: GPUs each actor reserves. The Problem is evaluated on the device it
            was built for: build it with `device="cuda"` for GPU workers (moving a CPU-built
            problem onto a worker's GPU is not done).
        in_flight: tasks queued per actor, so an actor never waits for the driver.
        build: a picklable function that builds the Problem on each worker instead of
            shipping the driver's (so data can stay on the workers' machines; the CLI passes
            its spec this way). It must build the same problem: a worker whose data
            fingerprint differs from the driver's stops the run with one line.
    """

    address: str | None = "auto"
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    in_flight: int = 2
    build: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise LossatlasError(f"workers must be at least 1, got {self.workers}")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise LossatlasError("cpus_per_worker must be positive and gpus_per_worker >= 0")
        if self.in_flight < 1:
            raise LossatlasError(f"in_flight must be at least 1, got {self.in_flight}")


def as_ray_options(value: Any) -> RayOptions | None:
    """`RayOptions` from an address string or `RayOptions`; None stays None (run locally)."""
    if value is None or isinstance(value, RayOptions):
        return value
    if isinstance(value, str) and value.strip():
        return RayOptions(address=value.strip())
    raise LossatlasError(f"ray= takes an address such as 'auto' or RayOptions, got {value!r}")


def problem_on_worker(options: RayOptions, problem: Any) -> Any:
    """The driver's `problem` (shipped), or the one `options.build` makes on the worker after
    checking that it holds the same data (call on the worker)."""
    if options.build is None:
        return problem
    built = options.build()
    if built.fingerprint() != problem.fingerprint():
        raise LossatlasError(
            "the problem built on a Ray worker holds other data than the driver's (data "
            f"fingerprint {built.fingerprint()[:12]} vs {problem.fingerprint()[:12]})"
        )
    return built


def shipped_problem(options: RayOptions, problem: Any) -> Any:
    """What to ship for `problem_on_worker`: the problem, or only its fingerprint when the
    workers build their own."""
    return problem if options.build is None else _Fingerprint(problem.fingerprint())


@dataclass(frozen=True)
class _Fingerprint:
    """A stand-in for a problem that the workers build: only its data fingerprint travels."""

    value: str

    def fingerprint(self) -> str:
        return self.value


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise LossatlasError(
            "ray= needs Ray: pip install 'lossatlas[ray]' (or pip install ray)"
        ) from None
    return ray


def _check_listening(address: str | None) -> None:
    """A one-line error at once if nothing listens at a `host:port` address (Ray itself would
    retry for minutes before giving up)."""
    if not address or address in ("auto", "local") or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise LossatlasError(f"ray address {address!r} is not host:port")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise LossatlasError(
            f"no Ray cluster at {address!r} ({one_line(exc)}); start one with `ray start "
            "--head` and pass the address it prints"
        ) from None


_connected: dict[str, str | None] = {}  # the address this module connected to


def connect(options: RayOptions) -> Any:
    """Ray, connected to the cluster of `options` (once per process; a one-line error if this
    process is already connected to another cluster)."""
    ray = import_ray()
    _check_listening(options.address)
    if ray.is_initialized():
        first, wanted = _connected.get("address"), options.address
        if first is not None and wanted not in (first, "auto"):
            raise LossatlasError(
                f"this process is connected to the Ray cluster at {first!r}, not {wanted!r}: "
                "call ray.shutdown() first"
            )
    else:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            ray.init(
                address=options.address or "local",
                log_to_driver=False,
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
        except Exception as exc:  # ConnectionError, a bad address, a version mismatch
            raise LossatlasError(
                f"cannot connect to the Ray cluster at {options.address!r}: {one_line(exc)}"
            ) from None
        _connected["address"] = options.address
    return ray


def worker_count(options: RayOptions) -> int:
    """The actors to start for many tasks: `options.workers`, else the worker slots of the
    cluster's CPUs (GPUs with `gpus_per_worker`), at least one."""
    if options.workers is not None:
        return options.workers
    resources = connect(options).cluster_resources()
    if options.gpus_per_worker:
        return max(1, int(resources.get("GPU", 0) // options.gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) // options.cpus_per_worker))


class _Worker:
    """One actor: `setup()` once, then `work(state, payload)` per task."""

    def __init__(self, setup: Callable[[], Any], work: Callable, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.state, self.work = setup(), work

    def run(self, key: Hashable, payload: Any) -> tuple[Hashable, Any]:
        return key, self.work(self.state, payload)

    def pid(self) -> int:
        return os.getpid()


def _cause(exc: Exception) -> str:
    """The last `SomeError: message` line of a Ray error's text (its remote traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if "Error" in line.split(":")[0]]
    cause = lines[-1] if lines else one_line(exc)
    return cause.removeprefix(f"{LossatlasError.__module__}.{LossatlasError.__name__}: ")


def run_on_ray(
    options: RayOptions,
    setup: Callable[[], Any],
    work: Callable[[Any, Any], Any],
    tasks: Mapping[Hashable, Any],
    stats: dict[str, Any],
) -> Iterator[tuple[Hashable, Any]]:
    """`(key, work(state, payload))` for every `{key: payload}` of `tasks`, in the order they
    finish, computed by Ray actors whose `state = setup()`; tasks of an actor that dies are
    requeued. `stats` receives workers, requeued and replaced counts and the start-up time.

    `setup` and `work` are pickled (cloudpickle: closures and `functools.partial` of module
    functions work); `setup` is shipped once with `ray.put`, whatever the number of actors.
    """
    if not tasks:
        return
    ray = connect(options)
    from ray.exceptions import RayActorError, RayTaskError

    n_workers = min(worker_count(options), len(tasks))
    actor_class = ray.remote(_Worker).options(
        num_cpus=options.cpus_per_worker,
        num_gpus=options.gpus_per_worker,
        max_restarts=0,  # a dead worker is replaced by the driver, and its tasks requeued:
        max_task_retries=0,  # Ray never reruns a task, so no result is ever used twice
    )
    args = (ray.put(setup), work, max(1, int(options.cpus_per_worker)))
    began = time.perf_counter()
    actors = [actor_class.remote(*args) for _ in range(n_workers)]
    try:  # every actor runs its setup first: a problem that cannot be built is one error
        ray.get([actor.pid.remote() for actor in actors])
        stats["startup_seconds"] = time.perf_counter() - began
    except RayActorError as exc:
        for actor in actors:
            ray.kill(actor)
        raise LossatlasError(f"a Ray worker could not build the problem: {_cause(exc)}") from None
    queue = collections.deque(tasks)
    running: dict[Any, tuple[Hashable, int, Any]] = {}  # task -> (key, slot, its actor)
    load = [0] * n_workers
    stats.update(workers=n_workers, requeued=0, replaced=0)
    patience = 3 * n_workers * (options.in_flight + 1)  # deaths tolerated before giving up
    try:
        while queue or running:
            for a in range(n_workers):
                while queue and load[a] < options.in_flight:
                    key = queue.popleft()
                    task = actors[a].run.remote(key, tasks[key])
                    running[task], load[a] = (key, a, actors[a]), load[a] + 1
            (done,), _ = ray.wait(list(running), num_returns=1)
            key, a, actor = running.pop(done)
            load[a] -= 1
            try:
                got, result = ray.get(done)
            except RayActorError as exc:  # the actor died: its task goes back to the queue
                stats["requeued"] += 1
                if stats["requeued"] > patience:
                    raise LossatlasError(
                        f"Ray workers keep dying ({one_line(exc)}); giving up"
                    ) from None
                queue.appendleft(key)
                if actor is actors[a]:  # the first of its lost tasks: a new worker
                    actors[a] = actor_class.remote(*args)
                    stats["replaced"] += 1
                continue
            except RayTaskError as exc:  # the user's model or loss raised on the worker
                raise LossatlasError(f"a Ray worker failed: {_cause(exc)}") from None
            yield got, result
    finally:
        for actor in actors:
            ray.kill(actor)


def _context(context: Any) -> Any:
    return context


def _keeping_warnings(work: Callable, context: Any, payload: Any) -> tuple[Any, list]:
    """`work(context, payload)` and the warnings it raised, as `(category, message)`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = work(context, payload)
    return result, [(w.category, str(w.message)) for w in caught]


def map_tasks(
    ray: RayOptions | None,
    context: Any,
    work: Callable[[Any, Any], Any],
    tasks: Mapping[Hashable, Any],
    stats: dict[str, Any],
) -> Iterator[tuple[Hashable, Any]]:
    """`(key, work(context, payload))` for every `{key: payload}` of `tasks`: here, one after
    the other in their order, when `ray` is None; else on Ray actors as they finish
    (`run_on_ray`, `context` shipped once), each worker's warnings repeated here (Ray does not
    forward its workers' output)."""
    if ray is None:
        for key, payload in tasks.items():
            yield key, work(context, payload)
        return
    setup = functools.partial(_context, context)
    remote = functools.partial(_keeping_warnings, work)
    for key, (result, caught) in run_on_ray(ray, setup, remote, tasks, stats):
        for category, message in caught:
            warnings.warn(message, category, stacklevel=3)
        yield key, result
