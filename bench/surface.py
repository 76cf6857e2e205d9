"""Benchmark: 2D filter-normalised surfaces against the per-point loop and two floors.

Run: `python bench/surface.py` (add `--quick` for a smoke run, `--profile` for the CNN profile).

Cases, timed in one run so ratios are comparable (timings drift between runs on this machine):
- digits MLP 64-128-128-10 (ReLU) on the full scikit-learn digits data (1797 samples), 31x31;
- a small CNN with BatchNorm on 2000 synthetic 3x32x32 images, 21x21.

Each against:
- the per-point loop as the reference implementation runs it: write the point's weights into
  the model, iterate a DataLoader in batches of 128, read loss and accuracy with `.item()`;
- the same loop over pre-sliced tensor batches (no DataLoader: a stronger baseline);
- the forward-pass floor: grid points x one full-data forward pass (+ loss) of the plain model;
- the FLOP floor: grid points x forward FLOPs / the measured float32 matrix-multiply rate;
- loss-landscapes' `random_plane` (the peer's own code, filter normalisation, loss on all data
  at once per point; `make bench` installs it without its dependencies), on the MLP.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import time

# A fresh inductor cache: compile times are those of a first run on a new machine.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="lossatlas-bench-"))

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

import lossatlas as la
from lossatlas.core import Evaluator


def matmul_rate(n: int = 1024, reps: int = 20) -> float:
    """Best float32 matrix-multiply rate in FLOP/s over `reps` products of n x n matrices."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def forward_seconds(model: nn.Module, loss_fn, x, y, reps: int) -> float:
    """Median time of one full-data forward pass plus loss."""

    def once():
        with torch.no_grad():
            loss_fn(model(x), y).item()

    once()
    return float(np.median([_seconds(once) for _ in range(reps)]))


def per_point_loop(model, loss_fn, batches, w0, dirs, coeffs) -> np.ndarray:
    """Write each point's weights into a copy of the model, loop over the batches."""
    net = copy.deepcopy(model).eval()
    params = dict(net.named_parameters())
    losses = []
    with torch.no_grad():
        for a, b in coeffs:
            for name, p in params.items():
                p.copy_(w0[name] + a * dirs[0][name] + b * dirs[1][name])
            total, correct, n = 0.0, 0, 0
            for x, y in batches:
                out = net(x)
                total += loss_fn(out, y).item() * len(x)
                correct += out.argmax(1).eq(y).sum().item()
                n += len(x)
            losses.append(total / n)
    return np.array(losses)


def run_case(name, model, x, y, steps, *, quick: bool, profile: bool) -> dict:
    loss_fn = nn.CrossEntropyLoss()
    model = model.eval()
    problem = la.Problem(model, loss_fn, (x, y), metrics={"accuracy": la.accuracy})
    dirs = la.random_directions(problem, 2, norm="filter", ignore="biasbn", seed=0)
    n_points = steps * steps

    # The first call in a process also pays one-time costs (vmap tracing, heap growth); the
    # floors are measured warm, so the headline is the second call and the first is reported.
    cold = _seconds(lambda: la.surface(problem, dirs, steps=steps, span=(-1, 1), quiet=True))
    start = time.perf_counter()
    land = la.surface(problem, dirs, steps=steps, span=(-1, 1), quiet=True)
    ours = time.perf_counter() - start

    coeffs = np.stack(np.meshgrid(*land.coords, indexing="ij"), -1).reshape(-1, 2)
    sample = coeffs[np.linspace(0, n_points - 1, 8 if quick else 40).astype(int)]
    w0 = {k: v.clone() for k, v in problem.params.items()}
    loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=False)
    sliced = [(x[i : i + 128], y[i : i + 128]) for i in range(0, len(x), 128)]
    t_loader = _seconds(lambda: per_point_loop(model, loss_fn, loader, w0, dirs, sample))
    start = time.perf_counter()
    reference = per_point_loop(model, loss_fn, sliced, w0, dirs, sample)
    t_sliced = time.perf_counter() - start
    scale = n_points / len(sample)
    index = [int(np.flatnonzero((coeffs == c).all(1))[0]) for c in sample]
    max_rel = float(np.max(np.abs(land.loss.reshape(-1)[index] - reference) / np.abs(reference)))

    peer, compiled = None, None
    if name == "digits MLP":
        grid = dict(steps=steps, span=(-1, 1), quiet=True, compile=True)
        compiling = _seconds(lambda: la.surface(problem, dirs, **grid))
        start = time.perf_counter()
        again = la.surface(problem, dirs, **grid)
        seconds = time.perf_counter() - start
        diff = float(np.max(np.abs(again.loss - land.loss) / np.abs(land.loss)))
        compiled = {"s": seconds, "compile_s": compiling - seconds, "diff": diff}
        try:
            import loss_landscapes
            import loss_landscapes.metrics
        except ImportError:
            pass
        else:
            metric = loss_landscapes.metrics.Loss(loss_fn, x, y)
            peer = _seconds(
                lambda: loss_landscapes.random_plane(
                    copy.deepcopy(model), metric, distance=1, steps=steps,
                    normalization="filter", deepcopy_model=True,
                )
            )  # fmt: skip
    fwd = forward_seconds(model, loss_fn, x, y, reps=5 if quick else 30) * n_points
    flops = forward_flops(model, x) * n_points
    row = {
        "case": name,
        "points": n_points,
        "samples": len(x),
        "ours_s": ours,
        "ours_cold_s": cold,
        "loop_dataloader_s": t_loader * scale,
        "loop_sliced_s": t_sliced * scale,
        "forward_floor_s": fwd,
        "flop_floor_s": flops / RATE,
        "peer_s": peer,
        "compiled": compiled,
        "plan": land.settings["plan"],
        "max_rel_diff": max_rel,
    }
    if profile:
        evaluator = Evaluator(problem, dirs)
        chunk = coeffs[: evaluator.plan.chunk_size]
        evaluator(chunk)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            evaluator(chunk)
        row["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    return row


def digits_case():
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    return model, x, y


def cnn_case(n: int = 2000):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip
    with torch.no_grad():  # non-trivial running statistics, as after training
        model.train()
        for i in range(0, n, 250):
            model(x[i : i + 250])
    return model.eval(), x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grids, for a smoke run")
    parser.add_argument("--profile", action="store_true", help="print the CNN's op profile")
    args = parser.parse_args()
    global RATE
    RATE = matmul_rate()
    print(
        f"machine: {cpu_name()}, {torch.get_num_threads()} "
        f"threads; torch {torch.__version__}, lossatlas {la.__version__}"
    )
    print(f"float32 matmul rate: {RATE / 1e9:.0f} GFLOP/s (1024x1024, best of 20)\n")
    rows = [
        run_case("digits MLP", *digits_case(), 11 if args.quick else 31, quick=args.quick,
                 profile=False),
        run_case("CNN+BN", *cnn_case(400 if args.quick else 2000), 5 if args.quick else 21,
                 quick=args.quick, profile=args.profile),
    ]  # fmt: skip
    print(
        "| case | points | lossatlas s (first call) | loop (DataLoader) s | loop (sliced) s | "
        "forward floor s | FLOP floor s | speed-up vs DataLoader loop | vs sliced loop | "
        "/ forward floor | / FLOP floor | max rel. diff |"
    )
    print("|" + "---|" * 12)
    for r in rows:
        print(
            f"| {r['case']} | {r['points']} | {r['ours_s']:.2f} ({r['ours_cold_s']:.2f})"
            f" | {r['loop_dataloader_s']:.2f}"
            f" | {r['loop_sliced_s']:.2f} | {r['forward_floor_s']:.2f} | {r['flop_floor_s']:.2f}"
            f" | {r['loop_dataloader_s'] / r['ours_s']:.1f}x"
            f" | {r['loop_sliced_s'] / r['ours_s']:.1f}x"
            f" | {r['ours_s'] / r['forward_floor_s']:.2f} | {r['ours_s'] / r['flop_floor_s']:.2f}"
            f" | {r['max_rel_diff']:.1e} |"
        )
    for r in rows:
        c = r["compiled"]
        if c is not None:
            saved = (r["ours_s"] - c["s"]) / r["points"]
            even = f"{c['compile_s'] / saved:,.0f} points" if saved > 0 else "never"
            print(
                f"\n{r['case']} compiled (compile=True): {c['s']:.2f} s, "
                f"{r['ours_s'] / c['s']:.2f}x eager, {r['loop_sliced_s'] / c['s']:.1f}x the "
                f"sliced loop; compiling took {c['compile_s']:.1f} s (break-even {even}); "
                f"max rel. diff vs eager {c['diff']:.1e}"
            )
        if r["peer_s"] is not None:
            print(
                f"\n{r['case']}: loss-landscapes random_plane {r['peer_s']:.2f} s, "
                f"lossatlas {r['ours_s']:.2f} s: {r['peer_s'] / r['ours_s']:.2f}x"
                + ("" if c is None else f"; compiled {c['s']:.2f} s: {r['peer_s'] / c['s']:.2f}x")
            )
    for r in rows:
        print(f"\n{r['case']} plan: {r['plan']}")
        if "profile" in r:
            print(r["profile"])


RATE = 1.0
if __name__ == "__main__":
    main()
