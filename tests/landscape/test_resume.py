"""Resumable surfaces: SIGKILL and Ctrl-C mid-run, torn journal records, reuse of finished files."""

from __future__ import annotations

import importlib.util
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la

# A standalone script: a seeded problem whose loss function can be slowed down or interrupted.
SCRIPT = '''
import sys
import time

import torch
from torch import nn

import lossatlas as la

torch.set_num_threads(1)
STEPS = (5, 4)
CHUNK = 2  # 20 points in 10 chunks


def run(out, seed=0, delay=0.0, interrupt_at=None, overwrite=False, loss=None):
    """Returns the surface and how often the loss function was called."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3))
    X, y = torch.randn(48, 16), torch.randint(0, 3, (48,))
    base = loss or nn.CrossEntropyLoss()
    calls = [0]

    def loss_fn(outputs, targets):
        calls[0] += 1
        if interrupt_at is not None and calls[0] >= interrupt_at:
            raise KeyboardInterrupt
        time.sleep(delay)
        return base(outputs, targets)

    problem = la.Problem(model, loss_fn, data=(X, y), metrics={"accuracy": la.accuracy})
    dirs = la.random_directions(problem, 2, seed=seed)
    land = la.surface(
        problem, dirs, steps=STEPS, span=(-1.0, 1.0), out=out, chunk_size=CHUNK,
        overwrite=overwrite, quiet=True,
    )
    return land, calls[0]


if __name__ == "__main__":
    run(sys.argv[1], seed=int(sys.argv[2]), delay=float(sys.argv[3]))
'''
N_CHUNKS = 10


@pytest.fixture
def script(tmp_path):
    """The script on disk, and the same source imported as a module for in-process runs."""
    path = tmp_path / "landscape.py"
    path.write_text(SCRIPT)
    spec = importlib.util.spec_from_file_location("landscape_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.path = path
    return module


def complete_records(partial: Path) -> int:
    """Complete records in a journal, read independently: magic line, header line, records of
    `<index u32><count u32><count float64><crc32 u32>`."""
    data = partial.read_bytes()
    first = data.find(b"\n")
    pos = data.find(b"\n", first + 1) + 1
    if first < 0 or pos <= 0:
        return 0
    n = 0
    while pos + 8 <= len(data):
        _, count = struct.unpack_from("<II", data, pos)
        end = pos + 8 + 8 * count + 4
        if end > len(data):
            break
        n, pos = n + 1, end
    return n


def assert_only_missing_points_computed(resumed: la.Surface, fresh: la.Surface, saved: int) -> None:
    """A resumed run evaluates only the chunks the journal lacks (CHUNK points each)."""
    n_points = fresh.provenance["n_points"]
    per_point = fresh.provenance["n_point_passes"] // n_points  # batches per point
    expected = (n_points - 2 * saved) * per_point
    assert resumed.provenance["n_point_passes"] == expected


def assert_same_grids(a: la.Surface, b: la.Surface) -> None:
    for x, y in zip(a.coords, b.coords):
        assert np.array_equal(x, y)
    assert np.array_equal(a.loss, b.loss)
    assert set(a.metrics) == set(b.metrics)
    for name in a.metrics:
        assert np.array_equal(a.metrics[name], b.metrics[name])


def test_resume_after_sigkill_is_bit_identical(script, tmp_path):
    out = tmp_path / "killed.h5"
    partial = tmp_path / "killed.h5.partial"
    cmd = [sys.executable, str(script.path), str(out), "0"]
    proc = subprocess.Popen([*cmd, "0.15"], cwd=tmp_path, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (partial.exists() and complete_records(partial) >= 2):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no progress recorded in 60 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert partial.exists() and not out.exists()
    saved = complete_records(partial)
    assert 2 <= saved < N_CHUNKS

    subprocess.run([*cmd, "0"], cwd=tmp_path, check=True, timeout=120)
    assert out.exists() and not partial.exists()
    resumed = la.load(out)
    assert resumed.provenance["chunks_resumed"] == saved

    fresh, _ = script.run(tmp_path / "fresh.h5")
    assert fresh.provenance["chunks_resumed"] == 0
    assert_same_grids(resumed, fresh)
    assert_only_missing_points_computed(resumed, fresh, saved)
    assert resumed.settings["key"] == fresh.settings["key"]


@pytest.mark.parametrize("damage", ["none", "torn-1", "torn-3", "torn-20", "flipped-byte"])
def test_interrupt_then_resume_drops_a_damaged_record(script, tmp_path, capsys, damage):
    out = tmp_path / "s.h5"
    partial = tmp_path / "s.h5.partial"
    with pytest.raises(KeyboardInterrupt):
        script.run(out, interrupt_at=5)
    err = capsys.readouterr().err
    assert "interrupted" in err and "run the same call again" in err
    assert partial.exists() and not out.exists()
    saved = complete_records(partial)
    assert 1 <= saved < N_CHUNKS
    size = partial.stat().st_size
    if damage.startswith("torn"):  # a record cut short by a kill
        with open(partial, "r+b") as f:
            f.truncate(size - int(damage.split("-")[1]))
        assert complete_records(partial) == saved - 1
        saved -= 1
    elif damage == "flipped-byte":  # a value of the last record no longer matches its CRC
        with open(partial, "r+b") as f:
            f.seek(size - 8)
            byte = f.read(1)
            f.seek(size - 8)
            f.write(bytes([byte[0] ^ 0x40]))
        saved -= 1

    resumed, _ = script.run(out)
    assert resumed.provenance["chunks_resumed"] == saved
    assert not partial.exists()
    fresh, _ = script.run(tmp_path / "fresh.h5")
    assert_same_grids(resumed, fresh)
    assert_only_missing_points_computed(resumed, fresh, saved)
    assert_same_grids(la.load(out), fresh)


def test_journal_of_a_different_run_is_an_error(script, tmp_path):
    out = tmp_path / "s.h5"
    with pytest.raises(KeyboardInterrupt):
        script.run(out, seed=0, interrupt_at=5)
    before = (tmp_path / "s.h5.partial").read_bytes()
    with pytest.raises(la.LossatlasError, match="different run") as info:
        script.run(out, seed=1)
    assert "\n" not in str(info.value)
    assert (tmp_path / "s.h5.partial").read_bytes() == before  # left alone


def test_overwrite_replaces_progress_of_a_different_run(script, tmp_path):
    out = tmp_path / "s.h5"
    with pytest.raises(KeyboardInterrupt):
        script.run(out, seed=0, interrupt_at=5)
    replaced, _ = script.run(out, seed=1, overwrite=True)
    fresh, _ = script.run(tmp_path / "fresh.h5", seed=1)
    assert_same_grids(replaced, fresh)
    assert not (tmp_path / "s.h5.partial").exists()


def test_garbage_partial_file_is_an_error(script, tmp_path):
    (tmp_path / "s.h5.partial").write_bytes(b"not a journal\n")
    with pytest.raises(la.LossatlasError, match="not a progress file of this lossatlas version"):
        script.run(tmp_path / "s.h5")


def test_finished_file_is_returned_without_recomputing(script, tmp_path):
    out = tmp_path / "s.h5"
    first, calls = script.run(out)
    assert calls > N_CHUNKS  # computed (once per chunk, plus probing)
    again, calls = script.run(out)
    assert calls == 1  # only the two-sample probe that keys the run; no chunk is recomputed
    assert_same_grids(again, first)
    assert again.provenance == la.load(out).provenance  # the stored record, timestamps included


def test_existing_file_with_a_different_surface(script, tmp_path):
    out = tmp_path / "s.h5"
    script.run(out, seed=0)
    stored = la.load(out)
    with pytest.raises(la.LossatlasError, match="exists and holds a different result") as info:
        script.run(out, seed=1)
    assert "\n" not in str(info.value)
    assert_same_grids(la.load(out), stored)  # untouched

    replaced, calls = script.run(out, seed=1, overwrite=True)
    assert calls > 0
    fresh, _ = script.run(tmp_path / "seed1.h5", seed=1)
    assert_same_grids(replaced, fresh)
    assert_same_grids(la.load(out), fresh)
    assert not np.array_equal(replaced.loss, stored.loss)


def test_existing_non_lossatlas_file_needs_overwrite(script, tmp_path):
    out = tmp_path / "s.h5"
    out.write_text("something else")
    with pytest.raises(la.LossatlasError, match="overwrite=True"):
        script.run(out)
    land, _ = script.run(out, overwrite=True)
    assert_same_grids(la.load(out), land)


def test_finished_file_is_not_reused_for_another_loss_function(script, tmp_path):
    """Same model, data and directions but another loss: a different surface."""
    out = tmp_path / "s.h5"
    script.run(out)
    margin = nn.CrossEntropyLoss(label_smoothing=0.5)
    expected, _ = script.run(tmp_path / "margin.h5", loss=margin)
    try:
        land, _ = script.run(out, loss=margin)
    except la.LossatlasError:
        return  # refused: fine
    np.testing.assert_allclose(land.loss, expected.loss, rtol=1e-6)


def test_in_memory_run_without_out_writes_nothing(script, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    land, _ = script.run(None)
    assert list(tmp_path.iterdir()) == [script.path]
    fresh, _ = script.run(tmp_path / "f.h5")
    assert_same_grids(land, fresh)
    assert isinstance(land.loss, np.ndarray) and torch.is_tensor(land.directions[0]["0.weight"])
