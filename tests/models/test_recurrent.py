"""LSTM and GRU sequence classifiers: landscapes and curvature against float64 references.

On the CPU no cuDNN kernel is involved. In torch 2.13 the recurrent layers have a double backward
and forward-mode rules, so every Hessian product works, and they run under `vmap` when autograd
traces them (`surface(slopes=True)`). Evaluated without autograd (a plain surface), `aten::lstm`
and `aten::gru` have no batching rule: the engine warns and takes its sequential path, which
gives the same values (recorded by the xfail below). References call a float64 deep copy once
on all the data (`tests.models.reference`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import lossatlas as la
from tests.models import reference as R

VOCAB, WIDTH, HIDDEN, CLASSES = 12, 4, 5, 3
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
CUTS = [(0, 7), (7, 16), (16, 23)]  # unequal batches
# A few parameters for an exact (dim-sized) Hutch++ trace and dense operator blocks.
SUBSET = ["head", "rnn.bias_ih_l0"]


class RecurrentClassifier(nn.Module):
    """Token embedding, one recurrent layer, a linear head on the last hidden state."""

    def __init__(self, cell: type[nn.RNNBase]) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.rnn = cell(WIDTH, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        states, _ = self.rnn(self.embed(tokens))
        return self.head(states[:, -1])


def build(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A seeded classifier (eval mode) and 23 sequences of 6 integer tokens with classes."""
    torch.manual_seed(0)
    model = RecurrentClassifier(CELLS[name]).eval()
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (23, 6), generator=gen)
    return model, tokens, torch.randint(0, CLASSES, (23,), generator=gen)


class Setup:
    """A model, its batches, its float64 Problem and the dense reference Hessian."""

    def __init__(self, name: str) -> None:
        self.model, self.X, self.y = build(name)
        self.batches = [(self.X[i:j], self.y[i:j]) for i, j in CUTS]
        self.loss, self.theta0, self.names = R.flat_loss(
            self.model, lambda out: F.cross_entropy(out, self.y), (self.X,)
        )
        self.hessian = R.dense_hessian(self.loss, self.theta0)
        self.eigenvalues = torch.linalg.eigvalsh(self.hessian)
        sizes = dict((n, p.numel()) for n, p in self.model.named_parameters())
        starts = np.cumsum([0] + [sizes[n] for n in self.names])
        self.index = {n: torch.arange(starts[i], starts[i + 1]) for i, n in enumerate(self.names)}

    def problem(self, **options) -> la.Problem:
        return la.Problem(self.model, nn.CrossEntropyLoss(), self.batches, **options)

    def block(self, params: list[str]) -> torch.Tensor:
        """Flat indices of the parameters named (or prefixed) by `params`, in model order."""
        return torch.cat(
            [
                i
                for n, i in self.index.items()
                if any(n == p or n.startswith(p + ".") for p in params)
            ]
        )


@pytest.fixture(scope="module")
def setup() -> Callable[[str], Setup]:
    cache: dict[str, Setup] = {}

    def get(name: str) -> Setup:
        if name not in cache:
            cache[name] = Setup(name)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(CELLS))
def test_surface_and_slopes_match_brute_force(name, setup) -> None:
    s = setup(name)
    problem = s.problem(dtype=torch.float64)
    dirs = la.random_directions(problem, n=2, seed=5)
    land = la.surface(problem, dirs, steps=(3, 4), span=(-0.8, 0.8), slopes=True, quiet=True)
    flat_dirs = [R.flat(d, s.names) for d in dirs]
    for i, c1 in enumerate(land.coords[0]):
        for j, c2 in enumerate(land.coords[1]):
            at = R.offsets(problem.params, dirs, (c1, c2))
            expected = R.loss_at(s.model, lambda out: F.cross_entropy(out, s.y), (s.X,), params=at)
            assert land.loss[i, j] == pytest.approx(expected, rel=1e-10)
            theta = s.theta0 + c1 * flat_dirs[0] + c2 * flat_dirs[1]
            np.testing.assert_allclose(
                land.slopes[i, j], R.slopes(s.loss, theta, flat_dirs), rtol=1e-8, atol=1e-12
            )


# The fallback warning is recorded by the xfail below; here only the values are checked.
@pytest.mark.filterwarnings("ignore:lossatlas. this model cannot run under vmap")
@pytest.mark.parametrize("name", list(CELLS))
def test_a_float32_model_matches_the_float64_reference(name, setup) -> None:
    s = setup(name)
    problem = s.problem()
    dirs = la.random_directions(problem, n=1, seed=6)
    line = la.surface(problem, dirs, steps=5, quiet=True)
    d64 = [{n: t.double() for n, t in dirs[0].items()}]
    params = {n: w.double() for n, w in problem.params.items()}
    expected = [
        float(s.loss(R.flat(R.offsets(params, d64, (c,)), s.names))) for c in line.coords[0]
    ]
    np.testing.assert_allclose(line.loss, expected, rtol=1e-5)


@pytest.mark.parametrize("name", list(CELLS))
def test_eigenvalues_trace_and_stable_lr_match_the_dense_hessian(name, setup) -> None:
    s = setup(name)
    problem = s.problem(dtype=torch.float64)
    top = la.hessian_eigen(problem, k=2, tol=1e-10)
    np.testing.assert_allclose(top.eigenvalues, s.eigenvalues.flip(0)[:2].numpy(), rtol=1e-8)
    bottom = la.hessian_eigen(problem, k=1, which="bottom", tol=1e-10)
    assert bottom.eigenvalues[0] == pytest.approx(float(s.eigenvalues[0]), rel=1e-8)
    assert la.max_stable_lr(float(top.eigenvalues[0])) == pytest.approx(
        2 / float(s.eigenvalues[-1]), rel=1e-8
    )
    idx = s.block(SUBSET)
    exact = la.hessian_trace(problem, n_vectors=3 * len(idx), params=SUBSET, quiet=True)
    assert exact.estimate == pytest.approx(float(s.hessian[idx][:, idx].trace()), rel=1e-8)


@pytest.mark.parametrize("method", ["forward", "double"])
@pytest.mark.parametrize("name", list(CELLS))
def test_hessian_products_by_each_method_match_the_dense_block(name, method, setup) -> None:
    """Forward-over-reverse needs the recurrent layers' forward-mode and vmap rules, double
    backprop their double backward (without cached graphs here)."""
    s = setup(name)
    problem = s.problem(dtype=torch.float64)
    params = ["rnn", "head"]
    op = la.HessianOperator(problem, params=params, method=method, memory_budget=0)
    V = torch.randn(op.dim, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    idx = s.block(params)
    torch.testing.assert_close(op.matmat(V), s.hessian[idx][:, idx] @ V, rtol=1e-9, atol=1e-12)
    assert op.method == method


@pytest.mark.xfail(
    strict=True,
    raises=la.LossatlasWarning,
    reason="LIMITATION: aten::lstm/gru have no vmap batching rule under no_grad, so a plain "
    "surface warns and runs point by point (with slopes=True the same model runs batched)",
)
@pytest.mark.parametrize("name", list(CELLS))
def test_a_plain_surface_runs_batched_without_a_warning(name, setup) -> None:
    problem = setup(name).problem()
    dirs = la.random_directions(problem, n=1, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", la.LossatlasWarning)
        land = la.surface(problem, dirs, steps=3, quiet=True)
    assert land.settings["plan"]["path"] == "vmap"
