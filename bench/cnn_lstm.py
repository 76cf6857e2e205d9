"""Benchmark: ResNet-18 and LSTM surfaces against the per-point loop a user would write.

Run: `python bench/cnn_lstm.py` (`--quick`: 3x3 grids on 64 samples).

Cases (`bench/nets.py`): ResNet-18 (11.2M weights, BatchNorm in evaluation mode) on 256
CIFAR-size images, a 7x7 plane; an LSTM classifier (2 layers, width 128) on 256 sequences of 32
ids, an 11x11 plane; filter-normalised directions (biases and BatchNorm fixed). In one run per
case: lossatlas with its default plan and with one point per chunk (after a warm-up call that
pays one-time costs), and the loop: a deep copy of the model, each point's weights written
with `copy_`, the data in batches of 256 under `no_grad`, losses read with `.item()`. The loop
is timed on points spread over the grid (scaled to all points), which also check that both
give the same values.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import numpy as np
import torch
from nets import lstm_case, resnet18_case
from torch import nn

import lossatlas as la


def per_point_loop(model, x, y, w0, dirs, coeffs, batch: int = 256) -> np.ndarray:
    net = copy.deepcopy(model).eval()
    params, loss_fn, losses = dict(net.named_parameters()), nn.CrossEntropyLoss(), []
    with torch.no_grad():
        for a, b in coeffs:
            for name, p in params.items():
                p.copy_(w0[name] + a * dirs[0][name] + b * dirs[1][name])
            total = sum(
                loss_fn(net(x[i : i + batch]), y[i : i + batch]).item() * len(x[i : i + batch])
                for i in range(0, len(x), batch)
            )
            losses.append(total / len(x))
    return np.array(losses)


def run_case(name: str, model, x, y, steps: int, quick: bool) -> None:
    problem = la.Problem(model, nn.CrossEntropyLoss(), (x, y))
    dirs = la.random_directions(problem, 2, norm="filter", ignore="biasbn", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", la.LossatlasWarning)  # the LSTM's vmap fallback
        la.surface(problem, dirs, 2, (-1, 1), quiet=True)  # warm-up: probe, allocator, caches
        rows = []
        for label, options in (("default plan", {}), ("chunk_size=1", {"chunk_size": 1})):
            start = time.perf_counter()
            land = la.surface(problem, dirs, steps, (-1, 1), quiet=True, **options)
            rows.append((label, time.perf_counter() - start, land))
    coeffs = np.stack(np.meshgrid(*land.coords, indexing="ij"), -1).reshape(-1, 2)
    sample = coeffs[np.linspace(0, len(coeffs) - 1, 3 if quick else 7).astype(int)]
    w0 = {k: v.clone() for k, v in problem.params.items()}
    start = time.perf_counter()
    reference = per_point_loop(model, x, y, w0, dirs, sample)
    loop = (time.perf_counter() - start) * len(coeffs) / len(sample)
    index = [int(np.flatnonzero((coeffs == c).all(1))[0]) for c in sample]
    print(f"\n{name}: {problem.n_params:,} weights, {len(x)} samples, {len(coeffs)} points\n")
    print("| run | seconds | vs loop | max rel. diff | plan |")
    print("|---|---|---|---|---|")
    print(f"| per-point loop ({len(sample)} points, scaled) | {loop:.2f} | 1.0x | | |")
    for label, seconds, land in rows:
        got = land.loss.reshape(-1)[index]
        diff = float(np.max(np.abs(got - reference) / np.abs(reference)))
        plan = land.settings["plan"]
        print(f"| {label} | {seconds:.2f} | {loop / seconds:.2f}x | {diff:.1e} | {plan} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3x3 grids on 64 samples")
    args = parser.parse_args()
    n = 64 if args.quick else 256
    print(f"{torch.get_num_threads()} threads; torch {torch.__version__}")
    model, (x, y) = resnet18_case(n)
    run_case("ResNet-18", model, x, y, 3 if args.quick else 7, args.quick)
    model, (x, y) = lstm_case(n)
    run_case("LSTM classifier", model, x, y, 3 if args.quick else 11, args.quick)


if __name__ == "__main__":
    main()
