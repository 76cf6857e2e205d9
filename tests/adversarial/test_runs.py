"""Runs that compete for one output, grids too large to hold, and temporary files.

A second writer on the same `out` is refused while the first runs (in another process or in
this one), the lock dies with its process, and nothing is left behind by a refused run.
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
from lossatlas.core.files import OutputLock, temporary_path
from lossatlas.errors import LossatlasError
from tests.support.cli import run_cli

# A run slow enough to be caught in the middle: the loss function sleeps.
SLOW_RUN = """
import sys, time
import torch
import lossatlas as la


def slow_mse(out, y):
    time.sleep(float(sys.argv[2]))  # once per chunk and batch
    return torch.nn.functional.mse_loss(out, y)


torch.manual_seed(0)
problem = la.Problem(torch.nn.Linear(3, 1), slow_mse, (torch.randn(20, 3), torch.randn(20, 1)))
dirs = la.random_directions(problem, 2, seed=0)
la.surface(problem, dirs, steps=(16, 16), out=sys.argv[1], chunk_size=2, quiet=True)
"""


def a_surface(out: Path, **options) -> la.Surface:
    problem = la.linreg(n=40)
    dirs = la.random_directions(problem, 2, seed=0)
    return la.surface(problem, dirs, **{"steps": (8, 8), "out": out, "quiet": True, **options})


def wait_for(path: Path, timeout: float = 60.0) -> None:
    start = time.monotonic()
    while not path.exists():
        assert time.monotonic() - start < timeout, f"{path} never appeared"
        time.sleep(0.05)


def test_a_second_writer_is_refused_while_the_first_runs_and_resumes_after_a_kill(tmp_path):
    out = tmp_path / "s.h5"
    script = tmp_path / "slow.py"
    script.write_text(SLOW_RUN)
    first = subprocess.Popen([sys.executable, str(script), str(out), "0.2"], cwd=tmp_path)
    try:
        wait_for(out.with_name("s.h5.partial"))
        with pytest.raises(LossatlasError) as info:
            a_surface(out, overwrite=True)  # even overwrite=True does not take another's file
        message = str(info.value)
        assert f"process {first.pid}" in message and "\n" not in message
        proc = run_cli("surface", "linreg", "--out", "s.h5", "--overwrite", cwd=tmp_path)
        assert proc.returncode == 2 and f"process {first.pid}" in proc.stderr
        assert out.with_name("s.h5.partial").exists()  # the first run's progress is intact
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The kernel released the dead run's lock: the same run resumes from its progress.
    proc = subprocess.run([sys.executable, str(script), str(out), "0"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and la.load(out).provenance["chunks_resumed"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "slow.py"]


def test_the_lock_also_holds_within_one_process_and_is_removed_after(tmp_path):
    out = tmp_path / "s.h5"
    with OutputLock(out):
        with pytest.raises(LossatlasError, match=f"process {os.getpid()}"):
            a_surface(out)
        assert not out.exists()
    a_surface(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


@pytest.mark.parametrize("steps", [10**6, (10**5, 10**5), 10**13])
def test_a_grid_that_cannot_fit_is_refused_before_any_work(tmp_path, steps):
    problem = la.linreg(n=10)
    dirs = la.random_directions(problem, 2, seed=0)
    with pytest.raises(LossatlasError, match="use fewer steps"):
        la.surface(problem, dirs, steps=steps, out=tmp_path / "s.h5", quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_a_huge_grid_in_the_cli_is_one_line_and_leaves_nothing(tmp_path):
    proc = run_cli("surface", "linreg", "--steps", "1000000", "--quiet", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "use fewer steps" in proc.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == []


def test_temporary_files_have_unique_names_and_vanish_on_failure(tmp_path):
    target = tmp_path / "r.h5"
    with temporary_path(target) as a, temporary_path(target) as b:
        assert a != b and a.parent == b.parent == tmp_path
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert target.read_bytes() == b"a" and sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]
    with pytest.raises(KeyboardInterrupt), temporary_path(target) as c:
        c.write_bytes(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"a" and sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


def test_names_that_hdf5_would_misread_round_trip(tmp_path):
    names = ["acc/top1", "/abs", "a\0b", ".", "..", " ", "ünï", "x" * 300, "\\", "0"]
    metrics = {name: (lambda out, y: (out - y).abs().mean()) for name in names}
    data = (torch.randn(20, 3), torch.randn(20, 1))
    named = la.Problem(torch.nn.Linear(3, 1), torch.nn.MSELoss(), data, metrics=metrics)
    dirs = la.random_directions(named, 1, seed=0)
    land = la.surface(named, dirs, steps=3, quiet=True, out=tmp_path / "s.h5")
    land = la.with_paths(land, {name: np.zeros((2, 1)) for name in names})
    land.save(tmp_path / "p.h5")
    loaded = la.load(tmp_path / "p.h5")
    assert list(loaded.metrics) == names and list(loaded.paths) == names
    assert la.load(tmp_path / "s.h5").metrics.keys() == land.metrics.keys()


def test_a_long_run_says_how_long_from_its_first_chunk_even_when_quiet(
    tmp_path, monkeypatch, capsys
):
    from lossatlas.landscape import grid

    monkeypatch.setattr(grid, "LONG_RUN_SECONDS", 0.0)
    land = a_surface(tmp_path / "s.h5", chunk_size=4)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "surface 8x8: about" in err and "s.h5.partial" in err
    assert land.provenance["estimated_seconds"] > 0
