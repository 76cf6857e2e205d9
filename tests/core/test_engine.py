"""`Evaluator` at arbitrary coefficient rows, its engine paths and its memory settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from lossatlas.core import Evaluator
from lossatlas.core.planning import parse_bytes
from tests.oracles.cases import build_case
from tests.oracles.landscape import evaluate, moved_copy

CE = nn.CrossEntropyLoss()
METRICS = {"accuracy": la.accuracy}


def random_coeffs(k: int, m: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.5, 1.5, size=(k, m))


def reference_rows(case, dirs, coeffs, batches):
    losses, accs = [], []
    for row in coeffs:
        moved = moved_copy(case.model, list(zip(row, dirs)))
        loss, metrics = evaluate(moved, CE, batches, metrics=METRICS)
        losses.append(loss)
        accs.append(metrics["accuracy"])
    return np.array(losses), np.array(accs)


@pytest.mark.parametrize("shortcut", [True, False])
@pytest.mark.parametrize("path", ["vmap", "sequential"])
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize(
    "name",
    [
        "mlp",
        "wide_mlp",
        "cnn_bn",
        "rgb_cnn",
        "embedding",
        "shared_input",
        "tied_transpose",
        "grouped_cnn",
    ],
)
def test_evaluator_at_arbitrary_points(name, m, path, shortcut):
    case = build_case(name)
    batches = case.batches(24)
    problem = la.Problem(case.model, CE, data=batches, metrics=METRICS)
    dirs = la.random_directions(problem, m, ignore=None, seed=m)
    evaluator = Evaluator(problem, dirs, path=path, shortcut=shortcut)
    coeffs = random_coeffs(5, m, seed=m)
    result = evaluator(coeffs)
    assert result.loss.shape == (5,) and result.metrics["accuracy"].shape == (5,)
    assert result.loss.dtype == np.float64
    loss, acc = reference_rows(case, dirs, coeffs, batches)
    np.testing.assert_allclose(result.loss, loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.metrics["accuracy"], acc, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", ["vmap", "sequential"])
def test_shortcut_with_channels_last_images(path):
    """The input-layer shortcut keeps channels-last pre-activations and the values exact."""
    case = build_case("rgb_cnn")
    batches = case.batches(20)
    problem = la.Problem(case.model, CE, data=batches, metrics=METRICS)
    dirs = la.random_directions(problem, 2, seed=3)
    evaluator = Evaluator(problem, dirs, path=path)
    assert evaluator.plan.channels_last and evaluator.plan.shortcut
    coeffs = random_coeffs(4, 2, seed=5)
    result = evaluator(coeffs)
    assert evaluator.shortcut.nhwc
    loss, acc = reference_rows(case, dirs, coeffs, batches)
    np.testing.assert_allclose(result.loss, loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.metrics["accuracy"], acc, rtol=1e-5, atol=1e-6)


def test_evaluator_chunks_are_independent(make_case):
    """The value at a point does not depend on which other points share its chunk."""
    case = make_case("wide_mlp")
    problem = la.Problem(case.model, CE, data=(case.X, case.y))
    dirs = la.random_directions(problem, 2, seed=1)
    evaluator = Evaluator(problem, dirs)
    coeffs = random_coeffs(9, 2, seed=2)
    together = evaluator(coeffs).loss
    apart = np.concatenate([evaluator(coeffs[i : i + 1]).loss for i in range(9)])
    np.testing.assert_allclose(apart, together, rtol=1e-6, atol=1e-7)
    # A flat coefficient vector is one point per row of length m.
    np.testing.assert_allclose(evaluator(coeffs[3]).loss, together[3:4], rtol=1e-6)


def test_points_are_theta0_plus_c_times_d(mlp_case):
    problem = la.Problem(mlp_case.model, CE, data=(mlp_case.X, mlp_case.y))
    gen = torch.Generator().manual_seed(0)
    d1 = {"0.weight": torch.randn(8, 4, generator=gen), "2.bias": torch.randn(3, generator=gen)}
    d2 = {"0.weight": torch.randn(8, 4, generator=gen)}
    coeffs = np.array([[0.5, -2.0], [0.0, 0.0], [1.0, 3.0]])
    points = Evaluator(problem, [d1, d2]).points(coeffs)
    assert set(points) == {"0.weight", "2.bias"}  # parameters no direction moves stay out
    w, b = mlp_case.model[0].weight.detach(), mlp_case.model[2].bias.detach()
    for i, (a, c) in enumerate(coeffs):
        torch.testing.assert_close(
            points["0.weight"][i], w + a * d1["0.weight"] + c * d2["0.weight"]
        )
        torch.testing.assert_close(points["2.bias"][i], b + a * d1["2.bias"])


def test_memory_budget_and_chunk_size_do_not_change_values(make_case):
    case = make_case("wide_mlp")
    problem = la.Problem(case.model, CE, data=(case.X, case.y))
    dirs = la.random_directions(problem, 2, seed=3)
    coeffs = random_coeffs(6, 2, seed=3)
    base = Evaluator(problem, dirs)(coeffs).loss
    tiny = Evaluator(problem, dirs, memory_budget=1)
    assert tiny.plan.chunk_size >= 1
    np.testing.assert_allclose(tiny(coeffs).loss, base, rtol=1e-6, atol=1e-7)
    for budget in ("1MB", "64KiB", 10_000):
        evaluator = Evaluator(problem, dirs, memory_budget=budget)
        np.testing.assert_allclose(evaluator(coeffs).loss, base, rtol=1e-6, atol=1e-7)
    assert Evaluator(problem, dirs, chunk_size=4).plan.chunk_size == 4
    assert Evaluator(problem, dirs, batch_size=5).plan.batch_size == 5
    np.testing.assert_allclose(
        Evaluator(problem, dirs, batch_size=5)(coeffs).loss, base, rtol=1e-5, atol=1e-6
    )


def test_model_calls_are_counted(mlp_case):
    batches = mlp_case.batches(24)
    problem = la.Problem(mlp_case.model, CE, data=batches)
    dirs = la.random_directions(problem, 2)
    for path, calls in (("vmap", len(batches)), ("sequential", 4 * len(batches))):
        evaluator = Evaluator(problem, dirs, path=path)
        evaluator(random_coeffs(4, 2))
        assert evaluator.n_model_calls == calls
        assert evaluator.n_point_passes == 4 * len(batches)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MB", 512 * 2**20),
        ("512 mib", 512 * 2**20),
        ("2GiB", 2 * 2**30),
        ("1.5g", int(1.5 * 2**30)),
        ("64k", 64 * 1024),
        ("1T", 2**40),
        ("100", 100),
        ("100b", 100),
        (4096, 4096),
        (None, None),
    ],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "12 parsecs", "-5MB", "0", "MB", ""])
def test_parse_bytes_rejects_nonsense(text):
    with pytest.raises(la.LossatlasError, match="cannot read memory size"):
        parse_bytes(text)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"path": "gpu"}, "path='gpu'"), ({"chunk_size": 0}, "chunk_size must be at least 1")],
)
def test_bad_evaluator_arguments(mlp_case, kwargs, match):
    problem = la.Problem(mlp_case.model, CE, data=(mlp_case.X, mlp_case.y))
    with pytest.raises(la.LossatlasError, match=match):
        Evaluator(problem, la.random_directions(problem, 1), **kwargs)


def test_a_run_is_cut_into_several_chunks(mlp_case):
    """However large the budget, a run has at least MIN_CHUNKS chunks (progress, resume)."""
    from lossatlas.core.planning import MIN_CHUNKS

    problem = la.Problem(mlp_case.model, CE, data=(mlp_case.X, mlp_case.y))
    dirs = la.random_directions(problem, 2, seed=0)
    plan = Evaluator(problem, dirs, memory_budget="8GB", n_points=100).plan
    assert plan.chunk_size == -(-100 // MIN_CHUNKS)
    land = la.surface(problem, dirs, steps=10, memory_budget="8GB", quiet=True)
    assert land.settings["plan"]["chunk_size"] == plan.chunk_size
