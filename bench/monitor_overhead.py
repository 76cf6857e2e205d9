"""Benchmark: the cost of watching a training run with `Monitor`, as a share of the training.

Run: `python bench/monitor_overhead.py` (under a minute).

Case: the digits MLP (64-128-128-10, 26,506 weights) trained by SGD with momentum (lr 0.05,
0.9) on mini-batches of 64 of the 1,497 training digits for 1,000 steps, the loop a user writes
(zero_grad, forward, backward, step). With `Monitor(problem, every=50, optimizer=opt)`
(defaults: 512 samples, lambda_max to `tol=1e-2` within 20 products, warm-started; weights kept
in memory here, `out=None`, and once streamed to an HDF5 file), against the same loop without
it, each timed three times alternately; the fastest of each is compared. The trained weights
with and without the monitor are checked to be identical.
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


def main() -> None:
    x, y, _, _ = digits_data()
    init = digits_model()
    init_layers(init, torch.Generator().manual_seed(0))
    print(f"digits MLP, {sum(p.numel() for p in init.parameters()):,} weights, {STEPS} steps")
    plain, watched, streamed, records = [], [], [], None
    for _ in range(3):
        model = copy.deepcopy(init)
        plain.append(train(model, x, y))
        reference = model.state_dict()
        model = copy.deepcopy(init)
        problem = la.Problem(model, nn.CrossEntropyLoss(), (x, y))
        monitor = la.Monitor(problem, every=50, weights=False)
        watched.append(train(model, x, y, monitor))
        same = all(
            torch.equal(a, b) for a, b in zip(reference.values(), model.state_dict().values())
        )
        assert same, "the monitor changed the training"
        records = monitor.history
        with tempfile.TemporaryDirectory() as folder:
            model = copy.deepcopy(init)
            problem = la.Problem(model, nn.CrossEntropyLoss(), (x, y))
            monitor = la.Monitor(problem, every=50, out=Path(folder) / "m.h5")
            streamed.append(train(model, x, y, monitor))
            monitor.close()
    base = min(plain)
    print("\n| run | seconds (best of 3) | overhead |")
    print("|---|---|---|")
    print(f"| training alone | {base:.2f} | |")
    for name, times in (("with Monitor(every=50)", watched), ("streamed to HDF5", streamed)):
        print(f"| {name} | {min(times):.2f} | {min(times) / base - 1:+.1%} |")
    print(
        f"\n{len(records)} records, {int(records.hvps.sum())} HVPs in all "
        f"({np.mean(records.hvps):.1f} per record), {records.seconds.sum():.2f} s measuring; "
        f"lambda_max {records.lambda_max[0]:.3g} -> {records.lambda_max[-1]:.3g}, "
        f"2 / lr = {records.threshold[-1]:.3g}; weights identical with and without: yes"
    )


if __name__ == "__main__":
    main()
