"""Hessian trace estimators against float64 dense traces and planted spectra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from lossatlas.curvature.operator import HessianOperator
from lossatlas.curvature.trace import Trace, hessian_trace
from tests.oracles.cases import build_case
from tests.oracles.hessian import dense_hessian, planted_quadratic

METHODS = ["hutchinson", "hutch++"]


def case_operator(name: str) -> tuple[HessianOperator, float]:
    """An operator on 58 samples in batches of 16 (uneven last batch) and the dense trace."""
    case = build_case(name)
    loss = nn.CrossEntropyLoss()
    problem = la.Problem(case.model, loss, case.batches(16), dtype=torch.float64)
    dense = dense_hessian(case.model, loss, case.X, case.y)
    return HessianOperator(problem, vectors_per_pass=64), float(torch.trace(dense))


def planted_operator(eigenvalues) -> tuple[HessianOperator, float]:
    model, data, loss, _ = planted_quadratic(eigenvalues, seed=1)
    return HessianOperator(la.Problem(model, loss, data)), float(sum(eigenvalues))


def coverage(op: HessianOperator, truth: float, method: str, m: int, seeds: int = 40) -> int:
    hits = 0
    for seed in range(seeds):
        t = hessian_trace(op, n_vectors=m, method=method, seed=seed, quiet=True)
        hits += t.ci[0] <= truth <= t.ci[1]
    return hits


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("name", "m"), [("mlp", 64), ("cnn_bn", 30), ("planted", 30)])
def test_the_95_percent_interval_covers_the_true_trace(name, m, method):
    if name == "planted":  # an indefinite spectrum with a few large eigenvalues
        lam = [8.0, 5.0, -3.0, *np.linspace(-0.5, 1.0, 37)]
        op, truth = planted_operator(lam)
    else:
        op, truth = case_operator(name)
    assert coverage(op, truth, method, m) >= 36  # at least 90% of 40 seeds


def test_hutchpp_beats_hutchinson_on_a_decaying_spectrum_at_equal_cost():
    op, truth = planted_operator([0.7**i for i in range(60)])
    plain = [hessian_trace(op, n_vectors=30, method="hutchinson", seed=s) for s in range(10)]
    plus = [hessian_trace(op, n_vectors=30, method="hutch++", seed=s) for s in range(10)]
    assert all(t.hvps == 30 for t in plain + plus)
    mean_se = [np.mean([t.stderr for t in ts]) for ts in (plain, plus)]
    errors = [np.sqrt(np.mean([(t.estimate - truth) ** 2 for t in ts])) for ts in (plain, plus)]
    assert mean_se[1] < 0.2 * mean_se[0]
    assert errors[1] < 0.2 * errors[0]
    assert plus[0].rank == 10 and plus[0].low_rank == pytest.approx(truth, rel=0.05)


def test_hutchpp_is_exact_when_the_sketch_spans_the_space():
    op, truth = case_operator("mlp")  # dim 67
    t = hessian_trace(op, n_vectors=3 * op.dim, seed=4)
    assert t.estimate == pytest.approx(truth, rel=1e-10)
    assert t.stderr == 0.0 and t.ci == (t.estimate, t.estimate)
    assert t.rank == op.dim and t.hvps == 2 * op.dim  # no residual products are spent
    op, truth = planted_operator([3.0, -1.0, 0.5, 0.0, 2.0])
    t = hessian_trace(op, n_vectors=17, seed=0)  # k = 5 >= dim
    assert t.estimate == pytest.approx(truth, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_reproducible_by_seed_and_independent_of_block_size(method):
    op, _ = case_operator("mlp")
    a = hessian_trace(op, n_vectors=40, method=method, seed=7)
    b = hessian_trace(op, n_vectors=40, method=method, seed=7)
    c = hessian_trace(op, n_vectors=40, method=method, seed=8)
    assert (a.estimate, a.stderr) == (b.estimate, b.stderr)
    assert a.estimate != c.estimate
    small = HessianOperator(op.problem, vectors_per_pass=7)
    d = hessian_trace(small, n_vectors=40, method=method, seed=7)
    assert d.estimate == pytest.approx(a.estimate, rel=1e-12)


def test_hutchinson_is_the_mean_of_rademacher_quadratic_forms():
    op, _ = planted_operator([1.0, 2.0, 3.0, 4.0])
    H = op.dense()
    g = torch.Generator().manual_seed(3)
    V = torch.stack([torch.randint(0, 2, (4,), generator=g) for _ in range(5)], 1).double() * 2 - 1
    forms = (V * (H @ V)).sum(0)
    t = hessian_trace(op, n_vectors=5, method="hutchinson", seed=3)
    assert t.estimate == pytest.approx(float(forms.mean()), rel=1e-12)
    assert t.stderr == pytest.approx(float(forms.std()) / math.sqrt(5), rel=1e-10)


@pytest.mark.parametrize(("m", "hvps"), [(30, 30), (31, 31), (32, 32), (3, 3)])
def test_hvp_counts_and_provenance(m, hvps):
    op, _ = case_operator("mlp")
    before = op.hvps
    t = hessian_trace(op, n_vectors=m, seed=0)
    assert isinstance(t, Trace) and t.hvps == hvps == op.hvps - before
    assert t.n_vectors == m and t.method == "hutch++" and t.seed == 0 and t.seconds > 0
    assert t.settings["dim"] == op.dim and t.settings["n_samples"] == 58
    assert "torch" in t.versions
    if m == 3:  # one residual vector: no error estimate
        assert math.isnan(t.stderr)
    with pytest.raises(dataclasses_frozen()):
        t.estimate = 0.0  # type: ignore[misc]


def dataclasses_frozen() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_operator_options_pick_a_block_of_the_hessian():
    case = build_case("mlp")
    problem = la.Problem(case.model, nn.CrossEntropyLoss(), (case.X, case.y), dtype=torch.float64)
    t = hessian_trace(problem, n_vectors=3 * 27, params="2")  # 2.weight, 2.bias: dim 27
    full = dense_hessian(case.model, nn.CrossEntropyLoss(), case.X, case.y)
    assert t.estimate == pytest.approx(float(torch.trace(full[40:, 40:])), rel=1e-10)
    assert t.settings["params"] == ["2.weight", "2.bias"]


def test_bad_input_is_refused_in_one_line():
    op, _ = planted_operator([1.0, 2.0])
    bad = [
        ({"n_vectors": 1, "method": "hutchinson"}, "n_vectors >= 2"),
        ({"n_vectors": 2}, "n_vectors >= 3"),
        ({"n_vectors": 2.5}, "integer"),
        ({"n_vectors": True}, "integer"),
        ({"method": "hutch"}, "method must be one of"),
    ]
    for kwargs, match in bad:
        with pytest.raises(la.LossatlasError, match=match) as info:
            hessian_trace(op, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(la.LossatlasError, match="options"):
        hessian_trace(op, params="0")
    with pytest.raises(la.LossatlasError, match="Problem or a HessianOperator"):
        hessian_trace(nn.Linear(2, 1))
