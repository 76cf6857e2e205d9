"""Files written by lossatlas 0.1.0 (flat module layout, `lossatlas.sweep:Sweep` class names)
still load, as the same classes with equal values (tests/data/v0_1_0/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

import lossatlas as la
from lossatlas.io.records import LEGACY_MODULES, RECORDS, record_class
from tests.oracles.fingerprint import compare, fingerprint

DATA = Path(__file__).resolve().parents[1] / "data" / "v0_1_0"
EXPECTED = json.loads((DATA / "expected.json").read_text())["files"]


NEW_SINCE_0_1_0 = {"MonitorRecord"}  # record kinds 0.1.0 did not have: no old file can exist


def test_every_record_kind_has_an_old_file() -> None:
    stored = {entry["class"].partition(":")[2] for entry in EXPECTED.values()}
    assert stored == set(RECORDS) - NEW_SINCE_0_1_0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_old_file_loads_with_equal_values(name: str) -> None:
    entry = EXPECTED[name]
    record = la.load(DATA / name)
    assert type(record) is record_class(entry["class"])
    assert type(record).__name__ == entry["class"].partition(":")[2]
    differences = compare(entry["fingerprint"], fingerprint(record))
    assert not differences, "\n".join(differences[:20])


def test_old_files_name_classes_by_their_old_modules() -> None:
    """The files really are in the old layout, so the test above is not vacuous."""
    with h5py.File(DATA / "sweep.h5", "r") as f:
        assert f.attrs["class"] == "lossatlas.sweep:Sweep"
        assert f["entries/0"].attrs["class"] == "lossatlas.sweep:Run"
    assert "lossatlas.sweep" in LEGACY_MODULES


def test_an_old_file_saved_again_names_the_stable_public_class(tmp_path: Path) -> None:
    record = la.load(DATA / "sweep.h5")
    path = la.save(record, tmp_path / "sweep.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["class"] == "lossatlas.Sweep"
        assert f["entries/0"].attrs["class"] == "lossatlas.Run"
    assert not compare(fingerprint(record), fingerprint(la.load(path)))
