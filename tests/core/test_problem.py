"""`Problem` construction, batching, and the one-line errors for bad inputs."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lossatlas as la
from lossatlas.core import Evaluator
from tests.oracles.cases import N_SAMPLES, build_case
from tests.oracles.landscape import evaluate

CE = nn.CrossEntropyLoss()


def raises_one_line(match: str):
    """pytest.raises for LossatlasError; the caller checks the message is one line."""
    return pytest.raises(la.LossatlasError, match=match)


def assert_one_line(info) -> None:
    message = str(info.value)
    assert message and "\n" not in message, message


# -- construction --------------------------------------------------------------------------------


def test_repr_and_counts(mlp_case):
    problem = la.Problem(
        mlp_case.model, CE, data=(mlp_case.X, mlp_case.y), metrics={"acc": la.accuracy}
    )
    n_params = sum(p.numel() for p in mlp_case.model.parameters())
    assert problem.n_params == n_params == 4 * 8 + 8 + 8 * 3 + 3
    assert problem.n_samples == N_SAMPLES
    text = repr(problem)
    assert text.startswith("Problem(") and "\n" not in text
    for part in ("Sequential", f"n_params={n_params}", f"n_samples={N_SAMPLES}", "acc", "float32"):
        assert part in text


def test_tied_parameters_are_counted_once(make_case):
    model = make_case("tied").model
    problem = la.Problem(model, CE, data=(torch.randn(4, 4), torch.zeros(4, dtype=torch.long)))
    unique = {id(p): p.numel() for p in model.parameters()}
    assert problem.n_params == sum(unique.values())
    assert "b.weight" not in problem.params and "a.weight" in problem.params


def test_dtype_converts_the_model_copy_and_floating_data_only(mlp_case):
    problem = la.Problem(mlp_case.model, CE, data=(mlp_case.X, mlp_case.y), dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in problem.params.values())
    assert mlp_case.model[0].weight.dtype == torch.float32  # the user's model is not converted
    x, y = next(problem.batches())
    assert x.dtype == torch.float64 and y.dtype == torch.long
    assert torch.equal(x, mlp_case.X.double())


@pytest.mark.parametrize("batch_size", [1, 7, 20, N_SAMPLES, 1000])
def test_batches_of_a_pair_cover_all_samples(mlp_case, batch_size):
    problem = la.Problem(mlp_case.model, CE, data=(mlp_case.X, mlp_case.y), batch_size=batch_size)
    batches = list(problem.batches())
    sizes = [len(x) for x, _ in batches]
    size = min(batch_size, N_SAMPLES)
    assert sizes == [size] * (N_SAMPLES // size) + ([N_SAMPLES % size] if N_SAMPLES % size else [])
    assert torch.equal(torch.cat([x for x, _ in batches]), mlp_case.X)
    assert torch.equal(torch.cat([y for _, y in batches]), mlp_case.y)
    assert problem.max_batch_size() == size


def test_list_and_loader_batches_are_served_as_given(mlp_case):
    given = mlp_case.batches(24)
    problem = la.Problem(mlp_case.model, CE, data=given)
    served = list(problem.batches(batch_size=5))  # only applies to an (X, y) pair
    assert [len(x) for x, _ in served] == [24, 24, 10]
    loader = DataLoader(TensorDataset(mlp_case.X, mlp_case.y), batch_size=16)
    problem = la.Problem(mlp_case.model, CE, data=loader)
    assert problem.n_samples == N_SAMPLES
    assert torch.equal(torch.cat([x for x, _ in problem.batches()]), mlp_case.X)
    # Re-iterable: a second pass serves the same data again.
    assert torch.equal(torch.cat([y for _, y in problem.batches()]), mlp_case.y)


@pytest.mark.parametrize("batch_size", [1, 7, 29])
def test_loss_over_batches_equals_loss_over_all_data(mlp_case, batch_size):
    X, y = mlp_case.X, mlp_case.y
    metrics = {"accuracy": la.accuracy}
    problem = la.Problem(mlp_case.model, CE, data=(X, y), batch_size=batch_size, metrics=metrics)
    result = Evaluator(problem, [{"2.bias": torch.ones(3)}])(np.array([[0.0], [0.5]]))
    for row, c in enumerate((0.0, 0.5)):
        model = copy.deepcopy(mlp_case.model)
        with torch.no_grad():
            model[2].bias += c
            out = model(X)
            whole = float(CE(out, y))  # one pass over all data, no batching at all
            acc = float((out.argmax(1) == y).double().mean())
        assert math.isclose(result.loss[row], whole, rel_tol=1e-5)
        # la.accuracy is a float32 per-batch mean: exact to float32 rounding
        assert math.isclose(result.metrics["accuracy"][row], acc, rel_tol=1e-6)


# -- bad data ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            (torch.randn(10, 4), torch.zeros(9, dtype=torch.long)),
            "disagree on the number of samples",
        ),
        (
            [
                (torch.randn(5, 4), torch.zeros(5, dtype=torch.long)),
                (torch.randn(5, 4), torch.zeros(4)),
            ],
            r"batch 1.*\(5, 4\).*\(4,\)",
        ),
        ((torch.randn(0, 4), torch.zeros(0, dtype=torch.long)), "empty"),
        ([], "empty"),
        ((np.zeros((10, 4)), np.zeros(10)), r"neither an \(inputs, targets\) pair"),
        ([[1.0, 2.0], [3.0, 4.0]], "inputs must be a tensor, a tuple/list of tensors or a map"),
        ("data.csv", "data must be"),
        (42, "data must be"),
        (torch.randn(10, 4), "data must be"),
        ((torch.tensor(1.0), torch.tensor(0)), "disagree"),
    ],
    ids=[
        "mismatched-lengths",
        "mismatched-batch",
        "empty-pair",
        "empty-list",
        "numpy",
        "nested-lists",
        "string",
        "int",
        "bare-tensor",
        "scalars",
    ],
)
def test_bad_data(mlp_case, data, match):
    with raises_one_line(match) as info:
        la.Problem(mlp_case.model, CE, data=data)
    assert_one_line(info)


def test_empty_dataloader(mlp_case):
    empty = DataLoader(TensorDataset(torch.randn(0, 4), torch.zeros(0, dtype=torch.long)))
    with raises_one_line("empty") as info:
        la.Problem(mlp_case.model, CE, data=empty)
    assert_one_line(info)


def test_one_shot_iterator_is_rejected_or_works(mlp_case):
    """A generator can be read only once; it must not crash with a bare StopIteration."""
    batches = mlp_case.batches(20)
    try:
        problem = la.Problem(mlp_case.model, CE, data=(b for b in batches))
        land = la.surface(problem, [{"2.bias": torch.ones(3)}], steps=3, quiet=True)
    except la.LossatlasError as exc:
        assert "\n" not in str(exc)
    else:
        whole = la.Problem(mlp_case.model, CE, data=batches)
        expected = la.surface(whole, [{"2.bias": torch.ones(3)}], steps=3, quiet=True)
        np.testing.assert_allclose(land.loss, expected.loss, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "not a model"}, "must be a torch.nn.Module"),
        ({"loss_fn": "ce"}, "loss_fn must be callable"),
        ({"bn": "train"}, "bn='train' is not supported"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"dtype": torch.int64}, "floating dtype"),
        ({"metrics": {"acc": 3}}, "metric 'acc' is not callable"),
        ({"model": nn.ReLU()}, "no parameters"),
    ],
)
def test_bad_problem_arguments(mlp_case, kwargs, match):
    args = {"model": mlp_case.model, "loss_fn": CE, "data": (mlp_case.X, mlp_case.y), **kwargs}
    with raises_one_line(match) as info:
        la.Problem(**args)
    assert_one_line(info)


# -- a model or loss that fails on the data ------------------------------------------------------


def test_model_that_fails_on_the_data(mlp_case):
    problem = la.Problem(mlp_case.model, CE, data=(torch.randn(10, 5), mlp_case.y[:10]))
    dirs = la.random_directions(problem, 2)
    for call in (
        lambda: la.surface(problem, dirs, steps=3, quiet=True),
        lambda: Evaluator(problem, dirs),
    ):
        with raises_one_line("the model fails on the data") as info:
            call()
        assert_one_line(info)
        assert "mat1 and mat2" in str(info.value)  # the model's own complaint is kept


@pytest.mark.parametrize(
    ("loss_fn", "match"),
    [
        (lambda out, y: out.matmul(y), "loss_fn fails on the model's outputs: RuntimeError"),
        (lambda out, y: 1.0, "loss_fn must return a tensor"),
    ],
)
def test_loss_that_fails_on_the_outputs(mlp_case, loss_fn, match):
    problem = la.Problem(mlp_case.model, loss_fn, data=(mlp_case.X, mlp_case.y))
    with raises_one_line(match) as info:
        la.surface(problem, la.random_directions(problem, 1), steps=3, quiet=True)
    assert_one_line(info)


def test_metric_that_fails(mlp_case):
    def bad(out, y):
        raise RuntimeError("boom\nsecond line")

    problem = la.Problem(mlp_case.model, CE, data=(mlp_case.X, mlp_case.y), metrics={"bad": bad})
    with raises_one_line("bad fails on the model's outputs: RuntimeError: boom") as info:
        la.surface(problem, la.random_directions(problem, 1), steps=3, quiet=True)
    assert_one_line(info)


# -- directions that do not match the model ------------------------------------------------------


def bad_directions():
    return {
        "unknown-name": (
            [{"0.weigth": torch.zeros(8, 4)}],
            r"'0\.weigth'.*did you mean '0\.weight'",
        ),
        "wrong-shape": ([{"0.weight": torch.zeros(4, 8)}], r"shape \(4, 8\) for '0\.weight'"),
        "non-finite": ([{"2.bias": torch.tensor([0.0, float("nan"), 0.0])}], "non-finite"),
        "empty": ([], "non-empty"),
        "not-a-dict": ([torch.zeros(3)], "not a {name: tensor} dict"),
        "from-another-model": (la.random_directions(build_case("cnn_bn").model, 1), "conv1"),
    }


@pytest.mark.parametrize("kind", list(bad_directions()))
def test_direction_that_does_not_match_the_model(mlp_case, kind):
    directions, match = bad_directions()[kind]
    problem = la.Problem(mlp_case.model, CE, data=(mlp_case.X, mlp_case.y))
    with raises_one_line(match) as info:
        la.surface(problem, directions, steps=3, quiet=True)
    assert_one_line(info)


@pytest.mark.parametrize("kind", ["unknown-name", "wrong-shape"])
def test_evaluator_checks_directions_too(mlp_case, kind):
    """Evaluator's docstring: directions are "checked with `as_directions`"."""
    directions, match = bad_directions()[kind]
    problem = la.Problem(mlp_case.model, CE, data=(mlp_case.X, mlp_case.y))
    with raises_one_line(match) as info:
        Evaluator(problem, directions)(np.zeros((1, 1)))
    assert_one_line(info)


def test_evaluator_accepts_plain_dicts_of_another_dtype(mlp_case):
    """Evaluator checks directions with as_directions: dtype and device are converted."""
    problem = la.Problem(mlp_case.model, CE, data=(mlp_case.X, mlp_case.y))
    direction = {"2.bias": torch.ones(3, dtype=torch.float64)}
    result = Evaluator(problem, [direction])(np.array([[0.5]]))
    model = copy.deepcopy(mlp_case.model)
    with torch.no_grad():
        model[2].bias += 0.5
    expected, _ = evaluate(model, CE, [(mlp_case.X, mlp_case.y)])
    assert math.isclose(result.loss[0], expected, rel_tol=1e-5)


@pytest.mark.parametrize(
    ("center", "match"),
    [
        (nn.Sequential(nn.Linear(4, 9), nn.Tanh(), nn.Linear(9, 3)), r"shape \(9, 4\)"),
        ({"0.weight": torch.zeros(8, 4)}, r"center lacks parameter '0\.bias'"),
        ("weights.pt", "center must be a model"),
    ],
)
def test_bad_center(mlp_case, center, match):
    problem = la.Problem(mlp_case.model, CE, data=(mlp_case.X, mlp_case.y))
    with raises_one_line(match) as info:
        la.surface(problem, la.random_directions(problem, 1), steps=3, center=center, quiet=True)
    assert_one_line(info)


# -- grid arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "span", "match"),
    [
        (5, (float("nan"), 1.0), "span must be finite"),
        (5, (-1.0, float("inf")), "span must be finite"),
        (5, (-1e308, 1e308), "too wide"),
        (5, (1.0, 1.0), "low < high"),
        (5, (1.0, -1.0), "low < high"),
        (5, [(-1, 1), (2, 1)], "low < high"),
        (5, "ab", "span"),
        (5, ("a", "b"), "span"),
        (5, [(-1, 1), (-1, 1), (-1, 1)], "one per direction"),
        (1, (-1, 1), "at least 2"),
        (0, (-1, 1), "at least 2"),
        (-3, (-1, 1), "at least 2"),
        (2.5, (-1, 1), "steps"),
        ("5", (-1, 1), "steps"),
        (True, (-1, 1), "steps"),
        (None, (-1, 1), "steps"),
        ([5, 1], (-1, 1), "at least 2"),
        ([5, 5, 5], (-1, 1), "one per direction"),
        ([5, 2.0], (-1, 1), "steps"),
    ],
)
def test_bad_grid_arguments(mlp_case, steps, span, match):
    problem = la.Problem(mlp_case.model, CE, data=(mlp_case.X, mlp_case.y))
    dirs = la.random_directions(problem, 2)
    with raises_one_line(match) as info:
        la.surface(problem, dirs, steps=steps, span=span, quiet=True)
    assert_one_line(info)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": "fast"}, "path='fast' is not one of"),
        ({"memory_budget": "lots"}, "cannot read memory size"),
    ],
)
def test_bad_engine_arguments(mlp_case, kwargs, match):
    problem = la.Problem(mlp_case.model, CE, data=(mlp_case.X, mlp_case.y))
    with raises_one_line(match) as info:
        la.surface(problem, la.random_directions(problem, 1), steps=3, quiet=True, **kwargs)
    assert_one_line(info)


def test_surface_needs_a_problem(mlp_case):
    with raises_one_line("expected a lossatlas.Problem") as info:
        la.surface(mlp_case.model, la.random_directions(mlp_case.model, 1), quiet=True)
    assert_one_line(info)


def test_lossatlas_error_is_a_value_error():
    assert issubclass(la.LossatlasError, ValueError)


def test_dtype_by_name_and_bad_devices(mlp_case):
    data = (mlp_case.X, mlp_case.y)
    problem = la.Problem(mlp_case.model, nn.CrossEntropyLoss(), data, dtype="float64")
    assert problem.dtype == torch.float64 and problem.params["0.weight"].dtype == torch.float64
    for kwargs in ({"dtype": "int64"}, {"dtype": "nonsense"}, {"device": "no-such-device"}):
        with pytest.raises(la.LossatlasError) as info:
            la.Problem(mlp_case.model, nn.CrossEntropyLoss(), data, **kwargs)
        assert "\n" not in str(info.value)
    if not torch.cuda.is_available():
        with pytest.raises(la.LossatlasError, match="CUDA is not available"):
            la.Problem(mlp_case.model, nn.CrossEntropyLoss(), data, device="cuda")


def test_with_weights_is_a_copy_at_other_weights(cnn_case) -> None:
    loss_fn = nn.CrossEntropyLoss()
    problem = la.Problem(cnn_case.model, loss_fn, (cnn_case.X, cnn_case.y))
    before = {k: v.clone() for k, v in problem.params.items()}
    doubled = {k: 2 * v for k, v in problem.params.items()}
    shifted = {"bn1.running_mean": problem.buffers["bn1.running_mean"] + 1.0}
    other = problem.with_weights(doubled, shifted)
    for k, v in other.params.items():
        assert torch.equal(v, doubled[k]) and torch.equal(problem.params[k], before[k])
    model = copy.deepcopy(cnn_case.model).eval()
    model.load_state_dict({**model.state_dict(), **doubled, **shifted})
    with torch.no_grad():
        expected = loss_fn(model(cnn_case.X), cnn_case.y)
        got = loss_fn(other.module(cnn_case.X), cnn_case.y)
    assert torch.equal(got, expected)
    with pytest.raises(la.LossatlasError, match="missing"):
        problem.with_weights({k: v for k, v in list(doubled.items())[1:]})
    with pytest.raises(la.LossatlasError, match="wrong shape"):
        problem.with_weights({k: v.reshape(-1) for k, v in doubled.items()})
    with pytest.raises(la.LossatlasError, match="unknown buffers"):
        problem.with_weights(doubled, {"nope": torch.zeros(1)})


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_in_one_line(bad) -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.bias.fill_(bad)
    data = (torch.zeros(3, 2), torch.zeros(3, 1))
    with pytest.raises(la.LossatlasError, match="'bias' has non-finite entries") as caught:
        la.Problem(model, nn.MSELoss(), data)
    assert "\n" not in str(caught.value)


def test_a_meta_device_model_is_refused_in_one_line() -> None:
    model = nn.Linear(2, 1, device="meta")
    with pytest.raises(la.LossatlasError, match="meta device"):
        la.Problem(model, nn.MSELoss(), (torch.zeros(3, 2), torch.zeros(3, 1)))
