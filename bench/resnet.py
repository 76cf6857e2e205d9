"""Benchmark: a ResNet-18 surface against the per-point loop a user would write.

Run: `python bench/resnet.py` (`--quick`: a 3x3 grid on 64 images).

ResNet-18 (`bench/nets.py`, 11.2M weights, BatchNorm in evaluation mode) on 256 CIFAR-size
images, a 7x7 filter-normalised plane (biases and BatchNorm fixed). In one run: lossatlas with
its default plan and with one point per chunk, and the loop: a deep copy of the model, each
point's weights written with `copy_`, the data in batches of 128 under `no_grad`, losses read
with `.item()`. The loop is timed on points spread over the grid (scaled to all points), which
also check that both give the same values.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from nets import resnet18_case
from torch import nn

import lossatlas as la


def per_point_loop(model, x, y, w0, dirs, coeffs, batch: int = 128) -> np.ndarray:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3x3 grid on 64 images")
    args = parser.parse_args()
    n, steps = (64, 3) if args.quick else (256, 7)
    model, (x, y) = resnet18_case(n)
    problem = la.Problem(model, nn.CrossEntropyLoss(), (x, y))
    dirs = la.random_directions(problem, 2, norm="filter", ignore="biasbn", seed=0)
    print(f"{torch.get_num_threads()} threads; torch {torch.__version__}; {n} images\n")
    rows = []
    for label, options in (("default plan", {}), ("chunk_size=1", {"chunk_size": 1})):
        start = time.perf_counter()
        land = la.surface(problem, dirs, steps, (-1, 1), quiet=True, **options)
        rows.append((label, time.perf_counter() - start, land))
    coeffs = np.stack(np.meshgrid(*land.coords, indexing="ij"), -1).reshape(-1, 2)
    sample = coeffs[np.linspace(0, len(coeffs) - 1, 3 if args.quick else 7).astype(int)]
    w0 = {k: v.clone() for k, v in problem.params.items()}
    start = time.perf_counter()
    reference = per_point_loop(model, x, y, w0, dirs, sample)
    loop = (time.perf_counter() - start) * len(coeffs) / len(sample)
    index = [int(np.flatnonzero((coeffs == c).all(1))[0]) for c in sample]
    print("| run | seconds | vs loop | max rel. diff | plan |")
    print("|---|---|---|---|---|")
    print(f"| per-point loop ({len(sample)} points, scaled) | {loop:.2f} | 1.0x | | |")
    for label, seconds, land in rows:
        got = land.loss.reshape(-1)[index]
        diff = float(np.max(np.abs(got - reference) / np.abs(reference)))
        plan = land.settings["plan"]
        print(f"| {label} | {seconds:.2f} | {loop / seconds:.2f}x | {diff:.1e} | {plan} |")


if __name__ == "__main__":
    main()
