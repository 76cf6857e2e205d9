"""Benchmark: top Hessian eigenvalue and Hutchinson trace of the digits MLP against a baseline.

Run: `python bench/curvature.py` (`--quick` for a smoke run).

The baseline does what PyHessian does (re-implemented here from its algorithm): power iteration
with double-backprop Hessian-vector products, stopping when the eigenvalue estimate changes by
less than `tol` relatively, and Hutchinson's trace with one double-backprop HVP per Rademacher
vector. It is given PyHessian's faster full-batch mode (the gradient's graph is built once and
every HVP is one extra backward pass), which is possible because the digits data fits in one
batch; its data-loader mode rebuilds the graph for every HVP and is slower.

Timed in one run (timings drift between runs on this machine), against a float64 reference:
- time to the top eigenvalue at 1e-3 relative accuracy: lossatlas `hessian_eigen` (Lanczos)
  against power iteration, both as shipped and counting HVPs;
- Hutchinson's trace with the same vectors both ways (so equal accuracy): lossatlas pushes a
  block of vectors through one pass under `vmap`, the baseline one vector per backward pass.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from surface import cpu_name, matmul_rate

import lossatlas as la
from lossatlas.curvature.operator import HessianOperator
from lossatlas.problems.registry import digits_mlp

TARGET = 1e-3


class Baseline:
    """PyHessian-style HVPs by double backprop.

    Full-batch mode (`batch=None`): one graph of the gradient, one extra backward pass per HVP.
    Data-loader mode: every HVP rebuilds the gradient's graph batch by batch (batches of
    `batch` samples) and sums the products weighted by batch size.
    """

    def __init__(self, problem: la.Problem, batch: int | None = None) -> None:
        self.problem = problem
        self.params = [p.detach().clone().requires_grad_(True) for p in problem.params.values()]
        self.batch = batch
        self.hvps = 0
        if batch is None:
            x, y = next(problem.batches(problem.n_samples))
            self.grads = self._grads(x, y)

    def _grads(self, x, y):
        names = list(self.problem.params)
        out = torch.func.functional_call(
            self.problem.module, (dict(zip(names, self.params)), self.problem.buffers), (x,)
        )
        loss = self.problem.loss_fn(out, y)
        return torch.autograd.grad(loss, self.params, create_graph=True)

    def hvp(self, v: list[torch.Tensor]) -> list[torch.Tensor]:
        self.hvps += 1
        if self.batch is None:
            return list(
                torch.autograd.grad(self.grads, self.params, grad_outputs=v, retain_graph=True)
            )
        total = [torch.zeros_like(p) for p in self.params]
        n = self.problem.n_samples
        for x, y in self.problem.batches(self.batch):
            hv = torch.autograd.grad(self._grads(x, y), self.params, grad_outputs=v)
            total = [t + h * (len(x) / n) for t, h in zip(total, hv)]
        return total

    def power_iteration(self, tol: float, max_iter: int, seed: int) -> list[tuple[float, float]]:
        """(seconds, estimate) after every iteration, until the relative change is below tol."""
        g = torch.Generator().manual_seed(seed)
        v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in self.params]
        v = _normalise(v)
        trace, start, previous = [], time.perf_counter(), None
        for _ in range(max_iter):
            hv = self.hvp(v)
            estimate = float(sum((a * b).sum() for a, b in zip(hv, v)))
            v = _normalise(hv)
            trace.append((time.perf_counter() - start, estimate))
            if previous is not None and abs(estimate - previous) / (abs(previous) + 1e-6) < tol:
                break
            previous = estimate
        return trace

    def hutchinson(self, vectors: torch.Tensor) -> float:
        """Mean of v^T H v over the columns of `vectors` (flat, in parameter order)."""
        sizes = [p.numel() for p in self.params]
        total = 0.0
        for j in range(vectors.shape[1]):
            v = [
                c.reshape(p.shape).to(p.dtype)
                for c, p in zip(torch.split(vectors[:, j], sizes), self.params)
            ]
            total += float(sum((a * b).sum() for a, b in zip(self.hvp(v), v)))
        return total / vectors.shape[1]


def _normalise(v: list[torch.Tensor]) -> list[torch.Tensor]:
    norm = torch.sqrt(sum((t * t).sum() for t in v))
    return [t / norm for t in v]


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def reference(problem: la.Problem) -> float:
    """float64 lambda_max of the same loss, by Lanczos to 1e-12."""
    problem64 = la.Problem(problem.model, problem.loss_fn, next(problem.batches()), dtype="float64")
    op = HessianOperator(problem64, vectors_per_pass=64)
    return float(la.hessian_eigen(op, k=1, which="top", tol=1e-12).eigenvalues[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trace vectors")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    problem = digits_mlp(quiet=True)
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"float32 matmul: {matmul_rate() / 1e9:.0f} GFLOP/s")
    print(f"digits MLP: {problem.n_params} parameters, {problem.n_samples} samples, float32")
    lam = reference(problem)
    print(f"reference (float64): lambda_max {lam:.6g}")

    # -- top eigenvalue -----------------------------------------------------------------------
    print("\ntop eigenvalue, 1e-3 relative accuracy")
    la.hessian_eigen(problem, k=1, which="top", tol=1e-2)  # warm-up
    ours, ours_seconds = _timed(lambda: la.hessian_eigen(problem, k=1, which="top", tol=TARGET))
    ours_error = abs(float(ours.eigenvalues[0]) - lam) / lam
    print(
        f"  lossatlas Lanczos (tol 1e-3):        {ours.hvps} HVPs, {ours_seconds:.3f} s, "
        f"error {ours_error:.1e}"
    )
    for label, batch in (("full-batch", None), ("data-loader, batches of 128", 128)):
        base = Baseline(problem, batch)
        base.power_iteration(TARGET, 2, seed=1)  # warm-up
        base.hvps = 0
        history = base.power_iteration(TARGET, 1000, seed=0)
        stop_seconds, stop_estimate = history[-1]
        reached = [t for t, e in history if abs(e - lam) / lam <= TARGET]
        seconds = reached[0] if reached else stop_seconds  # the earlier is the fairer
        print(
            f"  power iteration, {label}: {base.hvps} HVPs, {stop_seconds:.3f} s, "
            f"error {abs(stop_estimate - lam) / lam:.1e}; within 1e-3 after {seconds:.3f} s: "
            f"lossatlas {seconds / ours_seconds:.1f}x faster"
        )
        if batch is None:
            full = base

    # -- Hutchinson trace ---------------------------------------------------------------------
    m = 30 if args.quick else 300
    g = torch.Generator().manual_seed(0)
    dim = sum(p.numel() for p in problem.params.values())
    vectors = torch.randint(0, 2, (dim, m), generator=g).to(torch.float32) * 2 - 1
    forms = []
    start = time.perf_counter()
    for j in range(m):  # baseline: one double-backprop HVP per vector
        v = [
            c.reshape(p.shape)
            for c, p in zip(
                torch.split(vectors[:, j], [p.numel() for p in full.params]), full.params
            )
        ]
        forms.append(float(sum((a * b).sum() for a, b in zip(full.hvp(v), v))))
    base_seconds = time.perf_counter() - start
    base_mean, base_err = float(np.mean(forms)), float(np.std(forms, ddof=1) / np.sqrt(m))
    print(f"\ntrace, {m} HVPs each")
    print(
        f"  Hutchinson, baseline (full-batch):  {base_seconds:.3f} s, "
        f"{base_mean:.5g} +- {base_err:.2g}"
    )
    for method in ("hutchinson", "hutch++"):
        la.hessian_trace(problem, n_vectors=6, method=method, quiet=True)  # warm-up
        t, seconds = _timed(
            lambda method=method: la.hessian_trace(
                problem, n_vectors=m, method=method, seed=0, quiet=True
            )
        )
        # Variance falls like 1/m: the baseline's time to reach this estimate's stderr.
        equal = base_seconds * (base_err / t.stderr) ** 2
        print(
            f"  {method:10s} lossatlas:            {seconds:.3f} s, {t.estimate:.5g} +- "
            f"{t.stderr:.2g}; baseline needs {equal:.2f} s for that stderr: "
            f"{equal / seconds:.1f}x"
        )


if __name__ == "__main__":
    main()
