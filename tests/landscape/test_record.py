"""The `Surface` record and its HDF5 form."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from lossatlas.landscape.record import Surface

CE = nn.CrossEntropyLoss()
METRICS = {"accuracy": la.accuracy, "error": la.error}


def assert_same(a: Surface, b: Surface) -> None:
    assert len(a.coords) == len(b.coords)
    for x, y in zip(a.coords, b.coords):
        assert np.array_equal(x, y)
    assert a.loss.dtype == b.loss.dtype
    assert np.array_equal(a.loss, b.loss, equal_nan=True)
    assert set(a.metrics) == set(b.metrics)
    for name in a.metrics:
        assert np.array_equal(a.metrics[name], b.metrics[name], equal_nan=True)
    assert len(a.directions) == len(b.directions)
    for da, db in zip(a.directions, b.directions):
        assert set(da) == set(db)
        for k in da:
            assert da[k].dtype == db[k].dtype and torch.equal(da[k], db[k]), k
    assert dict(a.directions.settings) == dict(b.directions.settings)
    assert a.settings == b.settings
    assert a.provenance == b.provenance


@pytest.mark.parametrize("kind", ["random-2d", "random-1d", "axis", "between", "user", "float64"])
def test_save_load_round_trip(mlp_case, tmp_path, kind):
    dtype = torch.float64 if kind == "float64" else None
    problem = la.Problem(
        mlp_case.model, CE, data=(mlp_case.X, mlp_case.y), metrics=METRICS, dtype=dtype
    )
    if kind in ("random-2d", "float64"):
        dirs = la.random_directions(problem, 2, seed=3)
    elif kind == "random-1d":
        dirs = la.random_directions(problem, 1, norm="layer", ignore=None, seed=3)
    elif kind == "axis":
        dirs = la.axis_directions(problem, ["0.weight[1, 2]", "2.bias[0]"])
    elif kind == "between":
        torch.manual_seed(5)
        dirs = la.direction_between(
            problem, nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        )
    else:
        dirs = [{"2.bias": torch.ones(3)}]
    land = la.surface(problem, dirs, steps=4, span=(-0.5, 1.0), out=tmp_path / "s.h5", quiet=True)
    loaded = la.load(tmp_path / "s.h5")
    assert_same(land, loaded)
    assert loaded.ndim == land.ndim
    # The directions are the ones given, moved to the CPU.
    given = dirs if isinstance(dirs, list) else list(dirs)
    for d_given, d_loaded in zip(given, loaded.directions):
        assert all(
            torch.equal(d_given[k].cpu().to(d_loaded[k].dtype), d_loaded[k]) for k in d_given
        )
    assert not (tmp_path / "s.h5.partial").exists()
    assert not (tmp_path / "s.h5.tmp").exists()
    # Saving the loaded record again gives the same record.
    loaded.save(tmp_path / "again.h5")
    assert_same(loaded, la.load(str(tmp_path / "again.h5")))


def test_settings_and_provenance_content(mlp_case, tmp_path):
    problem = la.Problem(mlp_case.model, CE, data=mlp_case.batches(20), metrics=METRICS)
    dirs = la.random_directions(problem, 2, seed=1)
    land = la.surface(
        problem, dirs, steps=(3, 4), span=[(-1, 1), (0, 2)], out=tmp_path / "s.h5", quiet=True
    )
    loaded = la.load(tmp_path / "s.h5")
    assert loaded.settings["steps"] == [3, 4]
    assert loaded.settings["span"] == [[-1.0, 1.0], [0.0, 2.0]]
    assert loaded.settings["metrics"] == ["accuracy", "error"]
    assert loaded.provenance["n_samples"] == len(mlp_case.X)
    assert loaded.provenance["n_points"] == 12
    assert loaded.provenance["n_params"] == sum(p.numel() for p in mlp_case.model.parameters())
    assert loaded.provenance["versions"]["torch"] == torch.__version__
    assert loaded.directions.settings["seed"] == 1
    np.testing.assert_allclose(loaded.metrics["error"], 1 - loaded.metrics["accuracy"], atol=1e-7)
    assert land.loss.shape == (3, 4)


def test_non_finite_values_survive_a_round_trip(tmp_path):
    model = nn.Linear(2, 1)
    X, y = torch.randn(10, 2), torch.zeros(10, 1)
    problem = la.Problem(model, lambda out, t: torch.log(out.mean() - t.mean()), data=(X, y))
    with pytest.warns(la.LossatlasWarning, match="non-finite"):
        land = la.surface(
            problem,
            [{"bias": torch.ones(1)}],
            steps=9,
            span=(-50, 50),
            out=tmp_path / "n.h5",
            quiet=True,
        )
    loaded = la.load(tmp_path / "n.h5")
    assert np.isnan(loaded.loss).any() and np.isfinite(loaded.loss).any()
    assert_same(land, loaded)
    assert loaded.nonfinite == int((~np.isfinite(land.loss)).sum())


def hand_made(loss: np.ndarray) -> Surface:
    coords = tuple(np.linspace(-1, 1, n) for n in loss.shape)
    return Surface(coords=coords, loss=loss, metrics={}, directions=la.Directions(()))


def test_argmin_and_nonfinite_on_a_hand_made_surface():
    loss = np.array([[3.0, np.nan, 2.0], [-np.inf, 5.0, 0.5], [1.0, np.inf, 4.0]])
    land = hand_made(loss)
    assert land.ndim == 2
    assert land.nonfinite == 3
    # -inf is not a finite minimum: the lowest finite value 0.5 is at (0.0, 1.0).
    assert land.argmin() == (0.0, 1.0)
    line = hand_made(np.array([np.nan, 2.0, 1.0, 7.0, 1.5]))
    assert line.argmin() == (0.0,)


def test_load_missing_file(tmp_path):
    with pytest.raises(la.LossatlasError, match="no such file") as info:
        la.load(tmp_path / "missing.h5")
    assert "\n" not in str(info.value)


def test_load_a_file_that_is_not_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("these are not the landscapes you are looking for\n" * 5)
    with pytest.raises(la.LossatlasError, match="not a readable HDF5 file") as info:
        la.load(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("attrs", [{}, {"format": "someone.else"}])
def test_load_an_hdf5_file_that_is_not_a_lossatlas_file(tmp_path, attrs):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("loss", data=np.zeros((3, 3)))
        f.attrs.update(attrs)
    with pytest.raises(la.LossatlasError, match=r"not a lossatlas (surface )?file") as info:
        la.load(path)
    assert "\n" not in str(info.value)


def test_load_a_file_from_a_newer_version(tmp_path):
    path = hand_made(np.zeros(3)).save(tmp_path / "s.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(la.LossatlasError, match="newer lossatlas"):
        la.load(path)


def test_load_a_directory(tmp_path):
    with pytest.raises(la.LossatlasError):
        la.load(tmp_path)
