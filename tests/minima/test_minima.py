"""Comparing minima (`minima.comparison`) and the flat-versus-sharp study (`flat_sharp`)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from lossatlas.core.metrics import accuracy
from lossatlas.core.problem import Problem
from lossatlas.core.seeding import init_layers
from lossatlas.errors import LossatlasError
from lossatlas.io import storage
from lossatlas.minima.comparison import MinimaComparison, compare_minima
from lossatlas.minima.flat_sharp import FlatSharpStudy, flat_vs_sharp
from lossatlas.plot.flat_sharp import plot_flat_vs_sharp
from lossatlas.training.checkpoints import from_checkpoints
from lossatlas.training.runs import train_runs
from lossatlas.training.trainer import train
from tests.oracles.cases import build_case


def classifier() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    init_layers(model, torch.Generator().manual_seed(0))
    return model


def data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    return x, (x[:, 0] + 0.5 * torch.randn(n, generator=gen, dtype=torch.float64) > 0).long()


def problems(n_train: int = 40, n_val: int = 30) -> tuple[Problem, Problem]:
    metrics = {"accuracy": accuracy}
    train_p = Problem(classifier(), nn.CrossEntropyLoss(), data(n_train, 1), metrics=metrics)
    val_p = Problem(classifier(), nn.CrossEntropyLoss(), data(n_val, 2), metrics=metrics)
    return train_p, val_p


def direct(template: nn.Module, model, x, y) -> tuple[float, float]:
    """Loss and accuracy of a model rebuilt from its weights, all data at once."""
    net = copy.deepcopy(template)
    net.load_state_dict({**model.params, **model.buffers})
    with torch.no_grad():
        out = net.eval()(x)
    return float(nn.functional.cross_entropy(out, y)), float((out.argmax(1) == y).double().mean())


def dense_lambda_max(problem: Problem, model) -> float:
    """Top eigenvalue of the float64 Hessian from `torch.func.hessian` on the flat weights."""
    names = list(model.params)
    shapes = [model.params[k].shape for k in names]
    sizes = [model.params[k].numel() for k in names]
    x, y = problem._pair

    def loss(flat):
        parts = dict(zip(names, (p.reshape(s) for p, s in zip(flat.split(sizes), shapes))))
        return nn.functional.cross_entropy(functional_call(problem.module, parts, (x,)), y)

    H = hessian(loss)(model.flat())
    return float(torch.linalg.eigvalsh((H + H.T) / 2)[-1])


@pytest.fixture(scope="module")
def compared():
    train_p, val_p = problems()
    runs = train_runs(train_p, seeds=[0, 1], batch_sizes=[4, None], steps=30, lr=0.3, quiet=True)
    result = compare_minima(train_p, runs, val=val_p, k=2, samples=8, quiet=True)
    return train_p, val_p, runs, result


def test_losses_match_a_direct_evaluation(compared):
    train_p, val_p, runs, result = compared
    assert isinstance(result, MinimaComparison)
    assert result.names == tuple(r.name for r in runs)
    for i, run in enumerate(runs):
        loss, acc = direct(train_p.model, run, *train_p._pair)
        assert result.train_loss[i] == pytest.approx(loss, rel=1e-12)
        assert result.train_metrics["accuracy"][i] == pytest.approx(acc, abs=1e-12)
        loss, acc = direct(train_p.model, run, *val_p._pair)
        assert result.val_loss[i] == pytest.approx(loss, rel=1e-12)
        assert result.val_metrics["accuracy"][i] == pytest.approx(acc, abs=1e-12)
    assert np.array_equal(result.gap, result.val_loss - result.train_loss)
    gap = result.val_metrics["accuracy"] - result.train_metrics["accuracy"]
    assert np.array_equal(result.metric_gaps["accuracy"], gap)


def test_distances_and_norms(compared):
    _, _, runs, result = compared
    flats = [torch.cat([p.reshape(-1) for p in r.params.values()]) for r in runs]
    for i, a in enumerate(flats):
        assert result.weight_norm[i] == pytest.approx(float(a.norm()), rel=1e-14)
        for j, b in enumerate(flats):
            assert result.distances[i, j] == pytest.approx(float(torch.dist(a, b)), rel=1e-14)
            mean = (float(a.norm()) + float(b.norm())) / 2
            assert result.relative_distances[i, j] == pytest.approx(
                float(torch.dist(a, b)) / mean, rel=1e-12
            )
    assert (np.diag(result.distances) == 0).all() and (
        result.distances[~np.eye(4, dtype=bool)] > 0
    ).all()


def test_lambda_max_matches_the_dense_hessian(compared):
    # Lanczos at the default tolerance (1e-4 on the residual) is far closer than 1e-6 here.
    train_p, _, runs, result = compared
    for i, run in enumerate(runs):
        assert result.lambda_max[i] == pytest.approx(dense_lambda_max(train_p, run), abs=1e-6)
        assert result.eigenvalues[i, 0] == result.lambda_max[i]
        assert result.eigenvalues[i, 1] <= result.eigenvalues[i, 0]
    assert np.isfinite(result.epsilon_sharpness).all() and (result.epsilon_sharpness >= 0).all()
    assert np.isfinite(result.average_sharpness).all() and np.isfinite(result.average_stderr).all()


def test_rows_table_and_storage(compared, tmp_path):
    result = compared[-1]
    rows = result.rows()
    assert [r["name"] for r in rows] == list(result.names)
    assert {"train_loss", "val_accuracy", "gap", "gap_accuracy", "lambda_max"} <= set(rows[0])
    text = result.table()
    assert all(name in text for name in result.names) and "distance / mean weight norm" in text
    back = storage.load(storage.save(result, tmp_path / "minima.h5"))
    assert back.names == result.names and back.settings == result.settings
    assert np.array_equal(back.distances, result.distances)
    assert np.array_equal(back.train_metrics["accuracy"], result.train_metrics["accuracy"])


def test_without_val_or_sharpness_and_from_checkpoints():
    train_p, _ = problems()
    run = train(train_p, steps=5, batch_size=8)
    result = compare_minima(train_p, {"mine": run, "start": train_p.model}, sharpness=False)
    assert result.names == ("mine", "start")
    assert np.isnan(result.val_loss).all() and np.isnan(result.lambda_max).all()
    assert result.metric_gaps == {}
    loaded = from_checkpoints(train_p, [train_p.model.state_dict()])
    again = compare_minima(train_p, loaded, sharpness=False)
    assert again.train_loss[0] == pytest.approx(result.train_loss[1], rel=1e-15)


def test_batchnorm_models_use_their_own_statistics():
    case = build_case("cnn_bn")
    problem = Problem(case.model, nn.CrossEntropyLoss(), (case.X, case.y))
    run = train(problem, steps=3, batch_size=16)
    result = compare_minima(problem, [run], sharpness=False)
    net = copy.deepcopy(case.model)
    net.load_state_dict({**run.params, **run.buffers})
    with torch.no_grad():
        loss = float(nn.functional.cross_entropy(net.eval()(case.X), case.y))
    assert result.train_loss[0] == pytest.approx(loss, rel=1e-6)


def test_compare_minima_rejects_bad_arguments():
    train_p, _ = problems()
    other = Problem(nn.Linear(4, 3).double(), nn.CrossEntropyLoss(), data(10, 3))
    run = train(train_p, steps=2, batch_size=4)
    for kwargs, words in [
        ({"models": []}, "non-empty"),
        ({"models": [run], "val": other}, "other parameters"),
        ({"models": [run], "k": 0}, "k must"),
        ({"models": [run], "samples": 1}, "samples"),
        ({"models": [run], "epsilon": -1.0}, "epsilon"),
        ({"models": [42]}, "state dict"),
    ]:
        with pytest.raises(LossatlasError, match=words) as info:
            compare_minima(train_p, **kwargs)
        assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def study():
    train_p, val_p = problems()
    return train_p, val_p, flat_vs_sharp(
        train_p, val_p, small_batch=4, steps=25, lr=0.3, line_steps=9, quiet=True,
        compare_options={"samples": 4},
    )  # fmt: skip


def test_flat_vs_sharp(study, tmp_path):
    result = study[-1]
    assert isinstance(result, FlatSharpStudy)
    assert result.small.settings["batch_size"] == 4 and result.large.settings["batch_size"] == 40
    # One initialisation: the same losses before the first step.
    assert result.small.history["train_loss"][0] == result.large.history["train_loss"][0]
    c = result.comparison
    assert c.names == ("small batch (4)", "large batch (40)")
    lines = (result.small_train, result.small_val, result.large_train, result.large_val)
    expected = (c.train_loss[0], c.val_loss[0], c.train_loss[1], c.val_loss[1])
    for line, loss in zip(lines, expected):
        assert line.ndim == 1 and len(line.coords[0]) == 9
        i = int(np.argmin(np.abs(line.coords[0])))
        assert line.coords[0][i] == 0.0
        assert line.loss[i] == pytest.approx(loss, rel=1e-12)
        assert line.directions.settings["norm"] == "filter"
    # Per-model normalisation: each direction's filters have the norms of its own model's.
    for run, line in ((result.small, result.small_train), (result.large, result.large_train)):
        d, w = line.directions[0]["0.weight"], run.params["0.weight"]
        assert torch.allclose(d.norm(dim=1), w.norm(dim=1), rtol=1e-6)
        assert (line.directions[0]["0.bias"] == 0).all()
    assert "sharper" in result.summary()
    png = plot_flat_vs_sharp(result, tmp_path / "fs.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_flat_vs_sharp(result, tmp_path / "fs.svg", log=True)
    back = storage.load(storage.save(result, tmp_path / "study.h5"))
    assert np.array_equal(back.large_val.loss, result.large_val.loss)
    assert torch.equal(back.small.flat(), result.small.flat())


def test_flat_vs_sharp_rejects_bad_arguments(study, tmp_path):
    train_p, val_p, result = study
    other = Problem(nn.Linear(4, 3).double(), nn.CrossEntropyLoss(), data(10, 3))
    for kwargs, words in [
        ({"small_batch": 40}, "smaller than"),
        ({"large_batch": 41}, "exceeds"),
        ({"small_batch": 0}, "small_batch"),
        ({"line_steps": 1}, "steps"),
        ({"span": (1, -1)}, "low < high"),
    ]:
        with pytest.raises(LossatlasError, match=words):
            flat_vs_sharp(train_p, val_p, steps=1, **kwargs)
    with pytest.raises(LossatlasError, match="other parameters"):
        flat_vs_sharp(train_p, other, steps=1)
    with pytest.raises(LossatlasError, match="cannot save a figure"):
        plot_flat_vs_sharp(result, tmp_path / "fs.txt")
