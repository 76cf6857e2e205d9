"""`headline()` of the curvature records, against the records' own fields computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import lossatlas as la
from lossatlas.io import storage


def as_json(head: dict[str, Any]) -> dict[str, Any]:
    """The headline through JSON (NaN allowed): it must serialise, and keep its keys."""
    back = json.loads(json.dumps(head, allow_nan=True))
    assert list(back) == list(head)
    return back


@pytest.fixture(scope="module")
def report() -> la.SharpnessReport:
    return la.sharpness_report(la.linreg(), k=2, trace_vectors=6, samples=5, quiet=True)


def test_eigen_headline(report: la.SharpnessReport) -> None:
    eigen = report.eigen
    head = as_json(eigen.headline())
    assert head["which"] == "top"
    assert head["eigenvalues"] == eigen.eigenvalues.tolist()
    assert head["eigenvalues"][0] == max(eigen.eigenvalues.tolist())
    dense = np.linalg.eigvalsh(la.HessianOperator(la.linreg()).dense().numpy())
    assert head["eigenvalues"][0] == pytest.approx(dense.max(), rel=1e-10)
    assert head["residuals"] == eigen.residuals.tolist()
    assert head["converged"] == [True, True]
    assert head["hvps"] == eigen.hvps and head["seconds"] == eigen.seconds


def test_trace_headline(report: la.SharpnessReport) -> None:
    trace = report.trace
    head = as_json(trace.headline())
    assert head["estimate"] == trace.estimate and head["stderr"] == trace.stderr
    assert head["ci95"] == [trace.ci[0], trace.ci[1]]
    assert head["method"] == "hutch++" and head["n_vectors"] == 6 and head["hvps"] == trace.hvps
    dense = la.HessianOperator(la.linreg()).dense()
    assert head["estimate"] == pytest.approx(float(torch.trace(dense)), rel=1e-10)  # 2 params


def test_stable_lr_headline() -> None:
    head = as_json(la.stable_lr(4.0, lr=0.25, momentum=0.5).headline())
    assert head == {
        "lambda_max": 4.0,
        "momentum": 0.5,
        "max_lr": 0.75,  # (2 + 2 * 0.5) / 4
        "lr": 0.25,
        "ratio": pytest.approx(1 / 3),
        "stable": True,
    }
    bare = as_json(la.stable_lr(2.0).headline())
    assert bare["max_lr"] == 1.0 and bare["lr"] is bare["ratio"] is bare["stable"] is None


def test_sharpness_headlines(report: la.SharpnessReport) -> None:
    eps = as_json(report.epsilon.headline())
    assert eps["value"] == report.epsilon.value
    assert eps["value"] == pytest.approx(100 * eps["loss_increase"] / (1 + eps["loss"]), rel=1e-12)
    assert eps["loss"] == report.loss and eps["metric_change"] == {}
    assert eps["z_norm"] == report.epsilon.z_norm
    avg = as_json(report.average.headline())
    assert avg["value"] == report.average.value and avg["stderr"] == report.average.stderr
    assert avg["ci95"] == list(report.average.ci) and avg["n_samples"] == 5
    ada = as_json(report.adaptive.headline())
    assert ada["value"] == report.adaptive.value >= 0
    assert ada["epsilon_norm"] <= report.adaptive.settings["rho"] * (1 + 1e-9)
    assert ada["delta_norm"] == report.adaptive.delta_norm


def test_sharpness_report_headline(report: la.SharpnessReport, tmp_path: Path) -> None:
    head = as_json(report.headline())
    d = report.to_dict()
    assert list(d) == [*head, "settings", "versions"]  # to_dict is the headline, cleaned
    assert all(d[k] == head[k] for k in head)
    assert head["lambda_max"] == report.eigen.eigenvalues[0]
    assert head["max_stable_lr"] == pytest.approx(2 / head["lambda_max"], rel=1e-15)
    assert head["trace"] == report.trace.estimate
    assert head["epsilon_sharpness"] == report.epsilon.value
    assert head["average_sharpness_stderr"] == report.average.stderr
    assert head["adaptive_sharpness"] == report.adaptive.value
    assert head["hvps"] == report.hvps and head["lr"] is None
    loaded = storage.load(storage.save(report, tmp_path / "sharp.h5"))
    assert as_json(loaded.headline()) == head


def test_density_headline(tmp_path: Path) -> None:
    op = la.HessianOperator(la.linreg())
    density = la.spectral_density(op, n_vectors=2, steps=3, quiet=True)
    head = as_json(density.headline())
    nodes = [v for row in density.nodes.tolist() for v in row if not math.isnan(v)]
    assert head["lambda_min"] == min(nodes) and head["lambda_max"] == max(nodes)
    assert (head["n_vectors"], head["steps"]) == density.nodes.shape
    assert head["hvps"] == density.hvps
    loaded = storage.load(storage.save(density, tmp_path / "density.h5"))
    assert as_json(loaded.headline()) == head


def test_edge_history_headline() -> None:
    lam = np.array([1.0, np.nan, 5.0, 3.0])
    lr = np.full(4, 0.5)
    threshold = 2 / lr  # 4.0
    history = la.EdgeHistory(
        steps=np.array([0, 10, 20, 30]),
        lambda_max=lam,
        lr=lr,
        momentum=np.zeros(4),
        threshold=threshold,
        hvps=np.array([7, 8, 9, 10]),
        converged=np.array([True, False, True, True]),
    )
    head = as_json(history.headline())
    assert head["estimates"] == 4 and head["last_step"] == 30
    assert head["lambda_max_last"] == 3.0 and head["threshold_last"] == 4.0
    assert head["ratio_last"] == 0.75 and head["ratio_peak"] == 1.25
    assert head["lambda_max_peak"] == 5.0 and head["at_edge"] == 1 and head["hvps"] == 34
    empty = la.EdgeHistory(*(np.array([]) for _ in range(7)))
    head = as_json(empty.headline())
    assert head["estimates"] == 0 and head["last_step"] is head["ratio_peak"] is None
