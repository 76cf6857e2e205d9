"""Benchmark: a surface on Ray against the local engine, and 1 against 2 workers.

Run: `python bench/ray_overhead.py` (about a minute). Starts a local Ray in this process
(`ray.init()` with this machine's CPUs), so workers share the machine with the driver.

Case: the digits MLP (`digits-mlp`, 26,506 weights, 1,797 samples), a 41x41 filter-normalised
plane in chunks of 16 points (106 chunks). Local: the engine in this process with 1 and with all
threads. Ray: 1 and 2 workers of one CPU each, after a warm-up run (actor start-up and the
problem's shipping are reported separately: they are paid once per run). Per-chunk overhead
= (Ray with 1 worker - local with 1 thread) / chunks.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import torch

import lossatlas as la

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
STEPS = 41  # 1,681 points in 106 chunks


def timed(fn) -> tuple[float, la.Surface]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    import ray

    threads = torch.get_num_threads()
    problem = la.get_problem("digits-mlp")
    dirs = la.random_directions(problem, 2, seed=0)

    def run(**options) -> la.Surface:
        return la.surface(problem, dirs, steps=STEPS, chunk_size=16, quiet=True, **options)

    run()  # warm-up
    torch.set_num_threads(1)
    one_thread, local = timed(run)
    torch.set_num_threads(threads)
    all_threads, _ = timed(run)
    ray.init(
        address="local", num_cpus=threads, include_dashboard=False, logging_level=logging.WARNING
    )
    options = {n: la.RayOptions(address=None, workers=n) for n in (1, 2)}
    startup, _ = timed(lambda: run(ray=options[1]))  # first: starts workers, ships the problem
    one_worker, remote = timed(lambda: run(ray=options[1]))
    two_workers, remote2 = timed(lambda: run(ray=options[2]))
    ray.shutdown()
    chunks = -(-remote.provenance["n_points"] // 16)
    up1, up2 = (r.provenance["ray"]["startup_seconds"] for r in (remote, remote2))
    same = np.array_equal(remote.loss, local.loss) and np.array_equal(remote2.loss, local.loss)
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}\n")
    print("| run | seconds | vs local (1 thread) |")
    print("|---|---|---|")
    for name, seconds in [
        ("local, 1 thread", one_thread),
        (f"local, {threads} threads", all_threads),
        ("Ray, first run (starts the worker)", startup),
        ("Ray, 1 worker", one_worker),
        ("Ray, 2 workers", two_workers),
        ("Ray, 1 worker, without its start-up", one_worker - up1),
        ("Ray, 2 workers, without their start-up", two_workers - up2),
    ]:
        print(f"| {name} | {seconds:.2f} | {one_thread / seconds:.2f}x |")
    print(f"\nworker start-up (build the problem, plan): {up1:.2f} s (1), {up2:.2f} s (2)")
    overhead = (one_worker - up1 - one_thread) / chunks
    print(f"\nper-chunk overhead of Ray (1 worker vs 1 local thread): {overhead * 1e3:.1f} ms")
    print(f"grids identical to the local run: {same}")


if __name__ == "__main__":
    main()
