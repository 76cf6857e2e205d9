"""Damaged and foreign files: every reader answers with the right result or a one-line error
naming the file, never a traceback or a silently different value.

Bytes are flipped at offsets spread over the whole file (HDF5 superblock, object headers,
B-trees, heaps, attributes, raw data) and files are cut short.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import lossatlas as la
from lossatlas.errors import LossatlasError
from lossatlas.landscape.journal import Journal
from tests.support.cli import run_cli

OFFSETS = 250  # flipped bytes per file


@pytest.fixture(scope="module")
def problem() -> la.Problem:
    return la.linreg(n=40)


def a_surface(problem: la.Problem, out: Path | None = None, **options) -> la.Surface:
    dirs = la.random_directions(problem, 2, seed=0)
    return la.surface(problem, dirs, steps=(5, 4), quiet=True, out=out, **options)


def same_surface(a: la.Surface, b: la.Surface) -> bool:
    return (
        all(np.array_equal(x, y) for x, y in zip(a.coords, b.coords))
        and np.array_equal(a.loss, b.loss, equal_nan=True)
        and a.metrics.keys() == b.metrics.keys()
        and all(np.array_equal(a.metrics[m], b.metrics[m]) for m in a.metrics)
        and a.paths.keys() == b.paths.keys()
        and all(np.array_equal(a.paths[k], b.paths[k]) for k in a.paths)
        and a.settings == b.settings
        and a.provenance == b.provenance
        and dict(a.directions.settings) == dict(b.directions.settings)
        and all(
            d.keys() == e.keys() and all(torch.equal(d[k], e[k]) for k in d)
            for d, e in zip(a.directions, b.directions)
        )
    )


def flipped_copies(path: Path, tmp: Path, n: int = OFFSETS):
    """`(offset, path of a copy with that byte inverted)` for `n` offsets over the file."""
    data = path.read_bytes()
    for offset in np.linspace(0, len(data) - 1, n).astype(int):
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        copy = tmp / f"flip{offset}{path.suffix}"
        copy.write_bytes(bytes(damaged))
        yield int(offset), copy


def load_or_error(path: Path):
    """The loaded record, or the error's one line (which must name the file)."""
    try:
        return la.load(path)
    except LossatlasError as exc:
        message = str(exc)
        assert "\n" not in message and str(path) in message, message
        return message


def test_every_flipped_byte_of_a_surface_file_is_an_error_or_the_same_surface(problem, tmp_path):
    original = la.with_paths(a_surface(problem), {"path/with/slashes": np.zeros((3, 2))})
    path = original.save(tmp_path / "s.h5")
    outcomes = {"same": 0, "error": 0}
    for offset, copy in flipped_copies(path, tmp_path):
        loaded = load_or_error(copy)
        if isinstance(loaded, str):
            outcomes["error"] += 1
        else:
            assert same_surface(loaded, original), f"byte {offset}: a different surface"
            outcomes["same"] += 1
        copy.unlink()
    assert outcomes["error"] > OFFSETS // 10  # the flips did reach the file's contents


def test_every_flipped_byte_of_a_record_file_is_an_error_or_the_same_record(problem, tmp_path):
    run = la.descend(problem, optimizer="adam", lr=0.05, steps=5)
    path = la.save(run, tmp_path / "run.h5")
    errors = 0
    for offset, copy in flipped_copies(path, tmp_path):
        loaded = load_or_error(copy)
        if isinstance(loaded, str):
            errors += 1
        else:
            for name in ("loss", "grad_norm", "lr", "final_position"):
                assert np.array_equal(getattr(loaded, name), getattr(run, name)), (offset, name)
            assert loaded.settings == run.settings and loaded.provenance == run.provenance
            assert loaded.status == run.status and loaded.param_shapes == run.param_shapes
        copy.unlink()
    assert errors > OFFSETS // 10


@pytest.mark.parametrize("keep", [0, 8, 100, 0.5, 0.99])
def test_a_file_cut_short_is_an_error(problem, tmp_path, keep):
    path = a_surface(problem).save(tmp_path / "s.h5")
    data = path.read_bytes()
    path.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    assert isinstance(load_or_error(path), str)


@pytest.mark.parametrize(
    "damage",
    [
        lambda f: f.__delitem__("coords"),
        lambda f: f.__delitem__("loss"),
        lambda f: f.__delitem__("directions"),
        lambda f: f.attrs.__setitem__("settings", "{not json"),
        lambda f: f.attrs.__setitem__("format_version", "two"),
        lambda f: f.attrs.__delitem__("provenance"),
        lambda f: f["metrics"].create_dataset("9", data=[1.0]),
    ],
    ids=["coords", "loss", "directions", "settings", "version", "provenance", "metric"],
)
def test_a_foreign_file_in_the_surface_format_is_an_error(problem, tmp_path, damage):
    """Files written by other code (or edited by hand): no seal, parts missing or wrong."""
    path = a_surface(problem).save(tmp_path / "s.h5")
    with h5py.File(path, "r+") as f:
        del f.attrs["checksum"]  # as a writer that never sealed it
        if "metrics" not in f:
            f.create_group("metrics")
        damage(f)
    message = load_or_error(path)
    assert isinstance(message, str) and "s.h5" in message


def test_reports_and_reruns_on_a_damaged_file_exit_2_naming_it(problem, tmp_path):
    path = a_surface(problem).save(tmp_path / "s.h5")
    with h5py.File(path, "r") as f:
        at = f["loss"].id.get_offset()  # a byte of the losses themselves
    data = bytearray(path.read_bytes())
    data[at + 3] ^= 0x10
    path.write_bytes(bytes(data))
    proc = run_cli("report", "s.h5", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "s.h5" in proc.stderr
    # A rerun of the library call with the same output replaces it only with overwrite=True.
    with pytest.raises(LossatlasError, match="overwrite=True"):
        a_surface(problem, out=path)
    fresh = a_surface(problem, out=path, overwrite=True)
    assert same_surface(la.load(path), fresh)


# -- journals -----------------------------------------------------------------------------------
def header_of(surface: la.Surface) -> dict:
    """The journal header of the run that made `surface`."""
    return {"key": surface.settings["key"], "plan": surface.settings["plan"]}


def a_journal(problem: la.Problem, tmp_path: Path) -> tuple[Path, la.Surface]:
    """A finished run's progress file, rebuilt with every chunk, and the run's result."""
    fresh = a_surface(problem, chunk_size=3)
    partial = tmp_path / "s.h5.partial"
    journal = Journal.create(partial, header_of(fresh))
    table = np.stack([g.reshape(-1) for g in (fresh.loss, *fresh.metrics.values())])
    for i, start in enumerate(range(0, table.shape[1], 3)):
        journal.append(i, table[:, start : start + 3].reshape(-1))
    journal.close()
    return partial, fresh


def test_a_complete_journal_gives_the_same_surface_without_computing(problem, tmp_path):
    partial, fresh = a_journal(problem, tmp_path)
    resumed = a_surface(problem, out=tmp_path / "s.h5", chunk_size=3)
    assert np.array_equal(resumed.loss, fresh.loss)
    assert resumed.provenance["n_point_passes"] == 0 and not partial.exists()


def test_every_flipped_byte_of_a_journal_header_is_reported(problem, tmp_path):
    partial, fresh = a_journal(problem, tmp_path)
    data = partial.read_bytes()
    header_end = data.index(b"\n", data.index(b"\n") + 1) + 1
    for offset in range(0, header_end, 3):
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        partial.write_bytes(bytes(damaged))
        with pytest.raises(LossatlasError) as info:
            a_surface(problem, out=tmp_path / "s.h5", chunk_size=3)
        message = str(info.value)
        assert "\n" not in message and "s.h5.partial" in message, (offset, message)
        assert "overwrite=True (--overwrite in the CLI)" in message
    recomputed = a_surface(problem, out=tmp_path / "s.h5", chunk_size=3, overwrite=True)
    assert np.array_equal(recomputed.loss, fresh.loss) and not partial.exists()


def test_flipped_bytes_in_journal_records_are_dropped_and_recomputed(problem, tmp_path):
    partial, fresh = a_journal(problem, tmp_path)
    data = partial.read_bytes()
    header_end = data.index(b"\n", data.index(b"\n") + 1) + 1
    for offset in np.linspace(header_end, len(data) - 1, 25).astype(int):
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        partial.write_bytes(bytes(damaged))
        (tmp_path / "s.h5").unlink(missing_ok=True)
        resumed = a_surface(problem, out=tmp_path / "s.h5", chunk_size=3)
        assert np.array_equal(resumed.loss, fresh.loss), offset
        assert resumed.provenance["n_point_passes"] > 0  # the damaged chunk and later ones


def test_a_journal_whose_chunks_do_not_fit_the_run_is_reported(problem, tmp_path):
    fresh = a_surface(problem, chunk_size=3)
    partial = tmp_path / "s.h5.partial"
    journal = Journal.create(partial, header_of(fresh))
    journal.append(0, np.zeros(5))  # chunks hold 3 points
    journal.close()
    with pytest.raises(LossatlasError, match="chunks that do not fit this run"):
        a_surface(problem, out=tmp_path / "s.h5", chunk_size=3)
    journal = Journal.create(partial, header_of(fresh))
    journal.append(99, np.zeros(3))  # no such chunk
    journal.close()
    with pytest.raises(LossatlasError, match="chunks that do not fit this run"):
        a_surface(problem, out=tmp_path / "s.h5", chunk_size=3)
    assert np.array_equal(
        a_surface(problem, out=tmp_path / "s.h5", chunk_size=3, overwrite=True).loss, fresh.loss
    )
