"""`sharpness_report`: one shared operator gives the same numbers as the separate calls."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from lossatlas.curvature.summary import sharpness_report
from tests.oracles.cases import build_case


def test_report_equals_the_separate_measures():
    case = build_case("mlp")
    problem = la.Problem(
        case.model,
        nn.CrossEntropyLoss(),
        case.batches(16),
        dtype=torch.float64,
        metrics={"error": la.error},
    )
    report = sharpness_report(problem, k=3, trace_vectors=30, lr=0.3, samples=10, quiet=True)
    eig = la.hessian_eigen(problem, 3, tol=1e-4)
    np.testing.assert_allclose(report.eigen.eigenvalues, eig.eigenvalues, rtol=1e-10)
    trace = la.hessian_trace(problem, n_vectors=30, quiet=True)
    assert report.trace.estimate == pytest.approx(trace.estimate, rel=1e-10)
    assert report.epsilon.value == pytest.approx(la.epsilon_sharpness(problem).value, rel=1e-8)
    average = la.average_sharpness(problem, n_samples=10, quiet=True)
    assert report.average.value == pytest.approx(average.value, rel=1e-8)
    assert report.adaptive.value == pytest.approx(la.adaptive_sharpness(problem).value, rel=1e-8)
    assert report.stable.max_lr == pytest.approx(2 / eig.eigenvalues[0], rel=1e-10)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["lambda_max"] == report.lambda_max and d["lr"] == 0.3 and "error" in d["metrics"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"samples": 1}, "samples"),
        ({"trace_vectors": 2}, "trace_vectors"),
        ({"momentum": 1.0}, "momentum"),
        ({"k": 0}, "k must be"),
    ],
)
def test_bad_settings_fail_before_any_work(kwargs, match):
    case = build_case("mlp")
    problem = la.Problem(case.model, nn.CrossEntropyLoss(), (case.X, case.y))
    with pytest.raises(la.LossatlasError, match=match):
        sharpness_report(problem, quiet=True, **kwargs)
