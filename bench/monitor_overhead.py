"""Benchmark: the cost of watching a training run with `Monitor`, as a share of the training.

Run: `python bench/monitor_overhead.py` (about two minutes).

Case: the digits MLP (64-128-128-10, 26,506 weights) trained by SGD with momentum (lr 0.05,
0.9) on mini-batches of 64 of the 1,497 training digits for 1,000 steps, the loop a user writes
(zero_grad, forward, backward, step). With `Monitor(problem, every=..., optimizer=opt)`
(defaults: 512 samples, lambda_max to `tol=1e-2` within 20 products, warm-started; no file, and
streamed to an HDF5 file with the weights), against the same loop without it, each timed
three times alternately; the fastest of each is compared. The trained weights with and without
the monitor are checked to be identical. A second case, a 64-1024-1024-10 MLP (1.1M weights)
on the same data and loop, shows a model whose training steps are compute-bound.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import lossatlas as la
from lossatlas.core.seeding import init_layers
from lossatlas.problems.digits import digits_data, digits_model

STEPS, BATCH = 1000, 64


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, monitor=None) -> float:
    """The user's loop; returns its seconds."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if monitor is not None:
        monitor.optimizer = opt
    gen = torch.Generator().manual_seed(1)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(STEPS):
        idx = torch.randint(0, len(x), (BATCH,), generator=gen)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
        if monitor is not None:
            monitor.step()
    return time.perf_counter() - start


STREAMED = "every=50, streamed to HDF5 with the weights"
CONFIGS = (  # (label, Monitor options)
    ("every=50 (defaults: 512 samples)", {"every": 50}),
    ("every=50, data=64", {"every": 50, "data": 64}),
    ("every=100, data=64", {"every": 100, "data": 64}),
    ("every=200", {"every": 200}),
    ("every=500", {"every": 500}),
    (STREAMED, {"every": 50, "weights": True}),
)


WIDE_CONFIGS = (
    ("every=50 (defaults: 512 samples)", {"every": 50}),
    ("every=50, data=64", {"every": 50, "data": 64}),
    ("every=100, data=64", {"every": 100, "data": 64}),
)


def wide_model() -> nn.Sequential:
    """A compute-bound case: 64-1024-1024-10 (1.1M weights) on the same digits."""
    return nn.Sequential(
        nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )  # fmt: skip


def measure(name: str, init: nn.Module, configs, x, y) -> None:
    """Time training alone and under each monitor configuration, best of three, alternated."""
    print(f"\n{name}, {sum(p.numel() for p in init.parameters()):,} weights, {STEPS} steps")
    plain: list[float] = []
    watched: dict[str, list[float]] = {label: [] for label, _ in configs}
    records: dict[str, la.MonitorRecord] = {}
    folder = tempfile.TemporaryDirectory()
    for repeat in range(3):
        model = copy.deepcopy(init)
        plain.append(train(model, x, y))
        reference = model.state_dict()
        for label, options in configs:
            model = copy.deepcopy(init)
            problem = la.Problem(model, nn.CrossEntropyLoss(), (x, y))
            out = Path(folder.name) / f"m{repeat}.h5" if label == STREAMED else None
            monitor = la.Monitor(problem, **{"weights": False, "out": out, **options})
            watched[label].append(train(model, x, y, monitor))
            monitor.close()
            after = model.state_dict().values()
            assert all(map(torch.equal, reference.values(), after)), "the monitor changed training"
            records[label] = monitor.history
    folder.cleanup()
    base = min(plain)
    print("\n| run | seconds (best of 3) | overhead | records | HVPs per record | ms per record |")
    print("|---|---|---|---|---|---|")
    print(f"| training alone ({1000 * base / STEPS:.2f} ms a step) | {base:.2f} | | | | |")
    for label, _ in configs:
        r, best = records[label], min(watched[label])
        print(
            f"| {label} | {best:.2f} | {best / base - 1:+.0%} | {len(r)} | "
            f"{np.mean(r.hvps):.1f} | {1000 * (best - base) / len(r):.1f} "
            f"({(best - base) / len(r) / (base / STEPS):.1f} steps) |"
        )
    r = records[configs[0][0]]
    print(
        f"\nlambda_max {r.lambda_max[0]:.3g} -> {r.lambda_max[-1]:.3g}, (2 + 2 beta) / lr = "
        f"{r.threshold[-1]:.3g}; trained weights identical with and without a monitor: yes"
    )


def main() -> None:
    x, y, _, _ = digits_data()
    for name, make, configs in [
        ("digits MLP", digits_model, CONFIGS),
        ("wide MLP", wide_model, WIDE_CONFIGS),
    ]:
        init = make()
        init_layers(init, torch.Generator().manual_seed(0))
        measure(name, init, configs, x, y)


if __name__ == "__main__":
    main()
