"""The Hessian of a Problem's loss as a linear operator: exact Hessian-vector products.

`H v = d/de grad L(theta + e v) |_{e=0}`, computed per batch and summed with the same sample
weights as the engine, so it is the Hessian of the loss over the selected data at once (full
data, one batch or a fixed seeded subset). Two ways to get it:

- `"forward"`: forward-over-reverse, `torch.func.jvp` of `torch.func.grad` (Pearlmutter 1994);
  one pass per batch, and `matmat` runs many vectors in that pass under `torch.func.vmap`.
- `"double"`: double backprop, reverse-over-reverse: the gradient's graph is built once per
  batch and every vector of a `matmat` is pulled back through it (`torch.func.vjp` of
  `torch.func.grad`; `H` is symmetric, so `v^T H = (H v)^T`). The fallback when an op has no
  forward-mode rule (for example `mse_loss` in torch 2.13 under forward-over-reverse).

Parameters outside `params` are held fixed: the operator is the block of the Hessian for the
chosen parameters only. BatchNorm is in eval mode with the stored statistics: a Problem with
`bn="recompute"` (and BatchNorm layers) is refused, and with it every curvature and sharpness
estimate built on the operator. Vectors are flat, in
the order of `names`, in the problem's dtype; `as_linear_operator` wraps it for SciPy.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.func import grad, jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from lossatlas.core.directions import as_center
from lossatlas.core.engine import probe
from lossatlas.core.planning import default_budget, parse_bytes, tune_malloc
from lossatlas.core.problem import Batch, Problem, batch_value
from lossatlas.curvature.selection import DataSelection, select_data
from lossatlas.errors import LossatlasError, LossatlasWarning, check_count, one_line

METHODS = ("auto", "forward", "double")
CACHED_BLOCK_BYTES = 64 * 2**20
Params = dict[str, torch.Tensor]


NOT_FINITE = (
    "the loss or its derivatives are not finite (NaN or inf) at this point: its curvature is "
    "undefined; check the weights, the data and the loss function"
)


def select_params(problem: Problem, params: str | Sequence[str] | None) -> list[str]:
    """Parameter names picked by exact name or module prefix (`"0"` picks `0.weight`, `0.bias`)."""
    names = list(problem.params)
    if params is None:
        return names
    wanted = [params] if isinstance(params, str) else list(params)
    if not wanted:
        raise LossatlasError("params is empty; pass None for all parameters")
    picked: list[str] = []
    for entry in wanted:
        hits = [n for n in names if n == entry or n.startswith(f"{entry}.")]
        if not hits:
            modules = sorted({n.rsplit(".", 1)[0] for n in names if "." in n})
            raise LossatlasError(
                f"no parameter or module named {entry!r}; parameters: {names[:8]}"
                + ("..." if len(names) > 8 else "")
                + (f", modules: {modules[:8]}" if modules else "")
            )
        picked += [n for n in hits if n not in picked]
    return [n for n in names if n in picked]  # the model's order, whatever order was asked


class HessianOperator:
    """`v -> H v` for the Hessian of a Problem's loss with respect to chosen parameters.

    Args:
        problem: model, loss and data.
        at: the point (a model or `{name: tensor}` dict); default the problem's weights.
        params: names or module prefixes of the parameters to differentiate (None: all).
        data: `"all"` (default), `"first_batch"`, or an int `n`: a fixed subset of `n`
            samples drawn with `seed` (data held in memory only).
        seed: seed of the subset.
        method: `"auto"`, `"forward"` or `"double"`. Auto uses double backprop with cached
            graphs when they fit the memory budget (the fastest when many products are taken
            at one point, as every estimator does), else forward-over-reverse, falling back to
            double backprop with a warning.
        memory_budget: bytes (or e.g. "512MB") the cached graphs may take; default the
            engine's budget (a quarter of free memory on the CPU, at most 2 GiB). 0: never cache.
        batch_size: samples per batch for an `(X, y)` pair (default up to 4096); the Hessian
            does not depend on it.
        vectors_per_pass: most vectors `matmat` pushes through one data pass (memory bound).

    Attributes:
        names, shapes, sizes: the chosen parameters, in vector order; `dim` their total size.
        hvps: Hessian-vector products computed so far; `passes`: data passes.
    """

    def __init__(
        self,
        problem: Problem,
        *,
        at: Any = None,
        params: str | Sequence[str] | None = None,
        data: str | int = "all",
        seed: int = 0,
        method: str = "auto",
        batch_size: int | None = None,
        vectors_per_pass: int = 32,
        memory_budget: int | str | None = None,
    ) -> None:
        if method not in METHODS:
            raise LossatlasError(f"method must be one of {METHODS}, got {method!r}")
        vectors_per_pass = check_count("vectors_per_pass", vectors_per_pass)
        problem.require_eval_bn("the Hessian (and the curvature and sharpness estimates on it)")
        self.problem = problem
        center = as_center(problem, at, what="at")
        self.names = select_params(problem, params)
        self.point: Params = {n: center[n] for n in self.names}
        self.fixed: Params = {n: w for n, w in center.items() if n not in self.point}
        self.shapes = [tuple(self.point[n].shape) for n in self.names]
        self.sizes = [self.point[n].numel() for n in self.names]
        self.dim = sum(self.sizes)
        self.data: DataSelection = select_data(problem, data, seed=seed, batch_size=batch_size)
        self.method = method
        self.vectors_per_pass = vectors_per_pass
        self.hvps = 0
        self.passes = 0
        self.dtype, self.device = problem.dtype, problem.device
        if memory_budget == 0:
            self.memory_budget = 0
        else:
            budget = parse_bytes(memory_budget)
            self.memory_budget = default_budget(self.device) if budget is None else budget
        self._graphs: list[tuple[list[torch.Tensor], list[Any], list[int]]] | None = None
        self.cached = False  # whether products reuse cached gradient graphs
        self._graph_loss = 0.0  # the loss summed while the graphs were built
        if self.device.type == "cpu":
            tune_malloc()  # freed activations kept, not faulted in again every product

    def move_to(self, at: Any) -> None:
        """Take the products at another point from now on (a model or `{name: tensor}`): the
        parameters, the data subset and the plan stay; the kept gradient graphs are rebuilt
        at the next product. A `Monitor` moves one operator along a training run this way
        instead of planning a new one at every record."""
        center = as_center(self.problem, at, what="at")
        self.point = {n: center[n] for n in self.names}
        self.fixed = {n: w for n, w in center.items() if n not in self.point}
        self.release()

    def release(self) -> None:
        """Free the kept gradient graphs (their activations); the next product rebuilds them."""
        self._graphs, self._graph_loss = None, 0.0

    # -- vectors <-> parameter dicts -----------------------------------------------------------
    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """The chosen parameters' entries of a `{name: tensor}` dict as one flat vector."""
        return torch.cat([tensors[n].reshape(-1) for n in self.names]).to(self.dtype)

    def unflatten(self, v: torch.Tensor, *, full: bool = False) -> Params:
        """A flat vector as `{name: tensor}`; with `full`, zeros for the fixed parameters too."""
        parts = torch.split(v.to(self.device, self.dtype), self.sizes)
        out = {n: p.reshape(s) for n, p, s in zip(self.names, parts, self.shapes)}
        if full:
            out = {n: out.get(n, torch.zeros_like(w)) for n, w in self.problem.params.items()}
        return out

    def _check(self, V: torch.Tensor, what: str) -> torch.Tensor:
        V = torch.as_tensor(V)
        if V.shape[0] != self.dim:
            raise LossatlasError(f"{what} has {V.shape[0]} rows, the operator has dim {self.dim}")
        return V.to(self.device, self.dtype)

    # -- the loss ------------------------------------------------------------------------------
    def _batch_loss(self, point: Params, batch: Batch, weight: float) -> torch.Tensor:
        x, y = batch
        problem = self.problem
        out = problem.call(({**self.fixed, **point}, problem.buffers), x)
        return batch_value(problem.loss_fn(out, y)).to(self.dtype) * weight

    def loss_and_grad(self, offset: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
        """Loss and flat gradient at `point + offset` over the selected data (at the point
        itself from the kept gradient graphs, once built: no second pass)."""
        if offset is None and self._graphs is not None:
            return self._graph_loss, self.gradient()
        point = self._shifted(offset)
        total, grads = 0.0, torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for batch, weight in self.data.weighted():
            leaves = {n: w.detach().requires_grad_(True) for n, w in point.items()}
            with torch.enable_grad():
                value = self._batch_loss(leaves, batch, weight)
                g = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
            total += float(value.detach())
            grads += torch.cat(
                [
                    (gi if gi is not None else torch.zeros_like(w)).reshape(-1)
                    for gi, w in zip(g, leaves.values())
                ]
            )
        return total, grads

    def metrics(self, offset: torch.Tensor | None = None) -> dict[str, float]:
        """Loss and the problem's metrics at `point + offset` (sample-weighted means)."""
        point = self._shifted(offset)
        problem = self.problem
        sums = {"loss": 0.0, **{k: 0.0 for k in problem.metrics}}
        with torch.no_grad():
            for batch, weight in self.data.weighted():
                x, y = batch
                out = problem.call(({**self.fixed, **point}, problem.buffers), x)
                sums["loss"] += float(batch_value(problem.loss_fn(out, y))) * weight
                share = problem.units(x, y) / (self.data.n_units or self.data.n_samples)
                for k, fn in problem.metrics.items():
                    sums[k] += float(batch_value(fn(out, y))) * share
        return sums

    def _shifted(self, offset: torch.Tensor | None) -> Params:
        if offset is None:
            return self.point
        step = self.unflatten(self._check(offset, "offset"))
        return {n: self.point[n] + step[n] for n in self.names}

    # -- products ------------------------------------------------------------------------------
    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """`H v` for one flat vector."""
        return self.matmat(self._check(v, "v").reshape(-1, 1))[:, 0]

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """`H V` for a `(dim, k)` block, up to `vectors_per_pass` vectors per data pass.

        Attention runs by PyTorch's math kernel here: the fused kernels it picks by default
        have no second derivative (neither double backward nor forward mode), the math one
        computes the same function with one.
        """
        V = self._check(V, "V")
        if V.ndim != 2:
            raise LossatlasError(f"V must be a (dim, k) matrix, got shape {tuple(V.shape)}")
        try:
            with sdpa_kernel(SDPBackend.MATH):
                blocks = [
                    self._block(V[:, a : a + self.vectors_per_pass])
                    for a in range(0, V.shape[1], self.vectors_per_pass)
                ]
        except (RuntimeError, NotImplementedError) as exc:  # e.g. an op without 2nd derivative
            raise LossatlasError(
                f"Hessian-vector products fail on this model: {one_line(exc)}"
            ) from exc
        out = V.clone() if not blocks else blocks[0] if len(blocks) == 1 else torch.cat(blocks, 1)
        # The sum is finite when every entry is (4x cheaper than the elementwise test); the
        # full test only runs to rule out an overflow of the sum.
        if not bool(torch.isfinite(out.sum())) and not bool(torch.isfinite(out).all()):
            raise LossatlasError(NOT_FINITE)
        return out

    def _caches_graphs(self) -> bool:
        """Whether products go through kept gradient graphs (decided on first use)."""
        if self.method in ("auto", "double") and not self.cached and self._graphs is None:
            self.cached = self._graphs_fit()
            if self.cached:
                self.method = "double"
        return self.cached

    def block_width(self) -> int:
        """Vectors worth one `matmat` call.

        Through kept graphs every vector is its own backward pass, so a wider block saves no
        work and only costs memory: blocks are kept under `CACHED_BLOCK_BYTES` (a 30-vector
        block of ResNet-18, 1.3 GB in and out, made Hutchinson's trace 17% slower than one
        vector at a time, from page faults). Otherwise `vectors_per_pass`.
        """
        if not self._caches_graphs():
            return self.vectors_per_pass
        vector_bytes = self.dim * (torch.finfo(self.dtype).bits // 8)
        return max(1, min(self.vectors_per_pass, CACHED_BLOCK_BYTES // vector_bytes))

    def _block(self, V: torch.Tensor) -> torch.Tensor:
        if self._caches_graphs():
            return self._cached_products(V)
        if self.method == "auto":
            try:
                out = self._products(V, self._forward)
                self.method = "forward"
                return out
            except LossatlasError:
                raise
            except Exception as exc:  # an op without a forward-mode (or vmap) rule
                warnings.warn(
                    f"forward-over-reverse HVPs failed ({one_line(exc)}); using double backprop",
                    LossatlasWarning,
                    stacklevel=4,
                )
                self.method = "double"
        return self._products(V, self._forward if self.method == "forward" else self._double)

    def _products(self, V: torch.Tensor, rule: Callable) -> torch.Tensor:
        tangents = [self.unflatten(V[:, j]) for j in range(V.shape[1])]
        total = torch.zeros_like(V)
        for batch, weight in self.data.weighted():
            total += rule(batch, weight, tangents)
        self.hvps += V.shape[1]
        self.passes += 1
        return total

    def _graphs_fit(self) -> bool:
        """Whether every batch's gradient graph fits the budget (held data only).

        The graph of `grad L` with `create_graph` keeps about four activations per layer
        output (forward values, their gradients and what the second backward needs).
        """
        if self.data.batches is None or self.memory_budget <= 0:
            return False
        per_sample = probe(self.problem, {**self.fixed, **self.point}).footprint.total
        itemsize = torch.finfo(self.dtype).bits // 8
        need = 4 * per_sample * itemsize * self.data.n_samples + 4 * itemsize * self.dim
        return need <= self.memory_budget

    def _build_graphs(self) -> None:
        """Each batch's gradient, kept with its graph (`create_graph`) for the products."""
        self._graphs, self._graph_loss = [], 0.0
        for batch, weight in self.data.weighted():
            leaves = [self.point[n].detach().requires_grad_(True) for n in self.names]
            with torch.enable_grad():
                value = self._batch_loss(dict(zip(self.names, leaves)), batch, weight)
                if not bool(torch.isfinite(value)):
                    self._graphs = None
                    raise LossatlasError(NOT_FINITE)
                grads = torch.autograd.grad(value, leaves, create_graph=True, allow_unused=True)
            self._graph_loss += float(value.detach())
            # Only gradients that still depend on the parameters have a second derivative.
            live = [k for k, g in enumerate(grads) if g is not None and g.requires_grad]
            self._graphs.append((leaves, list(grads), live))

    def gradient(self) -> torch.Tensor:
        """The loss's flat gradient at the point; free once the products' graphs are kept."""
        if not self._caches_graphs():
            return self.loss_and_grad()[1]
        if self._graphs is None:
            with sdpa_kernel(SDPBackend.MATH):  # the kernel the products differentiate
                self._build_graphs()
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for leaves, grads, _ in self._graphs:
            total += torch.cat(
                [
                    (g if g is not None else torch.zeros_like(w)).detach().reshape(-1)
                    for g, w in zip(grads, leaves)
                ]
            )
        return total

    def _cached_products(self, V: torch.Tensor) -> torch.Tensor:
        """Double backprop through each batch's gradient graph, built once and kept."""
        if self._graphs is None:
            self._build_graphs()
        columns = V.T.contiguous()  # one vector per row: the same values whatever V's layout
        total, filled = torch.empty_like(columns), False
        for leaves, grads, live in self._graphs:
            if not live:
                continue
            for j in range(V.shape[1]):
                parts = torch.split(columns[j], self.sizes)
                hv = torch.autograd.grad(
                    [grads[k] for k in live],
                    leaves,
                    grad_outputs=[parts[k].reshape(self.shapes[k]) for k in live],
                    retain_graph=True,
                    allow_unused=True,
                )
                flat = [
                    (h if h is not None else torch.zeros_like(w)).reshape(-1)
                    for h, w in zip(hv, leaves)
                ]
                if filled:
                    total[j] += torch.cat(flat)
                else:  # the first batch writes its products in place: no zeros, no sum
                    torch.cat(flat, out=total[j])
            filled = True
        if not filled:
            total.zero_()
        self.hvps += V.shape[1]
        self.passes += 1
        return total.T

    def _forward(self, batch: Batch, weight: float, tangents: list[Params]) -> torch.Tensor:
        def gradient(point: Params) -> Params:
            return grad(lambda p: self._batch_loss(p, batch, weight))(point)

        def hvp(tangent: Params) -> torch.Tensor:
            return self.flatten(jvp(gradient, (self.point,), (tangent,))[1])

        if len(tangents) == 1:
            return hvp(tangents[0]).reshape(-1, 1)
        stacked = {n: torch.stack([t[n] for t in tangents]) for n in self.names}
        return vmap(hvp)(stacked).T

    def _double(self, batch: Batch, weight: float, tangents: list[Params]) -> torch.Tensor:
        def gradient(point: Params) -> Params:
            return grad(lambda p: self._batch_loss(p, batch, weight))(point)

        _, pull = vjp(gradient, self.point)  # H is symmetric: pulling v back through grad is Hv

        def hvp(tangent: Params) -> torch.Tensor:
            return self.flatten(pull(tangent)[0])

        if len(tangents) > 1:
            stacked = {n: torch.stack([t[n] for t in tangents]) for n in self.names}
            try:
                return vmap(hvp)(stacked).T
            except Exception:  # no batching rule for some op: one vector at a time
                pass
        return torch.stack([hvp(t) for t in tangents], dim=1)

    # -- conveniences --------------------------------------------------------------------------
    def dense(self) -> torch.Tensor:
        """The whole `dim x dim` matrix, column by column (for small problems and tests)."""
        if self.dim > 20_000:
            raise LossatlasError(f"a dense Hessian of dim {self.dim} is too large; use matvec")
        return self.matmat(torch.eye(self.dim, dtype=self.dtype, device=self.device))

    def as_linear_operator(self) -> Any:
        """A SciPy `LinearOperator` in float64 NumPy for `eigsh` and friends."""
        from scipy.sparse.linalg import LinearOperator

        def matmat(X: np.ndarray) -> np.ndarray:
            V = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64).reshape(self.dim, -1))
            return self.matmat(V).to("cpu", torch.float64).numpy()

        return LinearOperator(
            (self.dim, self.dim),
            matvec=lambda x: matmat(x)[:, 0],
            matmat=matmat,
            rmatvec=lambda x: matmat(x)[:, 0],  # symmetric
            dtype=np.float64,
        )

    @property
    def settings(self) -> dict[str, Any]:
        """What this operator is, for the provenance of results built on it."""
        return {
            "params": self.names if self.fixed else "all",
            "dim": self.dim,
            "data": self.data.describe(),
            "n_samples": self.data.n_samples,
            "method": self.method,
            "cached_graphs": self.cached,
            "dtype": str(self.dtype).removeprefix("torch."),
            "bn": self.problem.bn,
        }

    def __repr__(self) -> str:
        return f"HessianOperator(dim={self.dim}, data={self.data.describe()}, method={self.method})"


def as_operator(source: Problem | HessianOperator, **options: Any) -> HessianOperator:
    """`source` itself if it is an operator (no options allowed), else an operator on it."""
    if isinstance(source, HessianOperator):
        if options:
            raise LossatlasError(
                f"options {sorted(options)} apply to a Problem; the operator already has its own"
            )
        return source
    if not isinstance(source, Problem):
        raise LossatlasError(
            f"expected a Problem or a HessianOperator, got {type(source).__name__}"
        )
    known = inspect.signature(HessianOperator).parameters
    unknown = sorted(set(options) - set(known))
    if unknown:
        choices = ", ".join(k for k in known if k != "problem")
        raise LossatlasError(f"unknown option {unknown[0]!r}; the Hessian's options are {choices}")
    return HessianOperator(source, **options)
