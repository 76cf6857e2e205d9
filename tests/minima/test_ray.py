"""`barrier_matrix(..., ray=...)` on the session's real local two-node Ray cluster: the same
matrix as the local run, and no pair lost when a worker is killed with SIGKILL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import lossatlas as la
from tests.support.ray_faults import marking_mse, one_worker_killed, worker_pids

pytest.importorskip("ray")


def models_and_problem(folder: Path, delay: float) -> tuple[la.Problem, list[dict]]:
    """Four random small networks (so every pair has a barrier) and a regression problem
    whose loss marks `folder` with the evaluating process and sleeps `delay` seconds."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))
    data = (torch.randn(40, 3), torch.randn(40, 1))
    problem = la.Problem(net, marking_mse(folder, delay), data)
    models = []
    for seed in range(4):
        torch.manual_seed(seed)
        other = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))
        models.append({k: v.detach().clone() for k, v in other.named_parameters()})
    return problem, models


def test_barriers_on_ray_equal_the_local_matrix(ray_address, tmp_path):
    problem, models = models_and_problem(tmp_path, 0.0)
    local = la.barrier_matrix(problem, models, steps=9, metric=None, quiet=True)
    remote = la.barrier_matrix(problem, models, steps=9, metric=None, quiet=True, ray=ray_address)
    np.testing.assert_array_equal(remote.loss_barrier, local.loss_barrier)
    np.testing.assert_array_equal(remote.endpoint_loss, local.endpoint_loss)
    assert len(set(local.endpoint_loss)) == 4 and local.loss_barrier.max() > 0  # worth comparing
    assert remote.provenance["ray"]["workers"] == 2 and remote.provenance["n_pairs"] == 6
    assert remote.provenance["n_model_calls"] == local.provenance["n_model_calls"]
    assert "ray" not in local.provenance
    assert len(worker_pids(tmp_path)) == 2  # both nodes interpolated pairs


def test_a_worker_killed_during_the_barriers_loses_no_pair(ray_address, tmp_path):
    marks = tmp_path / "pids"
    marks.mkdir()
    problem, models = models_and_problem(marks, 0.05)
    with one_worker_killed(marks, after=0.3) as killed:
        remote = la.barrier_matrix(
            problem, models, steps=9, metric=None, quiet=True,
            ray=la.RayOptions(address=ray_address, workers=2, in_flight=1),
        )  # fmt: skip
    assert killed and remote.provenance["ray"]["requeued"] >= 1
    local = la.barrier_matrix(models_and_problem(tmp_path, 0.0)[0], models, steps=9, metric=None)
    np.testing.assert_array_equal(remote.loss_barrier, local.loss_barrier)


def test_a_bad_ray_value_is_one_line():
    problem, models = models_and_problem(Path("."), 0.0)
    with pytest.raises(la.LossatlasError, match="ray= takes an address"):
        la.barrier_matrix(problem, models, ray=3)
