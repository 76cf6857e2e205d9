"""`hessian_trace` and `spectral_density` with `ray=` on a real local two-node Ray cluster (the
session's `ray_address`), checked against the local runs on a float64 problem.

The workers draw the local run's probe vectors from the generator states the driver sends, so
the estimates, the per-probe forms and the product counts are the local ones to rounding; a
worker killed with SIGKILL mid-run has its blocks requeued and changes nothing.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from lossatlas.curvature import trace as trace_module
from lossatlas.curvature.operator import HessianOperator
from tests.support.ray_faults import one_worker_killed

pytest.importorskip("ray")


def float64_problem(folder: Path | None = None, delay: float = 0.0) -> la.Problem:
    """A 3-4-2 tanh network (dim 26) on 40 samples in float64; its loss leaves the evaluating
    process's id in `folder` and sleeps `delay` seconds, so a run can be interrupted."""

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if folder is not None:
            (folder / str(os.getpid())).touch()
        time.sleep(delay)
        return ((out - y) ** 2).mean()

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    data = (torch.randn(40, 3), torch.randn(40, 2))
    return la.Problem(model, loss, data, dtype=torch.float64)


@pytest.fixture
def forms(monkeypatch) -> list[torch.Tensor]:
    """The per-probe quadratic forms of each `hessian_trace` call, as it summarises them."""
    seen: list[torch.Tensor] = []
    summary = trace_module._summary

    def keep(estimate: float, values: torch.Tensor) -> tuple[float, float, float]:
        seen.append(values)
        return summary(estimate, values)

    monkeypatch.setattr(trace_module, "_summary", keep)
    return seen


def same_trace(remote: la.Trace, local: la.Trace, forms: list[torch.Tensor]) -> None:
    local_forms, remote_forms = forms
    assert len(remote_forms) == len(local_forms) > 1
    torch.testing.assert_close(remote_forms, local_forms, rtol=1e-10, atol=1e-12)
    assert remote.estimate == pytest.approx(local.estimate, rel=1e-10)
    assert remote.stderr == pytest.approx(local.stderr, rel=1e-10)
    assert remote.ci == pytest.approx(local.ci, rel=1e-10)
    assert remote.hvps == local.hvps and remote.rank == local.rank
    if local.low_rank is not None:
        assert remote.low_rank == pytest.approx(local.low_rank, rel=1e-10)
    settings = dict(remote.settings)
    stats = settings.pop("ray")
    assert settings == local.settings  # the workers' operators ran as the local one did
    assert stats["workers"] == 2 and stats["requeued"] == stats["replaced"] == 0
    assert stats["startup_seconds"] > 0


def test_hutchinson_on_ray_is_the_local_estimate_and_saves_its_pool(ray_address, tmp_path, forms):
    problem = float64_problem()
    local = la.hessian_trace(problem, n_vectors=10, method="hutchinson", seed=3, quiet=True)
    remote = la.hessian_trace(
        problem, n_vectors=10, method="hutchinson", seed=3, quiet=True, ray=ray_address
    )
    same_trace(remote, local, forms)
    assert remote.hvps == 10 and remote.settings["ray"]["pools"] == 1
    back = la.load(la.save(remote, tmp_path / "t.h5"))
    assert back.settings["ray"] == remote.settings["ray"] and back.estimate == remote.estimate


def test_hutchpp_on_ray_of_an_operator_with_a_subset_is_the_local_estimate(ray_address, forms):
    # A HessianOperator source: the workers rebuild it (point, first layer only, a seeded
    # subset of 30 samples, products through kept graphs).
    op = HessianOperator(float64_problem(), params="0", data=30, seed=5, vectors_per_pass=3)
    local = la.hessian_trace(op, n_vectors=13, seed=1, quiet=True)
    before = op.hvps
    remote = la.hessian_trace(op, n_vectors=13, seed=1, quiet=True, ray=ray_address)
    same_trace(remote, local, forms)
    assert remote.rank == 4 and remote.hvps == 13 and op.hvps == before
    assert remote.settings["ray"]["pools"] == 2  # H S first, then H Q and the residual
    assert remote.settings["data"] == "subset of 30 samples (seed 5)"


def test_spectral_density_on_ray_is_the_local_one(ray_address):
    problem = float64_problem()
    local = la.spectral_density(problem, n_vectors=5, steps=8, seed=4, quiet=True)
    remote = la.spectral_density(problem, n_vectors=5, steps=8, seed=4, quiet=True, ray=ray_address)
    np.testing.assert_allclose(remote.nodes, local.nodes, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(remote.weights, local.weights, rtol=1e-8, atol=1e-12)
    assert remote.hvps == local.hvps == 40
    assert remote.settings["block"] == 2 and local.settings["block"] == 5  # 2 workers x 2
    assert remote.settings["operator"] == local.settings["operator"]
    stats = remote.settings["ray"]
    assert stats["workers"] == 2 and stats["requeued"] == 0 and stats["pools"] == 1


def test_a_worker_killed_with_sigkill_loses_no_probe(ray_address, tmp_path):
    marks = tmp_path / "pids"
    marks.mkdir()
    # No kept graphs: every product is a data pass of 8 batches, each calling the slow loss;
    # two blocks of two vectors per worker.
    options = {"memory_budget": 0, "batch_size": 5, "method": "hutchinson", "seed": 6}
    with one_worker_killed(marks, after=0.15) as killed:  # inside its blocks' products
        remote = la.hessian_trace(
            float64_problem(marks, 0.06),
            n_vectors=8,
            quiet=True,
            ray=la.RayOptions(address=ray_address, workers=2),
            **options,
        )
    assert killed, "no worker was killed"
    stats = remote.settings["ray"]
    assert stats["requeued"] >= 1 and stats["replaced"] >= 1
    local = la.hessian_trace(float64_problem(), n_vectors=8, quiet=True, **options)
    assert remote.estimate == pytest.approx(local.estimate, rel=1e-10)
    assert remote.stderr == pytest.approx(local.stderr, rel=1e-10)
    assert remote.hvps == local.hvps == 8  # the lost block's products are not counted


def test_ray_mistakes_are_one_line_errors(monkeypatch):
    problem = float64_problem()
    for bad in (3, "", " "):
        with pytest.raises(la.LossatlasError, match="ray= takes an address") as info:
            la.hessian_trace(problem, n_vectors=6, ray=bad)
        assert "\n" not in str(info.value)
        with pytest.raises(la.LossatlasError, match="ray= takes an address"):
            la.spectral_density(problem, ray=bad)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(la.LossatlasError, match=r"pip install 'lossatlas\[ray\]'"):
        la.hessian_trace(problem, n_vectors=6, ray="auto")
    with pytest.raises(la.LossatlasError, match=r"pip install 'lossatlas\[ray\]'"):
        la.spectral_density(problem, ray="auto")
    assert math.isfinite(la.hessian_trace(problem, n_vectors=6, quiet=True).estimate)
