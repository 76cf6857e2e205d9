"""The built-in problem `resnet-digits`: a small ResNet with BatchNorm on the 8x8 digits."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from lossatlas.problems import resnet as problem_resnet
from lossatlas.training.loop import evaluate

NAME = "resnet-digits"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, la.Problem, la.Problem]:
    """Seed 0 trained once in a fresh cache: the cache, the training and the held-out problem."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOSSATLAS_CACHE", str(cache))
        train = problem_resnet.resnet_digits(seed=0)
        mp.setattr(problem_resnet, "_train_resnet", _fail)
        test = problem_resnet.resnet_digits(seed=0, split="test")  # the cached weights
        return cache, train, test


def _fail(*args: object, **kwargs: object) -> None:
    raise AssertionError("trained again instead of loading the cached weights")


def _same_weights(a: la.Problem, b: la.Problem) -> bool:
    state_a, state_b = a.module.state_dict(), b.module.state_dict()  # BatchNorm buffers too
    return list(state_a) == list(state_b) and all(
        torch.equal(state_a[k], state_b[k]) for k in state_a
    )


def _brute_force(problem: la.Problem) -> tuple[float, float]:
    """Loss and accuracy of a float64 deep copy in eval mode on all the data at once."""
    model = copy.deepcopy(problem.module).double().eval()
    x, y = next(problem.batches())
    with torch.no_grad():
        out = model(x.double())
    return float(nn.CrossEntropyLoss()(out, y)), float(la.accuracy(out, y))


def test_model_data_and_parameters(trained):
    _, train, test = trained
    assert train.n_samples == 1437 and test.n_samples == 360
    assert train.dtype == test.dtype == torch.float32 and not train.module.training
    assert train.bn == "eval" and set(train.metrics) == {"accuracy"}
    x, _ = next(test.batches())
    assert x.shape == (360, 1, 8, 8)
    blocks = [f"blocks.{i}.{m}" for i in range(3) for m in ("conv1", "bn1", "conv2", "bn2")]
    blocks[8:8] = ["blocks.1.shortcut.conv", "blocks.1.shortcut.bn"]  # after block 1's bn2
    layers = ["stem.conv", "stem.bn", *blocks, "head"]
    expected = [
        f"{layer}.{p}"
        for layer in layers
        for p in (("weight",) if "conv" in layer else ("weight", "bias"))
    ]
    assert list(train.params) == expected
    assert 20_000 <= train.n_params <= 40_000 and train.n_params == 38266


def test_loss_is_the_brute_force_loss_and_the_fit(trained):
    _, train, test = trained
    for problem in (train, test):
        reference, accuracy = _brute_force(problem)
        values = evaluate(problem)
        # float32 rounds log(1 + s) for confident samples to about 6e-8 absolute each: at a
        # training loss of 0.0033 that is a few 1e-7 relative (3.5e-7 measured).
        assert values["loss"] == pytest.approx(reference, rel=1e-6, abs=1e-8)
        assert values["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert _brute_force(train)[1] == 1.0 and _brute_force(test)[1] > 0.95


def test_batchnorm_statistics_are_those_of_the_training_set(trained):
    _, train, _ = trained
    model = copy.deepcopy(train.module).double().eval()
    bns = {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(bns) == 8
    inputs: dict[str, torch.Tensor] = {}
    for name, bn in bns.items():
        bn.register_forward_pre_hook(lambda m, args, name=name: inputs.update({name: args[0]}))
    x, _ = next(train.batches())
    with torch.no_grad():
        model(x.double())
    for name, bn in bns.items():
        # The stem's BatchNorm input does not depend on any BatchNorm: exact up to float32.
        # Later ones see eval-mode outputs, which use the unbiased variance (n / (n - 1)).
        # Running averages that lag behind training are off by 0.3% to 12% here.
        tol = 1e-5 if name == "stem.bn" else 1e-3
        mean, var = inputs[name].mean((0, 2, 3)), inputs[name].var((0, 2, 3))  # unbiased
        assert float(((bn.running_mean - mean).abs() / var.sqrt()).max()) < tol, name
        assert float((bn.running_var / var - 1).abs().max()) < tol, name
        assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 1


def test_deterministic_cached_and_off_the_global_rng(trained, tmp_path, monkeypatch):
    cache, first, _ = trained
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    monkeypatch.setenv("LOSSATLAS_CACHE", str(cache))
    with monkeypatch.context() as mp:
        mp.setattr(problem_resnet, "_train_resnet", _fail)
        assert _same_weights(first, problem_resnet.resnet_digits(seed=0))  # loaded
    monkeypatch.setenv("LOSSATLAS_CACHE", str(tmp_path / "fresh"))
    again = problem_resnet.resnet_digits(seed=0)  # trained again from scratch
    assert (tmp_path / "fresh" / f"{NAME}-v{problem_resnet.RESNET_VERSION}-seed0.pt").is_file()
    assert _same_weights(first, again)  # bit for bit
    # Other seeds: a few steps are enough to tell the weights apart.
    monkeypatch.setenv("LOSSATLAS_CACHE", str(tmp_path / "short"))
    monkeypatch.setattr(problem_resnet, "_STEPS", 3)
    short = [problem_resnet.resnet_digits(seed=seed) for seed in (0, 1)]
    drawn = [k for k, v in first.params.items() if v.ndim > 1]  # BatchNorm starts at 1 and 0
    assert not any(torch.equal(short[0].params[k], short[1].params[k]) for k in drawn)
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads


def test_surface_center_is_the_loss(trained):
    _, train, _ = trained
    dirs = la.random_directions(train, n=2, seed=0)
    land = la.surface(train, dirs, steps=3, quiet=True)
    assert land.loss.shape == (3, 3) and np.isfinite(land.loss).all()
    assert land.loss[1, 1] == pytest.approx(_brute_force(train)[0], rel=1e-5)
    assert land.loss.min() == land.loss[1, 1]  # a trained minimum, seen from unit steps away


@pytest.mark.parametrize("kwargs", [{"split": "valid"}, {"seed": -1}, {"seed": 1.5}])
def test_bad_arguments(kwargs):
    with pytest.raises(la.LossatlasError) as info:
        problem_resnet.resnet_digits(**kwargs)
    assert "\n" not in str(info.value)
