"""`bn="recompute"`: BatchNorm statistics recomputed at every point, checked against
`torch.optim.swa_utils.update_bn` on deep copies of the model (independent of lossatlas)."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

import lossatlas as la
from lossatlas.core import Evaluator
from lossatlas.core.problem import BN_MODES
from lossatlas.landscape.pca import path_losses, pca_directions
from tests.oracles.cases import N_CLASSES, build_case

CE = nn.CrossEntropyLoss()
METRICS = {"accuracy": la.accuracy}
F64 = torch.float64


def bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def at_point(model: nn.Module, params: dict[str, torch.Tensor], dtype=F64) -> nn.Module:
    """A deep copy of `model` in `dtype` holding `params`."""
    moved = copy.deepcopy(model).to(dtype)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p.copy_(params[name])
    return moved


def bn_only_stats(model: nn.Module, batches) -> None:
    """update_bn's recipe with only the BatchNorm layers in train mode (dropout stays off)."""
    model.eval()
    for m in bn_layers(model):
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    model.eval()


def loss_and_accuracy(model: nn.Module, batches) -> tuple[float, float]:
    """Sample-weighted mean loss and accuracy over the batches, in eval mode."""
    model.eval()
    loss = acc = 0.0
    n = 0
    with torch.no_grad():
        for x, y in batches:
            out = model(x)
            loss += float(CE(out, y)) * len(x)
            acc += float((out.argmax(1) == y).double().mean()) * len(x)
            n += len(x)
    return loss / n, acc / n


def reference(model, dirs, coords, batches, *, stats="update_bn", dtype=F64):
    """Loss and accuracy grids: per point a copy, its statistics recomputed, then evaluated."""
    batches = [(x.to(dtype), y) for x, y in batches]
    loss = np.empty(tuple(len(c) for c in coords))
    acc = np.empty_like(loss)
    base = {n: p.detach().to(dtype) for n, p in model.named_parameters()}
    for index in itertools.product(*(range(len(c)) for c in coords)):
        offsets = [(float(coords[j][i]), d) for j, (i, d) in enumerate(zip(index, dirs))]
        params = {n: w + sum(c * d[n].to(dtype) for c, d in offsets) for n, w in base.items()}
        moved = at_point(model, params, dtype)
        if stats == "update_bn":
            update_bn(batches, moved)  # a list of (x, y) batches: update_bn feeds x = batch[0]
        else:
            bn_only_stats(moved, batches)
        loss[index], acc[index] = loss_and_accuracy(moved, batches)
    return loss, acc


@pytest.fixture
def cnn():
    case = build_case("cnn_bn")
    batches = case.batches(24)  # 24, 24, 10: uneven
    assert [len(x) for x, _ in batches] == [24, 24, 10]
    return case, batches


@pytest.mark.parametrize("how", ["problem", "surface"])
def test_surface_matches_update_bn_in_float64(cnn, how):
    case, batches = cnn
    mode = "recompute" if how == "problem" else "eval"
    problem = la.Problem(case.model, CE, data=batches, metrics=METRICS, dtype=F64, bn=mode)
    dirs = la.random_directions(problem, 2, seed=3)
    land = la.surface(
        problem,
        dirs,
        steps=3,
        span=(-1, 1),
        bn=None if how == "problem" else "recompute",
        quiet=True,
    )
    assert land.settings["bn"] == "recompute"
    assert land.settings["plan"]["path"] == "sequential" and not land.settings["plan"]["shortcut"]
    loss, acc = reference(case.model, dirs, land.coords, batches)
    np.testing.assert_allclose(land.loss, loss, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(land.metrics["accuracy"], acc, rtol=1e-12, atol=1e-12)
    # Not vacuous: the stored statistics (from shifted data) give other values, centre included.
    stale = la.surface(problem, dirs, steps=3, span=(-1, 1), bn="eval", quiet=True)
    assert abs(stale.loss[1, 1] - land.loss[1, 1]) > 1e-2
    assert np.abs(stale.loss - land.loss).min() > 1e-4
    # Recomputing costs a second pass over the data at every point.
    assert land.provenance["n_point_passes"] == 2 * stale.provenance["n_point_passes"]


def test_float32_and_engine_batching(cnn):
    """float32 to 1e-6; the loss pass's batch size does not change the statistics."""
    case, batches = cnn
    problem = la.Problem(case.model, CE, data=batches, bn="recompute")
    dirs = la.random_directions(problem, 2, seed=1)
    land = la.surface(problem, dirs, steps=3, quiet=True)
    loss, _ = reference(case.model, dirs, land.coords, batches, dtype=torch.float32)
    np.testing.assert_allclose(land.loss, loss, rtol=1e-6, atol=1e-6)

    # An (X, y) pair without a batch size: the statistics of the whole pair (one batch here,
    # STATS_BATCH = 1024 > 58 samples), whatever batch size the engine evaluates the loss in.
    pair = la.Problem(case.model, CE, data=(case.X, case.y), dtype=F64, bn="recompute")
    coeffs = np.array([[0.0, 0.0], [0.7, -0.4]])
    got = [Evaluator(pair, dirs, batch_size=b)(coeffs).loss for b in (16, 58)]
    np.testing.assert_allclose(got[0], got[1], rtol=1e-12)
    whole = [(case.X, case.y)]
    loss, _ = reference(case.model, dirs, [np.array([0.0, 0.7]), np.array([0.0, -0.4])], whole)
    np.testing.assert_allclose(got[0], np.diag(loss), rtol=1e-12)


class DropoutBN(nn.Module):
    """BatchNorm after dropout: the statistics see dropout's masks if it is left on."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.drop1 = nn.Dropout(0.5)
        self.bn1 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 8)
        self.drop2 = nn.Dropout(0.3)
        self.bn2 = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.drop1(self.conv(x))))
        x = torch.relu(self.bn2(self.drop2(self.fc(x.flatten(1)))))
        return self.head(x)


def test_dropout_stays_off_in_the_statistics_pass(cnn):
    _, batches = cnn
    torch.manual_seed(0)
    model = DropoutBN().eval()
    problem = la.Problem(model, CE, data=batches, metrics=METRICS, dtype=F64, bn="recompute")
    dirs = la.random_directions(problem, 2, ignore=None, seed=2)
    land = la.surface(problem, dirs, steps=3, quiet=True)
    loss, acc = reference(model, dirs, land.coords, batches, stats="bn_only")
    np.testing.assert_allclose(land.loss, loss, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(land.metrics["accuracy"], acc, rtol=1e-12, atol=1e-12)
    again = la.surface(problem, dirs, steps=3, quiet=True)  # no randomness anywhere
    np.testing.assert_array_equal(again.loss, land.loss)
    # update_bn itself (whole model in train mode) would see dropout: other values.
    torch.manual_seed(0)
    dropped, _ = reference(model, dirs, land.coords, batches, stats="update_bn")
    assert np.abs(dropped - land.loss).max() > 1e-3


@pytest.mark.parametrize("name", ["mlp", "wide_mlp", "embedding"])
def test_without_batchnorm_recompute_changes_nothing(name):
    case = build_case(name)
    batches = case.batches(24)
    problem = la.Problem(case.model, CE, data=batches, metrics=METRICS, bn="recompute")
    dirs = la.random_directions(problem, 2, seed=4)
    ev = Evaluator(problem, dirs, path="vmap", slopes=True)  # both allowed: a no-op
    assert ev.stats is None
    got = la.surface(problem, dirs, steps=3, quiet=True)
    same = la.surface(problem, dirs, steps=3, bn="eval", quiet=True)
    np.testing.assert_array_equal(got.loss, same.loss)
    np.testing.assert_array_equal(got.metrics["accuracy"], same.metrics["accuracy"])
    assert got.settings["bn"] == "recompute" and got.settings["key"] != same.settings["key"]
    la.HessianOperator(problem)  # stored statistics are no issue without BatchNorm


def test_the_users_model_and_the_problem_are_untouched(cnn):
    case, batches = cnn
    model = case.model
    model.train()  # the user left it in train mode
    model.bn2.momentum = 0.25
    state = {k: v.clone() for k, v in model.state_dict().items()}
    problem = la.Problem(model, CE, data=batches, bn="recompute")
    buffers = {k: v.clone() for k, v in problem.buffers.items()}
    dirs = la.random_directions(problem, 2, seed=5)
    la.surface(problem, dirs, steps=3, quiet=True)
    assert model.training and all(m.training for m in model.modules())
    assert model.bn1.momentum == 0.1 and model.bn2.momentum == 0.25
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())
    assert not problem.module.training
    assert [m.momentum for m in bn_layers(problem.module)] == [0.1, 0.25]
    assert all(torch.equal(problem.buffers[k], v) for k, v in buffers.items())


def test_run_keys_differ_and_files_are_not_mixed(cnn, tmp_path):
    case, batches = cnn
    problem = la.Problem(case.model, CE, data=batches)
    dirs = la.random_directions(problem, 2, seed=6)
    out = tmp_path / "s.h5"
    stale = la.surface(problem, dirs, steps=3, out=out, quiet=True)
    assert stale.settings["bn"] == "eval"
    with pytest.raises(la.LossatlasError, match="holds a different result"):
        la.surface(problem, dirs, steps=3, out=out, bn="recompute", quiet=True)
    fresh = la.surface(problem, dirs, steps=3, out=out, bn="recompute", overwrite=True, quiet=True)
    assert fresh.settings["key"] != stale.settings["key"]
    assert la.load(out).settings["bn"] == "recompute"
    assert np.abs(fresh.loss - stale.loss).min() > 1e-4
    # The same call again reuses the finished file of its own mode.
    reused = la.surface(problem.with_bn("recompute"), dirs, steps=3, out=out, quiet=True)
    assert reused.settings["key"] == fresh.settings["key"]
    np.testing.assert_array_equal(reused.loss, fresh.loss)


def test_path_losses_recompute_at_every_checkpoint(cnn):
    case, batches = cnn
    problem = la.Problem(case.model, CE, data=batches, dtype=F64, bn="recompute")
    rng = np.random.default_rng(0)
    theta = torch.cat([p.reshape(-1) for p in problem.params.values()]).numpy()
    X = theta + 0.3 * rng.normal(size=(5, len(theta))) * np.abs(theta)
    shapes = tuple((n, tuple(p.shape)) for n, p in problem.params.items())
    pca = pca_directions(X, n=2, names_shapes=shapes)
    got = path_losses(problem, pca)
    expected = []
    for row in X:
        parts = torch.split(torch.as_tensor(row), [p.numel() for p in problem.params.values()])
        params = {n: t.reshape(p.shape) for (n, p), t in zip(problem.params.items(), parts)}
        moved = at_point(case.model, params)
        update_bn([(x.to(F64), y) for x, y in batches], moved)
        expected.append(loss_and_accuracy(moved, [(x.to(F64), y) for x, y in batches])[0])
    np.testing.assert_allclose(got.true_loss, expected, rtol=1e-10)
    stale = path_losses(problem.with_bn("eval"), pca)
    assert np.abs(stale.true_loss - got.true_loss).min() > 1e-4


def test_what_cannot_recompute_says_so(cnn):
    case, batches = cnn
    problem = la.Problem(case.model, CE, data=batches, bn="recompute")
    dirs = la.random_directions(problem, 2, seed=7)
    calls = {
        "HessianOperator": lambda: la.HessianOperator(problem),
        "hessian_eigen": lambda: la.hessian_eigen(problem, k=1),
        "hessian_trace": lambda: la.hessian_trace(problem),
        "epsilon_sharpness": lambda: la.epsilon_sharpness(problem),
        "adaptive_sharpness": lambda: la.adaptive_sharpness(problem),
        "average_sharpness": lambda: la.average_sharpness(problem, quiet=True),
        "descend": lambda: la.descend(problem, steps=2),
        "input_surface": lambda: la.input_surface(problem, plane="random", steps=3, quiet=True),
        "slopes": lambda: la.surface(problem, dirs, steps=3, slopes=True, quiet=True),
        "vmap": lambda: Evaluator(problem, dirs, path="vmap"),
    }
    for what, call in calls.items():
        with pytest.raises(la.LossatlasError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "recompute" in message, (what, message)
    # The same calls work on the same problem in eval mode.
    la.HessianOperator(problem.with_bn("eval"))
    Evaluator(problem.with_bn("eval"), dirs, path="vmap")


def test_bad_bn_modes(cnn):
    case, batches = cnn
    for bad in ("bogus", "train", None, 1):
        with pytest.raises(la.LossatlasError, match="is not supported"):
            la.Problem(case.model, CE, data=batches, bn=bad)
    problem = la.Problem(case.model, CE, data=batches)
    dirs = la.random_directions(problem, 1, seed=0)
    with pytest.raises(la.LossatlasError, match="bn='bogus' is not supported"):
        la.surface(problem, dirs, steps=3, bn="bogus", quiet=True)
    assert "recompute" in BN_MODES and "recompute" in repr(problem.with_bn("recompute"))


def test_a_statistics_pass_that_fails_says_so_in_one_line():
    """BatchNorm1d cannot train on a batch of one sample; eval mode could."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, N_CLASSES)).eval()
    X, y = torch.randn(9, 4), torch.randint(0, N_CLASSES, (9,))
    batches = [(X[:8], y[:8]), (X[8:], y[8:])]
    problem = la.Problem(model, CE, data=batches, bn="recompute")
    dirs = la.random_directions(problem, 1, seed=0)
    with pytest.raises(la.LossatlasError, match="statistics pass") as info:
        la.surface(problem, dirs, steps=3, quiet=True)
    assert "\n" not in str(info.value)
