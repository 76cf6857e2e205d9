"""`train_runs(..., ray=...)` and `lossatlas minima --ray` on the session's real local two-node
Ray cluster: the same weights as the local runs, bit for bit and in the same order, and no run
lost when a worker is killed with SIGKILL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lossatlas as la
from lossatlas.cli.minima import ray_options_of
from lossatlas.problems.registry import linreg
from tests.support.cli import run_cli
from tests.support.ray_faults import marking_mse, one_worker_killed, worker_pids

pytest.importorskip("ray")


def small_problem(folder: Path, delay: float) -> la.Problem:
    """A regression by a small network with BatchNorm (buffers) and dropout (the global RNG
    inside a run), whose loss marks `folder` with the evaluating process and sleeps `delay`."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 8),
        torch.nn.BatchNorm1d(8),
        torch.nn.Tanh(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(8, 1),
    )
    data = (torch.randn(48, 3), torch.randn(48, 1))
    return la.Problem(model, marking_mse(folder, delay), data)


def assert_same_runs(remote: list[la.TrainedModel], local: list[la.TrainedModel]) -> None:
    assert [r.name for r in remote] == [r.name for r in local]
    for got, want in zip(remote, local):
        assert got.params.keys() == want.params.keys() and got.buffers.keys() == want.buffers.keys()
        for k in want.params:
            assert torch.equal(got.params[k], want.params[k]), (got.name, k)
        for k in want.buffers:
            assert torch.equal(got.buffers[k], want.buffers[k]), (got.name, k)
        assert got.history.keys() == want.history.keys()
        for k in want.history:
            np.testing.assert_array_equal(got.history[k], want.history[k])
        assert got.settings == want.settings
        assert got.provenance["status"] == want.provenance["status"]


def test_train_runs_on_ray_give_the_local_weights_in_the_local_order(ray_address, tmp_path):
    problem = small_problem(tmp_path, 0.0)
    before = {k: v.clone() for k, v in problem.module.state_dict().items()}
    grid = dict(seeds=[0, 1], lrs=[0.05, 1e9], batch_sizes=[16], steps=30, quiet=True)
    with pytest.warns(la.LossatlasWarning, match="stopping"):  # lr 1e9 diverges, twice
        local = la.train_runs(problem, **grid)
    with pytest.warns(la.LossatlasWarning, match="stopping"):  # repeated from the workers
        remote = la.train_runs(problem, **grid, ray=ray_address)
    assert_same_runs(remote, local)
    assert [r.provenance["status"] for r in local][:2] == ["finished", "finished"]
    assert all(r.provenance["status"].startswith("diverged") for r in local[2:])
    assert not torch.equal(local[0].params["0.weight"], local[1].params["0.weight"])  # seeds
    stats = remote[0].provenance["ray"]
    assert stats["workers"] == 2 and stats["requeued"] == 0 and stats["startup_seconds"] > 0
    assert all(r.provenance["ray"] == stats for r in remote)
    assert "ray" not in local[0].provenance
    assert all(v.flags.writeable for r in remote for v in r.history.values())
    assert len(worker_pids(tmp_path)) == 2  # both nodes trained runs
    after = problem.module.state_dict()  # the user's model is untouched
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_a_worker_killed_during_training_loses_no_run(ray_address, tmp_path):
    marks = tmp_path / "pids"
    marks.mkdir()
    grid = dict(seeds=[0, 1, 2, 3], batch_sizes=[16], steps=25, eval_every=25, quiet=True)
    with one_worker_killed(marks, after=0.3) as killed:
        remote = la.train_runs(
            small_problem(marks, 0.02),
            **grid,
            ray=la.RayOptions(address=ray_address, workers=2, in_flight=1),
        )
    assert killed, "no worker was killed"
    stats = remote[0].provenance["ray"]
    assert stats["requeued"] >= 1 and stats["replaced"] >= 1
    assert_same_runs(remote, la.train_runs(small_problem(tmp_path, 0.0), **grid))


def test_the_minima_command_trains_and_interpolates_on_the_cluster(ray_address, tmp_path):
    args = ["minima", "linreg", "--seed", "0", "--seed", "1", "--steps", "50"]
    args += ["--batch-size", "20", "--lr", "0.1", "--no-curve", "--out", "m", "--json"]
    proc = run_cli(*args, "--ray", ray_address, "--ray-workers", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    problem = linreg()
    runs = la.train_runs(
        problem, seeds=[0, 1], batch_sizes=[20], lrs=[0.1], optimizers=["sgd"], steps=50, quiet=True
    )
    expected = la.compare_minima(problem, runs, quiet=True)
    assert [r["train_loss"] for r in result["models"]] == expected.train_loss.tolist()
    assert result["loss_barriers"] == [[0.0, 0.0], [0.0, 0.0]]
    barriers = la.load(tmp_path / "m" / "barriers.h5")
    assert barriers.provenance["ray"]["workers"] == 1  # one pair: never more workers than tasks


def test_ray_mistakes_are_one_line_errors():
    with pytest.raises(la.LossatlasError, match="ray= takes an address"):
        la.train_runs(linreg(), seeds=[0, 1], steps=2, ray=3)
    # What `minima` and `descend` make of --ray/--ray-workers (the CLI prints such an error
    # as one line and exits with status 2).
    with pytest.raises(la.LossatlasError, match=r"^--ray-workers needs --ray ADDRESS$"):
        ray_options_of(None, 2)
    assert ray_options_of("auto", 3) == la.RayOptions(address="auto", workers=3)
    assert ray_options_of(None, None) is None
