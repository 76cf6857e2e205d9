"""Every stored record kind (but the plain `Directions`) has one `headline()`."""

from __future__ import annotations

import dataclasses

import pytest

from lossatlas.io.records import RECORDS

KINDS = sorted(name for name in RECORDS if name != "Directions")


def test_every_record_kind_is_listed() -> None:
    assert len(KINDS) == 25


@pytest.mark.parametrize("name", KINDS)
def test_record_has_a_headline(name: str) -> None:
    cls = RECORDS[name]
    assert callable(getattr(cls, "headline", None)), f"{name} has no headline()"
    assert "headline" in vars(cls), f"{name} inherits its headline()"
    assert (cls.headline.__doc__ or "").strip(), f"{name}.headline() has no docstring"
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    assert "headline" not in {f.name for f in dataclasses.fields(cls)}  # storage: fields only
