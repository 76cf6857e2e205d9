"""The trained built-in problems `tiny-7`, `xy-regression` and `teacher-cnn`, and their cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import lossatlas as la
from lossatlas.core.seeding import init_layers
from lossatlas.problems import teacher as problem_teacher
from lossatlas.problems import toys as problem_toys
from lossatlas.problems.registry import PROBLEMS, get_problem

NAMES = ("tiny-7", "xy-regression", "teacher-cnn")
# name: (module, its train function, its steps constant, a builder of the untrained model)
PARTS = {
    "tiny-7": (problem_toys, "_train_tiny", "_TINY_STEPS", lambda: problem_toys._mlp([1, 2, 1])),
    "xy-regression": (
        problem_toys,
        "_train_xy",
        "_XY_STEPS",
        lambda: problem_toys._mlp([2, 16, 16, 1]),
    ),
    "teacher-cnn": (problem_teacher, "_train_student", "_STEPS", problem_teacher._student),
}
VERSIONS = {
    "tiny-7": problem_toys.TINY_VERSION,
    "xy-regression": problem_toys.XY_VERSION,
    "teacher-cnn": problem_teacher.TEACHER_VERSION,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, la.Problem]]:
    """Each problem trained once with seed 0 in a fresh cache, and that cache."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOSSATLAS_CACHE", str(cache))
        return cache, {name: get_problem(name, seed=0) for name in NAMES}


def _fail(*args, **kwargs):
    raise AssertionError("trained again instead of loading the cached weights")


def _loss(problem: la.Problem, model: torch.nn.Module | None = None) -> float:
    """The loss over the whole data, of the problem's model or of `model` (in eval mode)."""
    model = problem.module if model is None else model.eval()
    x, y = next(problem.batches())
    with torch.no_grad():
        return float(problem.loss_fn(model(x), y))


def _accuracy(problem: la.Problem) -> float:
    x, y = next(problem.batches())
    with torch.no_grad():
        return float(la.accuracy(problem.module(x), y))


def _same_weights(a: la.Problem, b: la.Problem) -> bool:
    return list(a.params) == list(b.params) and all(
        torch.equal(a.params[k], b.params[k]) for k in a.params
    )


def test_registry_names_and_parameters(trained):
    _, made = trained
    assert set(NAMES) <= set(PROBLEMS)
    tiny, xy, cnn = (made[name] for name in NAMES)
    assert tiny.n_params == 7 and tiny.dtype == torch.float64 and tiny.n_samples == 64
    assert list(tiny.params) == ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]
    assert len(la.axis_directions(tiny, ["hidden.weight[0, 0]", "out.bias[0]"])) == 2
    assert xy.n_params == 2 * 16 + 16 + 16 * 16 + 16 + 16 + 1 and xy.n_samples == 400
    layers = ("hidden1", "hidden2", "out")
    assert list(xy.params) == [f"{m}.{p}" for m in layers for p in ("weight", "bias")]
    assert xy.dtype == torch.float64
    assert list(cnn.params) == [
        *("conv1.weight", "bn1.weight", "bn1.bias"),
        *("conv2.weight", "bn2.weight", "bn2.bias"),
        *("fc.weight", "fc.bias"),
    ]
    assert cnn.n_params == 8 * 9 + 16 + 16 * 8 * 9 + 32 + 16 * 4 + 4 and cnn.n_samples == 512
    assert set(cnn.metrics) == {"accuracy"} and cnn.dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_training_lowers_the_loss_far_below_the_untrained_model(trained, name):
    problem = trained[1][name]
    model = PARTS[name][3]()
    init_layers(model, torch.Generator().manual_seed(0))  # where training started
    before, after = _loss(problem, model), _loss(problem)
    assert after < (0.2 if name == "teacher-cnn" else 0.02) * before, (before, after)


def test_the_fits(trained, monkeypatch):
    cache, made = trained
    assert _loss(made["tiny-7"]) < 0.01  # sin(pi x) has mean square 0.5
    xy = made["xy-regression"]
    assert _loss(xy) < 0.005  # the noise alone has variance 0.0025
    # Off the training points too: (net - f)^2 on a grid over the whole box.
    (x0, x1), (y0, y1) = problem_toys.XY_BOX
    axis = {"steps": 41, "dtype": torch.float64}
    grid = torch.cartesian_prod(torch.linspace(x0, x1, **axis), torch.linspace(y0, y1, **axis))
    with torch.no_grad():
        assert float(((xy.module(grid) - problem_toys.xy_target(grid)) ** 2).mean()) < 0.02
    cnn = made["teacher-cnn"]
    monkeypatch.setenv("LOSSATLAS_CACHE", str(cache))
    monkeypatch.setattr(problem_teacher, "_train_student", _fail)
    held_out = get_problem("teacher-cnn", seed=0, split="test")  # the same cached weights
    assert held_out.n_samples == 256 and _same_weights(held_out, cnn)
    assert _accuracy(cnn) > 0.95 and _accuracy(held_out) > 0.6


def test_xy_target_and_box():
    assert problem_toys.XY_BOX == ((-3.0, 3.0), (-3.0, 3.0))
    points = torch.tensor([[0.0, 0.0], [math.pi / 2, 0.0], [math.pi / 2, math.pi], [1.0, -2.0]])
    expected = [0.0, 1.0, -1.0, math.sin(1.0) * math.cos(-2.0)]
    value = problem_toys.xy_target(points)
    assert value.shape == (4, 1) and value.dtype == torch.float32
    np.testing.assert_allclose(value[:, 0].numpy(), expected, atol=1e-6)
    assert problem_toys.xy_target(torch.zeros(3, 5, 2, dtype=torch.float64)).shape == (3, 5, 1)
    x, y = problem_toys._xy_data()
    for column, (low, high) in zip(x.T, problem_toys.XY_BOX):
        assert low <= float(column.min()) and float(column.max()) <= high
    assert float((y - problem_toys.xy_target(x)).std()) == pytest.approx(0.05, rel=0.15)


def test_teacher_labels_are_balanced_and_fixed():
    x_train, y_train, x_test, y_test = problem_teacher.teacher_data()
    assert x_train.shape == (512, 1, 12, 12) and x_test.shape == (256, 1, 12, 12)
    for labels in (y_train, y_test):
        share = torch.bincount(labels, minlength=4) / len(labels)
        assert len(share) == 4 and float(share.min()) > 0.15, share
    again = problem_teacher.teacher_data()
    assert all(torch.equal(a, b) for a, b in zip((x_train, y_train, x_test, y_test), again))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_cached_and_off_the_global_rng(trained, name, tmp_path, monkeypatch):
    module, train, steps, _ = PARTS[name]
    first = trained[1][name]
    monkeypatch.setenv("LOSSATLAS_CACHE", str(tmp_path / "fresh"))
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    again = get_problem(name, seed=0)  # trained again from scratch
    assert (tmp_path / "fresh" / f"{name}-v{VERSIONS[name]}-seed0.pt").is_file()
    assert _same_weights(first, again)  # bit for bit
    monkeypatch.setattr(module, train, _fail)
    assert _same_weights(first, get_problem(name, seed=0))  # loaded, not trained
    monkeypatch.undo()
    # Another seed: a few steps are enough to tell the weights apart.
    monkeypatch.setenv("LOSSATLAS_CACHE", str(tmp_path / "short"))
    monkeypatch.setattr(module, steps, 3)
    short = [get_problem(name, seed=seed) for seed in (0, 1)]
    drawn = [k for k, v in first.params.items() if v.ndim > 1]  # BatchNorm starts at 1 and 0
    assert not any(torch.equal(short[0].params[k], short[1].params[k]) for k in drawn)
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads


@pytest.mark.parametrize("name", NAMES)
def test_surfaces_run_without_warnings(trained, name):
    problem = trained[1][name]
    land = la.surface(problem, la.random_directions(problem, 2, norm="filter", seed=0), steps=5)
    assert land.loss.shape == (5, 5) and np.isfinite(land.loss).all()
    assert land.loss[2, 2] == pytest.approx(_loss(problem), rel=1e-5)


def test_cache_messages_and_unreadable_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOSSATLAS_CACHE", str(tmp_path))
    monkeypatch.setattr(problem_toys, "_TINY_STEPS", 20)
    first = problem_toys.tiny_7(seed=3, quiet=False)
    assert "trained tiny-7 (seed 3)" in capsys.readouterr().err
    assert _same_weights(first, problem_toys.tiny_7(seed=3, quiet=False))
    assert "using cached weights" in capsys.readouterr().err
    path = tmp_path / f"tiny-7-v{problem_toys.TINY_VERSION}-seed3.pt"
    path.write_bytes(b"not a torch file")
    with pytest.warns(la.LossatlasWarning, match="retraining"):
        repaired = problem_toys.tiny_7(seed=3)
    assert _same_weights(first, repaired)
    torch.save({"state_dict": {"hidden.weight": torch.ones(2, 1)}, "version": 1}, path)
    with pytest.warns(la.LossatlasWarning, match="retraining"):  # a foreign state dict
        repaired = problem_toys.tiny_7(seed=3)
    assert _same_weights(first, repaired)  # the partial load left no trace
    assert torch.load(path, weights_only=True)["version"] == problem_toys.TINY_VERSION
    assert capsys.readouterr().err == ""  # quiet by default


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [-1, 1.5, True, 2**64, "0"])
def test_bad_seeds(name, seed):
    with pytest.raises(la.LossatlasError, match="seed") as info:
        get_problem(name, seed=seed)
    assert "\n" not in str(info.value)


def test_bad_split():
    with pytest.raises(la.LossatlasError, match="split") as info:
        problem_teacher.teacher_cnn(split="valid")
    assert "\n" not in str(info.value)
    with pytest.raises(TypeError):
        get_problem("tiny-7", split="test")  # no held-out data: no such argument
