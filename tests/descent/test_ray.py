"""`sweep(..., ray=...)` and `lossatlas descend --ray` on the session's real local two-node Ray
cluster: the same trajectories as the local sweep, in the same order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lossatlas as la
from lossatlas.problems.registry import linreg
from tests.support.cli import run_cli

pytest.importorskip("ray")


def assert_same_sweeps(remote: la.Sweep, local: la.Sweep) -> None:
    assert len(remote) == len(local)
    for got, want in zip(remote, local):
        assert (got.optimizer, got.lr, got.start, got.seed) == (
            want.optimizer,
            want.lr,
            want.start,
            want.seed,
        )
        a, b = got.trajectory, want.trajectory
        assert a.status == b.status and a.settings == b.settings
        for name in ("loss", "grad_norm", "lr", "final_position"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        if b.positions is None:
            assert a.positions is None
        else:
            np.testing.assert_array_equal(a.positions, b.positions)
    assert remote.settings == local.settings


def test_a_sweep_on_ray_gives_the_local_runs_in_the_local_order(ray_address):
    grid = dict(
        starts=[[-1.5, 2.0], [1.5, -0.5]],
        optimizers=[("sgd", {"momentum": 0.9}), "adam"],
        lrs=[1e-3, 0.01],
        seeds=[0, 1],
        noise=0.5,  # the seeds matter
        steps=40,
        quiet=True,
    )
    rosenbrock = la.get_function("rosenbrock")
    local = la.sweep(rosenbrock, **grid)
    remote = la.sweep(rosenbrock, **grid, ray=ray_address)
    assert_same_sweeps(remote, local)
    assert len(local) == 16 and len({r.trajectory.status for r in local}) > 1  # worth comparing
    first, second = local.runs(optimizer="adam", lr=0.01, start=0)
    assert not np.array_equal(first.trajectory.loss, second.trajectory.loss)  # seeds differ
    stats = remote.provenance["ray"]
    assert stats["workers"] == 2 and stats["requeued"] == 0 and stats["startup_seconds"] > 0
    assert "ray" not in local.provenance
    assert all(r.trajectory.positions.flags.writeable for r in remote)


def test_the_descend_command_runs_a_problem_on_the_cluster(ray_address, tmp_path):
    args = ["descend", "linreg", "--optimizer", "sgd", "--optimizer", "adam", "--lr", "0.05"]
    args += ["--lr", "0.5", "--steps", "40", "--seed", "3", "--noise", "0.1", "--out", "r.h5"]
    proc = run_cli(*args, "--json", "--ray", ray_address, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [(r["optimizer"], r["lr"]) for r in result["table"]] == [
        ("sgd", 0.05),
        ("sgd", 0.5),
        ("adam", 0.05),
        ("adam", 0.5),
    ]
    saved = la.load(tmp_path / "r.h5")
    assert saved.provenance["ray"]["workers"] == 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on a worker
    try:
        local = la.sweep(
            linreg(),
            optimizers=["sgd", "adam"],
            lrs=[0.05, 0.5],
            seeds=[3],
            steps=40,
            noise=0.1,
            record_positions=False,
            quiet=True,
        )
    finally:
        torch.set_num_threads(threads)
    assert_same_sweeps(saved, local)


def test_a_bad_ray_value_is_one_line():
    with pytest.raises(la.LossatlasError, match="ray= takes an address"):
        la.sweep(la.get_function("rosenbrock"), starts=[[0.0, 0.0]], ray="  ")
