"""Trajectory recording and PCA directions, against planes built by hand, numpy's SVD and
brute-force losses of model copies."""

from __future__ import annotations

import copy
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
import lossatlas.landscape.pca as pca_module
from lossatlas.core import Evaluator
from lossatlas.descent.run import descend
from lossatlas.landscape.pca import PCA, path_losses, pca_directions
from lossatlas.landscape.recorder import WeightRecorder
from tests.oracles.cases import build_case
from tests.oracles.landscape import evaluate

CE = nn.CrossEntropyLoss()


def names_shapes(model: nn.Module):
    return tuple((n, tuple(p.shape)) for n, p in model.named_parameters())


def flat_dirs(pca: PCA) -> np.ndarray:
    """The directions as rows of a (k, P) float64 matrix."""
    return np.stack(
        [torch.cat([t.reshape(-1) for t in d.values()]).numpy() for d in pca.directions]
    )


def flat(params) -> np.ndarray:
    return torch.cat([t.detach().reshape(-1).double() for t in params.values()]).numpy()


def with_params(model: nn.Module, row: np.ndarray, dtype=torch.float32) -> nn.Module:
    """A copy of `model` holding the flat parameter vector `row` (independent of lossatlas)."""
    moved = copy.deepcopy(model).to(dtype)
    torch.nn.utils.vector_to_parameters(torch.as_tensor(row, dtype=dtype), moved.parameters())
    return moved.eval()


def plane_path(P: int, T: int = 12, loop: bool = False, seed: int = 0):
    """Checkpoints c + a_t u + b_t v with known orthonormal u, v (and the last one at c)."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.normal(size=(P, 3)))
    u, v, e = U.T  # e is orthogonal to the plane
    theta = np.linspace(0, 2 * np.pi if loop else 2.5, T)
    a, b = 1.5 * (np.cos(theta) - np.cos(theta[-1])), 0.6 * (np.sin(theta) - np.sin(theta[-1]))
    c = rng.normal(size=P)
    return c + np.outer(a, u) + np.outer(b, v), u, v, e


def one_line_error(match: str):
    return pytest.raises(la.LossatlasError, match=match)


def train(model: nn.Module, X, y, steps: int, recorders=(), lr: float = 0.3):
    """Full-batch SGD with momentum; every recorder records the start and after every step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for rec in recorders:
        rec.record()
    for _ in range(steps):
        opt.zero_grad()
        CE(model(X), y).backward()
        opt.step()
        for rec in recorders:
            rec.record()
    return model.eval()


class Snapshots:
    """A hand-written recorder: every parameter, flattened, after every call."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.rows = model, []

    def record(self) -> None:
        self.rows.append(torch.nn.utils.parameters_to_vector(self.model.parameters()).detach())


# -- PCA against known planes and numpy --------------------------------------------------------
def test_pca_recovers_a_known_plane():
    model = build_case("mlp").model
    shapes = names_shapes(model)
    X, u, v, _ = plane_path(sum(p.numel() for p in model.parameters()))
    pca = pca_directions(X, names_shapes=shapes)
    D = flat_dirs(pca)
    np.testing.assert_allclose(D @ D.T, np.eye(2), atol=1e-13)  # orthonormal
    for w in (u, v):  # span(D) == span(u, v)
        assert np.linalg.norm(w - D.T @ (D @ w)) < 1e-12
    assert abs(pca.explained_variance_ratio.sum() - 1) < 1e-13
    assert pca.explained_variance_ratio[0] >= pca.explained_variance_ratio[1]
    np.testing.assert_allclose(pca.off_plane, 0, atol=1e-12)
    np.testing.assert_array_equal(flat(pca.center), X[-1])
    np.testing.assert_allclose(X[-1] + pca.coords @ D, X, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pca.coords[-1], 0, atol=1e-13)
    assert (pca.coords[0] < 0).all()  # sign convention: training moves in the + sense
    assert [n for n, _ in shapes] == list(pca.directions[0])
    assert pca.directions.settings["kind"] == "pca" and pca.directions.settings["n"] == 2
    assert pca.provenance["n_checkpoints"] == 12 and pca.provenance["n_params"] == X.shape[1]
    np.testing.assert_array_equal(pca.steps, np.arange(12))


def test_off_plane_distance_is_the_norm_of_a_known_component():
    model = build_case("mlp").model
    X, u, v, e = plane_path(sum(p.numel() for p in model.parameters()), T=13, loop=True)
    e = 0.05 * e
    X[0] += e  # checkpoint 0 sits at the centre in the plane, so the plane does not tilt
    pca = pca_directions(X, names_shapes=names_shapes(model))
    np.testing.assert_allclose(pca.off_plane[0], np.linalg.norm(e), rtol=1e-12)
    np.testing.assert_allclose(pca.off_plane[1:], 0, atol=1e-12)
    D = flat_dirs(pca)
    for w in (u, v):
        assert np.linalg.norm(w - D.T @ (D @ w)) < 1e-12
    share = np.linalg.norm(e) ** 2 / ((X - X[-1]) ** 2).sum()  # e's share is left out
    np.testing.assert_allclose(1 - pca.explained_variance_ratio.sum(), share, rtol=1e-9)


@pytest.mark.parametrize("center", ["last", "mean"])
def test_pca_matches_numpy_svd(center):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(9, 67)) * np.linspace(0.2, 3.0, 67)  # distinct singular values
    shapes = names_shapes(build_case("mlp").model)
    pca = pca_directions(X, n=3, center=center, names_shapes=shapes)
    c = X[-1] if center == "last" else X.mean(0)
    np.testing.assert_allclose(flat(pca.center), c, rtol=1e-14)
    _, S, Vt = np.linalg.svd(X - c, full_matrices=False)
    np.testing.assert_allclose(pca.explained_variance_ratio, (S**2 / (S**2).sum())[:3], rtol=1e-10)
    np.testing.assert_allclose(pca.singular_values, S[:3], rtol=1e-10)
    D = flat_dirs(pca)
    signs = np.sign((D * Vt[:3]).sum(1))
    np.testing.assert_allclose(D, signs[:, None] * Vt[:3], atol=1e-10)
    np.testing.assert_allclose(D @ D.T, np.eye(3), atol=1e-13)
    np.testing.assert_allclose(pca.coords, (X - c) @ D.T, atol=1e-12)
    residual = (X - c) - pca.coords @ D
    np.testing.assert_allclose(pca.off_plane, np.linalg.norm(residual, axis=1), atol=1e-12)
    assert (pca.coords[-1] - pca.coords[0] > 0).all()  # the sign convention
    if center == "mean":
        np.testing.assert_allclose(pca.coords.sum(0), 0, atol=1e-12)
    again = pca_directions(X, n=3, center=center, names_shapes=shapes)
    np.testing.assert_array_equal(flat_dirs(again), D)  # deterministic


def test_last_and_mean_centres_differ():
    X = np.random.default_rng(2).normal(size=(6, 67))
    shapes = names_shapes(build_case("mlp").model)
    last = pca_directions(X, center="last", names_shapes=shapes)
    mean = pca_directions(X, center="mean", names_shapes=shapes)
    assert last.provenance["center"] == "last" and mean.directions.settings["center"] == "mean"
    assert not np.allclose(flat(last.center), flat(mean.center))
    assert np.abs(flat_dirs(last) @ flat_dirs(mean).T).max() < 1 - 1e-3


# -- the recorder ---------------------------------------------------------------------------------
def test_recorder_in_a_training_loop(tmp_path):
    case = build_case("mlp")
    model, twin, snapped = case.model, copy.deepcopy(case.model), copy.deepcopy(case.model)
    mem = WeightRecorder(model, every=2)
    disk = WeightRecorder(model, every=2, path=tmp_path / "w.h5")
    train(model, case.X, case.y, 10, (mem, disk))
    train(twin, case.X, case.y, 10)  # unrecorded
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)  # recording changed nothing
    snapshots = Snapshots(snapped)
    train(snapped, case.X, case.y, 10, (snapshots,))
    np.testing.assert_array_equal(mem.steps, [0, 2, 4, 6, 8, 10])
    rows = mem.checkpoints()
    assert rows.dtype == np.float32 and rows.shape == (6, 67) and len(mem) == 6
    np.testing.assert_array_equal(rows, torch.stack(snapshots.rows[::2]).numpy())
    np.testing.assert_array_equal(disk.checkpoints(), rows)
    np.testing.assert_array_equal(disk.steps, mem.steps)
    assert mem.names_shapes == names_shapes(model) == disk.names_shapes
    np.testing.assert_array_equal(np.concatenate(list(disk.iter_blocks(4))), rows)
    assert [len(b) for b in disk.iter_blocks(4)] == [4, 2]
    assert torch.equal(mem.params(1)["2.bias"], torch.from_numpy(rows[1, -3:]))

    # Close, reopen and go on: numbering resumes where it stopped.
    disk.close()
    assert len(disk) == 6  # still readable from the file
    with WeightRecorder(model, every=2, path=tmp_path / "w.h5") as again:
        train(model, case.X, case.y, 4, (again, mem))
        again.record(step=20)
        mem.record(step=20)
    loaded = WeightRecorder.load(tmp_path / "w.h5")
    np.testing.assert_array_equal(loaded.steps, [0, 2, 4, 6, 8, 10, 12, 14, 20])
    np.testing.assert_array_equal(loaded.checkpoints(), mem.checkpoints())
    with one_line_error("read-only"):
        loaded.record()
    loaded.close()

    # Gram streaming from the file equals the in-memory PCA, reading at most 2 rows at a time.
    reads = []
    loaded = WeightRecorder.load(tmp_path / "w.h5")
    original = loaded.rows

    def spy(start: int, stop: int) -> np.ndarray:
        reads.append(len(block := original(start, stop)))
        return block

    loaded.rows = spy
    streamed = pca_directions(loaded, n=3, block_rows=2)
    assert 0 < max(reads) <= 2
    whole = pca_directions(mem.checkpoints(), n=3, names_shapes=mem.names_shapes)
    np.testing.assert_allclose(flat_dirs(streamed), flat_dirs(whole), atol=1e-10)
    np.testing.assert_allclose(streamed.coords, whole.coords, atol=1e-10)
    np.testing.assert_allclose(streamed.off_plane, whole.off_plane, atol=1e-10)
    np.testing.assert_allclose(streamed.explained_variance_ratio, whole.explained_variance_ratio)
    np.testing.assert_array_equal(streamed.steps, mem.steps)
    from_recorder = pca_directions(mem, n=3)
    np.testing.assert_array_equal(flat_dirs(from_recorder), flat_dirs(whole))


def test_recorder_rejects_other_models_and_files(tmp_path):
    model = build_case("mlp").model
    with WeightRecorder(model, path=tmp_path / "w.h5") as rec:
        rec.record()
    other = build_case("wide_mlp").model
    with one_line_error("other parameters"):
        WeightRecorder(other, path=tmp_path / "w.h5")
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["a"] = 1
    with one_line_error("not a lossatlas weights file"):
        WeightRecorder(model, path=tmp_path / "x.h5")
    (tmp_path / "t.h5").write_text("text")
    with one_line_error("not a readable HDF5 file"):
        WeightRecorder.load(tmp_path / "t.h5")
    with one_line_error("no such file"):
        WeightRecorder.load(tmp_path / "missing.h5")
    with one_line_error("every"):
        WeightRecorder(model, every=0)
    with one_line_error("torch.nn.Module"):
        WeightRecorder("model")
    rec = WeightRecorder(model, every=3)
    assert [rec.record(step=k) for k in (1, 3, 5, 6)] == [False, True, False, True]
    np.testing.assert_array_equal(rec.steps, [3, 6])
    with one_line_error("at least 7"):
        rec.record(step=6)


def test_recording_survives_a_killed_run(tmp_path):
    script = (
        "import os, sys, torch\n"
        "from lossatlas.landscape.recorder import WeightRecorder\n"
        "model = torch.nn.Linear(3, 2)\n"
        "rec = WeightRecorder(model, path=sys.argv[1])\n"
        "for k in range(3):\n"
        "    with torch.no_grad():\n"
        "        model.weight.add_(1.0)\n"
        "    rec.record()\n"
        "os._exit(0)  # no close, no cleanup\n"
    )
    path = tmp_path / "killed.h5"
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60)
    rec = WeightRecorder.load(path)
    np.testing.assert_array_equal(rec.steps, [0, 1, 2])
    rows = rec.checkpoints()
    np.testing.assert_allclose(rows[1:, :6] - rows[:-1, :6], 1.0, atol=1e-6)  # moved by 1
    rec.close()


# -- losses along the path ------------------------------------------------------------------------
def test_path_losses_against_brute_force(monkeypatch):
    case = build_case("mlp")
    batches = case.batches(24)
    model = copy.deepcopy(case.model)
    rec = WeightRecorder(model)
    train(model, case.X, case.y, 6, (rec,), lr=0.5)
    problem = la.Problem(case.model, CE, data=batches)
    pca = pca_directions(rec)
    made = []

    def counting(*args, **kwargs):
        made.append(pca_module.Evaluator)
        return Evaluator(*args, **kwargs)

    monkeypatch.setattr(pca_module, "Evaluator", counting)
    budget = 4 * 4 * 4 * problem.n_params  # 4 checkpoints per block: 7 = 4 + 3
    result = path_losses(problem, pca, memory_budget=budget)
    assert len(made) == 3  # the plane, and two blocks of checkpoints
    whole = path_losses(problem, pca)
    np.testing.assert_allclose(result.true_loss, whole.true_loss, rtol=1e-6)
    np.testing.assert_allclose(result.plane_loss, whole.plane_loss, rtol=1e-6)
    rows = rec.checkpoints()
    true = [evaluate(with_params(case.model, r), CE, batches)[0] for r in rows]
    np.testing.assert_allclose(result.true_loss, true, rtol=1e-6)
    D = flat_dirs(pca)
    projected = flat(pca.center) + pca.coords @ D
    plane = [evaluate(with_params(case.model, r), CE, batches)[0] for r in projected]
    np.testing.assert_allclose(result.plane_loss, plane, rtol=1e-5)
    assert np.abs(result.true_loss - result.plane_loss).max() > 1e-6  # this path leaves the plane
    np.testing.assert_array_equal(result.steps, rec.steps)
    np.testing.assert_array_equal(result.off_plane, pca.off_plane)

    wide = la.Problem(build_case("wide_mlp").model, CE, data=batches)
    with one_line_error("other parameters"):
        path_losses(wide, pca)


def test_in_plane_path_has_equal_true_and_plane_losses():
    case = build_case("mlp")
    model = case.model.double()
    X, *_ = plane_path(sum(p.numel() for p in model.parameters()), T=7)
    X = flat(dict(model.named_parameters())) + 0.3 * (X - X.mean(0))
    pca = pca_directions(X, center="mean", names_shapes=names_shapes(model))
    problem = la.Problem(model, CE, data=(case.X, case.y), dtype="float64")
    result = path_losses(problem, pca)
    np.testing.assert_allclose(result.true_loss, result.plane_loss, rtol=1e-12)
    batches = [(case.X.double(), case.y)]
    true = [evaluate(with_params(model, r, torch.float64), CE, batches)[0] for r in X]
    np.testing.assert_allclose(result.true_loss, true, rtol=1e-12)


def test_a_descend_trajectory_is_a_source(tmp_path):
    case = build_case("mlp")
    problem = la.Problem(case.model, CE, data=(case.X, case.y))
    run = descend(problem, None, optimizer="sgd", lr=0.5, steps=8)
    pca = pca_directions(run)
    same = pca_directions(run.positions, names_shapes=run.param_shapes)
    np.testing.assert_array_equal(flat_dirs(pca), flat_dirs(same))
    np.testing.assert_array_equal(pca.steps, np.arange(9))
    assert pca.provenance["source"] == "trajectory"
    result = path_losses(problem, pca)
    np.testing.assert_allclose(result.true_loss, run.loss, rtol=1e-6)  # descend's own losses
    assert result.plane_loss[-1] == pytest.approx(run.loss[-1], rel=1e-6)  # the centre is on it

    # The plane is a surface like any other: its centre (0, 0) is the last checkpoint.
    grid = la.surface(problem, pca.directions, 3, (-1, 1), center=pca.center, quiet=True)
    assert grid.loss[1, 1] == pytest.approx(run.loss[-1], rel=1e-6)
    grid.save(tmp_path / "pca.h5")
    assert la.load(tmp_path / "pca.h5").directions.settings["kind"] == "pca"

    with one_line_error("no recorded model positions"):
        pca_directions(descend(problem, None, steps=2, record_positions=False))
    with one_line_error("no recorded model positions"):
        pca_directions(descend(lambda p: (p**2).sum(), [1.0, 2.0], steps=3))


# -- mistakes -------------------------------------------------------------------------------------
def test_bad_inputs_are_one_line_errors():
    model = build_case("mlp").model
    shapes = names_shapes(model)
    X = np.random.default_rng(3).normal(size=(5, 67))
    cases = [
        (lambda: pca_directions(X[:1], names_shapes=shapes), "at least 2 checkpoints"),
        (lambda: pca_directions(X, n=0, names_shapes=shapes), "n must be"),
        (lambda: pca_directions(X, n=5, names_shapes=shapes), "at least 6 checkpoints"),
        (lambda: pca_directions(X, center="first", names_shapes=shapes), "center="),
        (lambda: pca_directions(X), "names_shapes must describe"),
        (lambda: pca_directions(X, names_shapes=shapes[:2]), "describe the 67 parameters"),
        (lambda: pca_directions(X, names_shapes=[("a", "b")]), "names_shapes must be"),
        (lambda: pca_directions(np.tile(X[0], (4, 1)), names_shapes=shapes), "spans no"),
        (lambda: pca_directions(np.where(X > 2, np.nan, X), names_shapes=shapes), "non-finite"),
        (lambda: pca_directions("checkpoints"), "expected a WeightRecorder"),
        (lambda: pca_directions([[1.0, 2.0], [3.0]]), "expected a WeightRecorder"),
    ]
    rec = WeightRecorder(model)
    rec.record()
    rec.record()
    cases.append((lambda: pca_directions(rec, names_shapes=shapes[::-1]), "do not match"))
    cases.append((lambda: pca_directions(rec, n=1), "spans no direction"))
    for make, match in cases:
        with pytest.raises(la.LossatlasError, match=match) as info:
            make()
        assert "\n" not in str(info.value)


def test_fewer_directions_than_asked_warn():
    model = build_case("mlp").model
    X, *_ = plane_path(67, T=6)
    with pytest.warns(la.LossatlasWarning, match="span only 2"):
        pca = pca_directions(X, n=3, names_shapes=names_shapes(model))
    assert len(pca.directions) == 2 and pca.coords.shape == (6, 2)
    assert pca.provenance["rank"] == 2 and pca.provenance["n_requested"] == 3
