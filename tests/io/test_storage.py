"""`lossatlas.io.storage`: every result record survives a round trip through HDF5 exactly."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
import lossatlas.io.storage as storage
from lossatlas.landscape.pca import path_losses, pca_directions
from lossatlas.problems.registry import linreg
from tests.oracles.cases import build_case

CE = nn.CrossEntropyLoss()
ROSENBROCK = la.get_function("rosenbrock")
START = [-1.5, 2.0]


def assert_same(a, b, where: str = "record") -> None:
    """`a` and `b` agree in type and value all the way down (NaN equals NaN, -0.0 is not 0.0)."""
    if isinstance(a, str):  # str subclasses (torch's TorchVersion) come back as str
        assert isinstance(b, str) and str(a) == str(b), f"{where}: {a!r} != {b!r}"
        return
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            if f.metadata.get("store", True):
                assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), where
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and b.device.type == "cpu", where
        assert torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)), where
        assert torch.equal(a.isnan(), b.isnan()), where
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and (a == b or (a != a and b != b)), where
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        ), f"{where}: {a} != {b}"
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def round_trip(record, tmp_path, name: str = "record.h5"):
    path = storage.save(record, tmp_path / name)
    assert path == tmp_path / name
    assert no_tmp_files(tmp_path)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "lossatlas.record" and f.attrs["format_version"] == 1
        cls = type(record)
        assert f.attrs["class"] == f"lossatlas.{cls.__qualname__}"  # the stable public name
    loaded = storage.load(path)
    assert_same(record, loaded)
    return loaded


def no_tmp_files(folder) -> bool:
    return not any(p.name.endswith(".tmp") for p in folder.rglob("*"))


def one_line_error(match: str):
    return pytest.raises(la.LossatlasError, match=match)


@pytest.fixture(scope="module")
def small_sweep():
    # sgd at lr 0.05 diverges on Rosenbrock: a run with non-finite values.
    return la.sweep(
        ROSENBROCK, starts=[START], optimizers=("sgd", "adam"), lrs=(1e-3, 0.05), steps=20,
        quiet=True,
    )  # fmt: skip


# -- records of every kind --------------------------------------------------------------------
def test_a_function_trajectory(tmp_path):
    run = la.descend(ROSENBROCK, START, optimizer="adam", lr=0.05, steps=30)
    loaded = round_trip(run, tmp_path)
    assert loaded.final_loss == run.final_loss and loaded.param_shapes is None


def test_a_problem_trajectory_keeps_its_parameter_shapes(tmp_path):
    case = build_case("mlp")
    problem = la.Problem(case.model, CE, data=(case.X, case.y))
    run = la.descend(problem, None, optimizer="sgd", lr=0.5, steps=4)
    loaded = round_trip(run, tmp_path)
    assert isinstance(loaded.param_shapes[0][1], tuple)
    assert_same(pca_directions(loaded), pca_directions(run))


def test_a_sweep_with_a_diverged_run(small_sweep, tmp_path):
    assert any(r.trajectory.status == "diverged" for r in small_sweep)
    loaded = round_trip(small_sweep, tmp_path)
    assert isinstance(loaded.entries, tuple) and isinstance(loaded[0], la.Run)
    assert_same(small_sweep.table(), loaded.table())
    assert repr(loaded[1]) == repr(small_sweep[1])


def test_a_comparison(tmp_path):
    result = la.compare(
        ROSENBROCK, optimizers=("sgd", "adam"), starts=[START], lrs=(1e-3, 0.05), steps=20,
        quiet=True,
    )  # fmt: skip
    loaded = round_trip(result, tmp_path)
    assert loaded.table() == result.table()
    assert_same(loaded.runs("adam"), result.runs("adam"))
    assert repr(loaded) == repr(result)


def test_a_sharpness_report(tmp_path):
    report = la.sharpness_report(linreg(), k=1, trace_vectors=3, samples=2, lr=0.3, quiet=True)
    assert math.isnan(report.trace.stderr)  # three vectors: one left for the error estimate
    loaded = round_trip(report, tmp_path)
    assert isinstance(loaded.stable, la.StableLR) and isinstance(loaded.trace.ci, tuple)
    assert loaded.to_dict() == report.to_dict()
    assert loaded.lambda_max == report.lambda_max


def test_eigenpairs_with_their_vectors(tmp_path):
    eigen = la.hessian_eigen(linreg(), 2, tol=1e-4)
    loaded = round_trip(eigen, tmp_path)
    assert_same(loaded.vector(1), eigen.vector(1))


def test_a_density(tmp_path):
    density = la.spectral_density(linreg(), n_vectors=2, steps=3, quiet=True)
    loaded = round_trip(density, tmp_path)
    assert_same(loaded.density(), density.density())
    assert loaded.moment(2) == density.moment(2)


def test_pca_and_path_losses_of_a_recorded_trajectory(tmp_path):
    case = build_case("mlp")
    problem = la.Problem(case.model, CE, data=(case.X, case.y))
    pca = pca_directions(la.descend(problem, None, optimizer="sgd", lr=0.5, steps=8))
    loaded = round_trip(pca, tmp_path, "pca.h5")
    assert pca.source is not None and loaded.source is None  # marked store=False
    assert isinstance(loaded.directions, la.Directions)
    assert list(loaded.center) == list(pca.center)
    with one_line_error("does not know its checkpoints"):
        path_losses(problem, loaded)
    round_trip(path_losses(problem, pca), tmp_path, "path.h5")


def test_directions_with_their_settings(tmp_path):
    dirs = la.random_directions(build_case("mlp").model, 2, seed=3)
    loaded = round_trip(dirs, tmp_path)
    assert loaded.cosine() == dirs.cosine()


def test_a_surface_keeps_its_own_format(tmp_path):
    case = build_case("mlp")
    problem = la.Problem(case.model, CE, data=(case.X, case.y))
    grid = la.surface(problem, la.random_directions(problem, 2), 3, quiet=True)
    path = storage.save(grid, tmp_path / "grid.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "lossatlas.surface"
    loaded = storage.load(path)
    assert isinstance(loaded, la.Surface)
    assert_same(la.load(path), loaded)
    # The surface format keeps settings as sorted JSON and direction entries in name order.
    assert json.loads(json.dumps(grid.settings)) == loaded.settings
    assert_same(grid.coords, loaded.coords)
    assert_same(grid.loss, loaded.loss)
    for mine, theirs in zip(grid.directions, loaded.directions, strict=True):
        assert_same(mine, dict(sorted(theirs.items(), key=lambda kv: list(mine).index(kv[0]))))


def test_awkward_values_survive(tmp_path):
    """Plain and numeric values of every awkward sort, in a record that does not check them."""
    settings = {
        "zeta": 1,  # key order is kept, not sorted
        "alpha": "ünïcødé ✓ 🙂 \u0000 \ud800",
        "floats": [math.nan, math.inf, -math.inf, -0.0, 1e-310, 0.1],
        "nested": ((1, (2.5, None)), [True, (), {"a": ("x",)}], {}),
        "big": 2**80,
        "__tuple__": "a key that looks like the marker",
        3: "an int key",
        (1, "a"): "a tuple key",
        "numpy": (np.float32(1.5), np.int64(-3), np.bool_(True), np.float64(math.nan)),
        "tensors": {
            "w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
            "half": torch.tensor([1.5, math.nan], dtype=torch.bfloat16),
            "mask": torch.tensor([True, False]),
            "scalar": torch.tensor(2, dtype=torch.int8),
        },
        "arrays": [np.zeros((0, 3)), np.array(7, dtype=np.uint16), np.array([1 + 2j, math.nan])],
        "bools": np.array([[True], [False]]),
        "bytes": np.array([b"ab", b"c"]),
    }
    run = la.Trajectory(
        loss=np.array([math.nan, math.inf, 1.0]),
        grad_norm=np.array([], dtype=np.float32),
        lr=np.asfortranarray(np.ones((2, 3))).T,
        status="",
        final_position=np.array([1.0]),
        settings=settings,
        provenance={"big": np.arange(100_000, dtype=np.float64)},  # far over the attr limit
    )
    loaded = round_trip(run, tmp_path)
    assert list(loaded.settings) == list(settings)


def test_writing_is_atomic_and_overwrites(tmp_path, small_sweep):
    run = small_sweep[0].trajectory
    path = storage.save(run, tmp_path / "sub" / "run.h5")
    storage.save(small_sweep, path)  # replaces the file in place
    assert isinstance(storage.load(path), la.Sweep)
    assert [p.name for p in path.parent.iterdir()] == ["run.h5"]


# -- what cannot be stored ----------------------------------------------------------------------
def test_an_unstorable_value_names_its_field_and_leaves_nothing(tmp_path, small_sweep):
    bad = dataclasses.replace(small_sweep[1].trajectory, settings={"objective": lambda p: p})
    entries = (small_sweep[0], dataclasses.replace(small_sweep[1], trajectory=bad))
    record = dataclasses.replace(small_sweep, entries=entries)
    with one_line_error(r"entries\[1\]\.trajectory\.settings\['objective'\]: cannot store"):
        storage.save(record, tmp_path / "bad.h5")
    assert list(tmp_path.iterdir()) == []
    with one_line_error("cannot store a set"):
        storage.save(dataclasses.replace(bad, settings={"s": {1}}), tmp_path / "bad.h5")
    with one_line_error("cannot store"):
        storage.save(dataclasses.replace(bad, settings={"o": np.array([None])}), tmp_path / "b")
    with one_line_error("expected a lossatlas result record"):
        storage.save({"loss": 1.0}, tmp_path / "bad.h5")
    assert list(tmp_path.iterdir()) == []


def test_a_foreign_dataclass_inside_is_refused_when_saving(tmp_path, small_sweep):
    @dataclasses.dataclass
    class Mine:
        x: int = 1

    bad = dataclasses.replace(small_sweep[0].trajectory, settings={"mine": Mine()})
    with one_line_error(r"settings\['mine'\]: a .*Mine is not a lossatlas record"):
        storage.save(bad, tmp_path / "bad.h5")


# -- files that are not records -----------------------------------------------------------------
def saved(tmp_path, small_sweep):
    """A record file as a writer that does not seal its files would leave it (the cases below
    edit it by hand; in a sealed file any edit is reported as damage, see tests/adversarial)."""
    path = storage.save(small_sweep, tmp_path / "sweep.h5")
    with h5py.File(path, "a") as f:
        del f.attrs["checksum"]
    return path


@pytest.mark.parametrize(
    "spec",
    [
        "os:system",
        "collections:OrderedDict",
        "builtins:dict",
        "lossatlas:Sweep",  # the package itself was no 0.1.0 record module
        "lossatlas.sweep:Mapping",  # imported there, not a dataclass
        "lossatlas.sweep:Sweep.__init__",
        "lossatlas.sweep:Trajectory",  # a record, but 0.1.0 kept it elsewhere
        "lossatlas.nowhere:Thing",
        "lossatlas.sweep:<locals>.X",
        "lossatlas.Mapping",
        "lossatlas.Problem",  # public, but not a record
        "lossatlas.descent.sweeps.Sweep",  # the stable name is the public one only
        "os.system",
        "no colon",
    ],
)
def test_foreign_classes_are_refused(tmp_path, small_sweep, spec):
    path = saved(tmp_path, small_sweep)
    for node in ("/", "/entries/0"):  # at the root and nested
        with h5py.File(path, "a") as f:
            old, f[node].attrs["class"] = f[node].attrs["class"], spec
        with one_line_error("refusing to build"):
            storage.load(path)
        with h5py.File(path, "a") as f:
            f[node].attrs["class"] = old
    assert isinstance(storage.load(path), la.Sweep)


def test_a_record_of_another_class_with_other_fields_is_a_clean_error(tmp_path, small_sweep):
    path = saved(tmp_path, small_sweep)
    with h5py.File(path, "a") as f:
        f.attrs["class"] = "lossatlas.stability:StableLR"
    with one_line_error("cannot rebuild StableLR"):
        storage.load(path)


def test_files_that_are_not_records(tmp_path, small_sweep):
    with one_line_error("no such file"):
        storage.load(tmp_path / "missing.h5")
    (tmp_path / "notes.txt").write_text("hello\n")
    with one_line_error("not a readable HDF5 file"):
        storage.load(tmp_path / "notes.txt")
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.arange(3)
    with one_line_error("not a lossatlas file"):
        storage.load(tmp_path / "foreign.h5")
    path = saved(tmp_path, small_sweep)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 2
    with one_line_error("newer lossatlas"):
        storage.load(path)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 1
        f["entries/0"].attrs["kind"] = "pickle"
    with one_line_error(r"entries\[0\]: unknown node kind"):
        storage.load(path)
    with pytest.raises(la.LossatlasError) as info:
        storage.load(path)
    assert "\n" not in str(info.value)


def test_nothing_is_unpickled():
    source = inspect.getsource(storage)
    assert "import pickle" not in source and "pickle." not in source
