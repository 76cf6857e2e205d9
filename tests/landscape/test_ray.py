"""`surface(..., ray=...)` on a real local two-node Ray cluster (the session's `ray_address`).

Checked against the local engine: the same plan gives the same grid; a worker killed with
SIGKILL mid-run loses only its chunks in flight, which are requeued (no point lost, none
written twice); a driver killed mid-run leaves a journal that a later run resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import lossatlas as la
from lossatlas.landscape.journal import Journal
from tests.support.cli import run_cli
from tests.support.ray_cluster import actor_pids
from tests.support.ray_faults import marking_mse, one_worker_killed, worker_pids

pytest.importorskip("ray")

STEPS, CHUNK = (8, 6), 4  # 48 points in 12 chunks


def slow_problem(folder: Path, delay: float) -> la.Problem:
    """A small regression whose loss marks `folder` with the evaluating process's id and
    sleeps `delay` seconds (`marking_mse`)."""
    loss = marking_mse(folder, delay)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    data = (torch.randn(30, 3), torch.randn(30, 1))
    return la.Problem(model, loss, data, metrics={"mae": lambda o, y: (o - y).abs().mean()})


def grid(problem: la.Problem, **options) -> la.Surface:
    dirs = la.random_directions(problem, 2, seed=0)
    return la.surface(problem, dirs, steps=STEPS, chunk_size=CHUNK, quiet=True, **options)


def test_a_ray_run_gives_the_local_grid(ray_address, tmp_path):
    problem = slow_problem(tmp_path, 0.0)
    local = grid(problem)
    remote = grid(problem, ray=ray_address, out=tmp_path / "r.h5")
    assert np.array_equal(remote.loss, local.loss)
    assert np.array_equal(remote.metrics["mae"], local.metrics["mae"])
    stats = remote.provenance["ray"]
    assert stats["workers"] == 2 and stats["requeued"] == stats["replaced"] == 0
    assert stats["startup_seconds"] > 0
    assert len(worker_pids(tmp_path)) == 2  # both nodes' workers evaluated chunks
    assert remote.settings["key"] == local.settings["key"]  # the same run: files interchange


def test_a_worker_killed_with_sigkill_loses_no_point(ray_address, tmp_path):
    marks = tmp_path / "pids"
    marks.mkdir()
    problem = slow_problem(marks, 0.4)
    out = tmp_path / "s.h5"
    with one_worker_killed(marks) as killed:
        remote = grid(problem, ray=la.RayOptions(address=ray_address, workers=2), out=out)
    assert killed, "no worker was killed"
    assert remote.provenance["ray"]["requeued"] >= 1 and remote.provenance["ray"]["replaced"] >= 1
    local = grid(slow_problem(tmp_path, 0.0))
    assert np.array_equal(remote.loss, local.loss) and not np.isnan(remote.loss).any()
    assert not out.with_name("s.h5.partial").exists()


DRIVER = """
import sys, time, torch
import lossatlas as la
sys.path.insert(0, sys.argv[3])
from tests.landscape.test_ray import slow_problem, grid
from pathlib import Path
grid(slow_problem(Path(sys.argv[2]), 0.1), ray=sys.argv[1], out=Path(sys.argv[2]) / "s.h5")
"""


def test_a_killed_driver_resumes_from_its_journal_with_or_without_ray(ray_address, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    root = str(Path(__file__).resolve().parents[2])
    driver = subprocess.Popen(
        [sys.executable, str(script), ray_address, str(tmp_path), root], cwd=root
    )
    partial = tmp_path / "s.h5.partial"
    deadline = time.monotonic() + 120
    try:
        while not partial.exists() or partial.stat().st_size < 400:  # a few chunks written
            assert driver.poll() is None and time.monotonic() < deadline, "driver did not run"
            time.sleep(0.05)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    journal = Journal.resume(partial, grid(slow_problem(tmp_path, 0.0)).settings["key"])
    saved = len(journal.done)
    journal.close()
    assert 0 < saved < 12
    resumed = grid(slow_problem(tmp_path, 0.0), out=tmp_path / "s.h5")  # locally this time
    assert resumed.provenance["chunks_resumed"] == saved
    assert np.array_equal(resumed.loss, grid(slow_problem(tmp_path, 0.0)).loss)


def test_the_cli_runs_digits_mlp_on_the_cluster_and_matches_the_local_run(ray_address, tmp_path):
    common = ["surface", "digits-mlp", "--steps", "7", "--quiet"]
    assert run_cli(*common, "--out", "local.h5", cwd=tmp_path).returncode == 0
    proc = run_cli(*common, "--out", "ray.h5", "--ray", ray_address, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    local, remote = la.load(tmp_path / "local.h5"), la.load(tmp_path / "ray.h5")
    # The CLI's local run uses every thread, each worker one: rounding may differ by threads.
    np.testing.assert_allclose(remote.loss, local.loss, rtol=1e-6)
    assert remote.provenance["ray"]["workers"] == 2


def test_ray_mistakes_are_one_line_errors(tmp_path, monkeypatch):
    problem = slow_problem(tmp_path, 0.0)
    with pytest.raises(la.LossatlasError, match="ray= takes an address"):
        grid(problem, ray=3)
    with pytest.raises(la.LossatlasError, match="workers must be at least 1"):
        la.RayOptions(workers=0)
    proc = run_cli("surface", "linreg", "--ray-workers", "2", cwd=tmp_path)
    assert proc.returncode == 2 and "need --ray ADDRESS" in proc.stderr
    began = time.monotonic()
    with pytest.raises(la.LossatlasError, match=r"no Ray cluster at '127\.0\.0\.1:1'"):
        grid(problem, ray="127.0.0.1:1")  # nothing listens there: at once, not after retries
    assert time.monotonic() - began < 10
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(la.LossatlasError, match=r"pip install 'lossatlas\[ray\]'"):
        grid(problem, ray="auto")


def test_a_problem_the_workers_cannot_build_is_one_line(ray_address, tmp_path, monkeypatch):
    driver = os.getpid()

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    data = (torch.randn(30, 3), torch.randn(30, 1))
    never = la.Problem(model, lambda out, y: out.sum() * (1 // (os.getpid() == driver)), data)
    with pytest.raises(
        la.LossatlasError, match=r"could not build the problem: loss_fn fails .*ZeroDivisionError"
    ):
        grid(never, ray=ray_address)
    # A loss from a module that only this process can import: the workers cannot unpickle it.
    (tmp_path / "only_here.py").write_text(
        "import torch\n\ndef loss(out, y):\n    return torch.nn.functional.mse_loss(out, y)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from only_here import loss  # type: ignore[import-not-found]

    unbuildable = la.Problem(model, loss, data)
    with pytest.raises(la.LossatlasError, match=r"could not build the problem: .*only_here"):
        grid(unbuildable, ray=ray_address)


def test_a_model_error_on_a_worker_mid_run_is_one_line(ray_address):
    driver = os.getpid()

    def fails_on_workers(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if os.getpid() != driver and len(y) > 2:  # not in the probe (two samples): in a chunk
            raise ValueError("the model broke on a worker")
        return torch.nn.functional.mse_loss(out, y)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    broken = la.Problem(model, fails_on_workers, (torch.randn(30, 3), torch.randn(30, 1)))
    with pytest.raises(la.LossatlasError, match="a Ray worker failed: ValueError: the model broke"):
        grid(broken, ray=ray_address)


SPEC = """
import os
from pathlib import Path

import torch
import lossatlas as la


def make():
    (Path(__file__).parent / f"built-{os.getpid()}").touch()  # who built the problem
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(30, 3, generator=g), torch.randn(30, 1, generator=g))
    return la.Problem(model, torch.nn.MSELoss(), data)
"""


def test_cli_workers_build_the_spec_themselves(ray_address, tmp_path):
    (tmp_path / "spec.py").write_text(SPEC)
    common = ["surface", "spec.py:make", "--steps", "5", "--quiet"]  # a path relative to cwd
    assert run_cli(*common, "--out", "local.h5", cwd=tmp_path).returncode == 0
    local_builders = set(tmp_path.glob("built-*"))
    assert len(local_builders) == 1
    proc = run_cli(*common, "--out", "ray.h5", "--ray", ray_address, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ray_builders = set(tmp_path.glob("built-*")) - local_builders
    assert len(ray_builders) == 3  # the driver, and each of the two workers
    local, remote = la.load(tmp_path / "local.h5"), la.load(tmp_path / "ray.h5")
    np.testing.assert_allclose(remote.loss, local.loss, rtol=1e-6)


def test_workers_that_build_other_data_are_refused(ray_address, tmp_path):
    problem = slow_problem(tmp_path, 0.0)

    def other() -> la.Problem:
        return la.Problem(
            problem.module, torch.nn.MSELoss(), (torch.zeros(30, 3), torch.zeros(30, 1))
        )

    with pytest.raises(la.LossatlasError, match="holds other data than the driver's"):
        grid(problem, ray=la.RayOptions(address=ray_address, build=other))


def test_the_cli_keeps_every_point_when_a_worker_is_killed(ray_address, tmp_path):
    common = ["surface", "digits-mlp", "--steps", "61", "--quiet"]
    environ = {k: v for k, v in os.environ.items() if k != "LOSSATLAS_QUIET"}
    out = tmp_path / "ray.h5"
    cli = subprocess.Popen(
        [sys.executable, "-m", "lossatlas", *common, "--out", str(out), "--ray", ray_address],
        cwd=tmp_path, env={**environ, "LOSSATLAS_CACHE": str(tmp_path / "cache")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    partial, deadline = tmp_path / "ray.h5.partial", time.monotonic() + 240
    killed = []
    try:
        while not killed:
            assert cli.poll() is None, cli.communicate()[1]
            assert time.monotonic() < deadline, "no worker ran"
            busy = actor_pids("_Worker.run")  # evaluating a chunk right now
            if busy and partial.exists() and partial.stat().st_size > 400:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.02)
        _, stderr = cli.communicate(timeout=240)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, stderr
    remote = la.load(out)
    assert remote.provenance["ray"]["requeued"] >= 1 and not np.isnan(remote.loss).any()
    local_run = run_cli(*common, "--out", "local.h5", cwd=tmp_path)
    assert local_run.returncode == 0, local_run.stderr
    np.testing.assert_allclose(remote.loss, la.load(tmp_path / "local.h5").loss, rtol=1e-6)


def test_a_second_cluster_in_one_process_is_one_line(ray_address, tmp_path):
    import socket

    problem = slow_problem(tmp_path, 0.0)
    grid(problem, ray=ray_address)  # connected to the session's cluster
    with socket.socket() as other:  # something listening elsewhere
        other.bind(("127.0.0.1", 0))
        other.listen()
        address = f"127.0.0.1:{other.getsockname()[1]}"
        with pytest.raises(la.LossatlasError, match=r"call ray\.shutdown"):
            grid(problem, ray=address)
