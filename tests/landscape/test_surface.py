"""Grid values of `lossatlas.landscape.grid` against an independent brute-force reference."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lossatlas as la
from lossatlas.core import Evaluator
from tests.oracles.cases import N_CLASSES, build_case
from tests.oracles.landscape import brute_force, evaluate, moved_copy

CE = nn.CrossEntropyLoss()
METRICS = {"accuracy": la.accuracy}
TOL = {"rtol": 1e-5, "atol": 1e-6}
STEPS = (5, 4)
SPANS = [(-1.0, 1.0), (-0.5, 1.5)]


def linspaces(steps, spans):
    return [np.linspace(lo, hi, n) for n, (lo, hi) in zip(steps, spans)]


def assert_matches(land, ref_loss, ref_metrics, **tol):
    tol = tol or TOL
    assert land.loss.shape == ref_loss.shape
    np.testing.assert_allclose(land.loss, ref_loss, **tol)
    assert set(land.metrics) == set(ref_metrics)
    for name, grid in ref_metrics.items():
        np.testing.assert_allclose(land.metrics[name], grid, **tol)


def lossatlas_warnings(record):
    return [w for w in record if issubclass(w.category, la.LossatlasWarning)]


# -- models of different kinds -------------------------------------------------------------------


ALL_MODELS = [
    "mlp",
    "wide_mlp",
    "cnn_bn",
    "embedding",
    "shared",
    "shared_input",
    "tied",
    "tied_transpose",
    "grouped_cnn",
]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_2d_grid_matches_brute_force(make_case, name):
    case = make_case(name)
    batches = case.batches(20)
    problem = la.Problem(case.model, CE, data=batches, metrics=METRICS)
    dirs = la.random_directions(problem, 2, seed=1)
    land = la.surface(problem, dirs, steps=STEPS, span=SPANS, quiet=True)

    coords = linspaces(STEPS, SPANS)
    for got, want in zip(land.coords, coords):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    loss, metrics = brute_force(case.model, CE, batches, dirs, coords, metrics=METRICS)
    assert np.ptp(loss) > 1e-2  # the directions really move the loss
    assert_matches(land, loss, metrics)


@pytest.mark.parametrize("norm", ["layer", "filter"])
def test_cnn_with_moving_batchnorm_parameters(cnn_case, norm):
    """With ignore=None the BN scales and shifts move too (they are batched under vmap)."""
    batches = cnn_case.batches(25)
    problem = la.Problem(cnn_case.model, CE, data=batches, metrics=METRICS)
    dirs = la.random_directions(problem, 2, norm=norm, ignore=None, seed=4)
    assert dirs[0]["bn1.weight"].abs().sum() > 0
    land = la.surface(problem, dirs, steps=(4, 3), span=(-0.5, 0.5), quiet=True)
    loss, metrics = brute_force(
        cnn_case.model, CE, batches, dirs, linspaces((4, 3), [(-0.5, 0.5)] * 2), metrics=METRICS
    )
    assert_matches(land, loss, metrics)


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("name", ["mlp", "wide_mlp", "cnn_bn"])
def test_lines_grids_and_cubes(make_case, name, ndim):
    case = make_case(name)
    problem = la.Problem(case.model, CE, data=(case.X, case.y), metrics=METRICS)
    dirs = la.random_directions(problem, ndim, seed=2)
    steps = {1: 7, 2: (4, 3), 3: (3, 2, 3)}[ndim]
    land = la.surface(problem, dirs, steps=steps, span=(-2.0, 1.0), quiet=True)
    coords = linspaces([steps] if ndim == 1 else steps, [(-2.0, 1.0)] * ndim)
    assert land.ndim == ndim
    loss, metrics = brute_force(case.model, CE, [(case.X, case.y)], dirs, coords, metrics=METRICS)
    assert_matches(land, loss, metrics)


def test_user_direction_dicts_moving_some_parameters(mlp_case):
    """Plain {name: tensor} dicts; parameters a direction leaves out stay where they are."""
    gen = torch.Generator().manual_seed(7)
    model = mlp_case.model
    d1 = {"2.weight": torch.randn(model[2].weight.shape, generator=gen)}
    d2 = {"0.bias": torch.randn(8, generator=gen), "2.bias": torch.randn(3, generator=gen)}
    problem = la.Problem(model, CE, data=(mlp_case.X, mlp_case.y), metrics=METRICS)
    land = la.surface(problem, [d1, d2], steps=STEPS, span=SPANS, quiet=True)
    data = [(mlp_case.X, mlp_case.y)]
    loss, metrics = brute_force(model, CE, data, [d1, d2], linspaces(STEPS, SPANS), metrics=METRICS)
    assert_matches(land, loss, metrics)


# -- data given in different forms ---------------------------------------------------------------


@pytest.mark.parametrize("data_kind", ["pair", "pair_batch_size", "batches", "loader"])
@pytest.mark.parametrize("name", ["mlp", "wide_mlp"])
def test_data_forms_match_whole_data_reference(make_case, name, data_kind):
    mlp_case = make_case(name)
    X, y = mlp_case.X, mlp_case.y
    kwargs = {}
    if data_kind == "pair":
        data = (X, y)
    elif data_kind == "pair_batch_size":
        data, kwargs = (X, y), {"batch_size": 20}
    elif data_kind == "batches":
        data = mlp_case.batches(24)
        assert [len(b[0]) for b in data] == [24, 24, 10]
    else:
        data = DataLoader(TensorDataset(X, y), batch_size=16, shuffle=False)
        assert [len(b[0]) for b in data] == [16, 16, 16, 10]
    problem = la.Problem(mlp_case.model, CE, data=data, metrics=METRICS, **kwargs)
    assert problem.n_samples == len(X)
    dirs = la.random_directions(problem, 2, seed=5)
    land = la.surface(problem, dirs, steps=STEPS, span=SPANS, quiet=True)
    # Reference on all data at once: the sample-weighted mean over batches must equal it.
    coords = linspaces(STEPS, SPANS)
    loss, metrics = brute_force(mlp_case.model, CE, [(X, y)], dirs, coords, metrics=METRICS)
    assert_matches(land, loss, metrics)


# -- engine paths and chunking -------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_vmap_and_sequential_paths_agree(make_case, name):
    case = make_case(name)
    batches = case.batches(24)
    problem = la.Problem(case.model, CE, data=batches, metrics=METRICS)
    dirs = la.random_directions(problem, 2, seed=6)
    lands = {
        path: la.surface(
            problem, dirs, steps=STEPS, span=SPANS, path=path, chunk_size=7, quiet=True
        )
        for path in ("vmap", "sequential")
    }
    assert_matches(lands["vmap"], lands["sequential"].loss, lands["sequential"].metrics)
    loss, metrics = brute_force(
        case.model, CE, batches, dirs, linspaces(STEPS, SPANS), metrics=METRICS
    )
    n_points, n_batches = math.prod(STEPS), len(batches)
    for path, land in lands.items():
        assert_matches(land, loss, metrics)
        assert land.settings["plan"]["path"] == path
    assert lands["vmap"].provenance["n_model_calls"] == math.ceil(n_points / 7) * n_batches
    assert lands["sequential"].provenance["n_model_calls"] == n_points * n_batches


@pytest.mark.parametrize("path", ["vmap", "sequential"])
def test_chunk_size_not_dividing_points(mlp_case, path):
    problem = la.Problem(mlp_case.model, CE, data=mlp_case.batches(24), metrics=METRICS)
    dirs = la.random_directions(problem, 2, seed=8)
    one = la.surface(problem, dirs, steps=STEPS, span=SPANS, chunk_size=20, path=path, quiet=True)
    assert 20 % 7 != 0
    split = la.surface(problem, dirs, steps=STEPS, span=SPANS, chunk_size=7, path=path, quiet=True)
    assert one.settings["plan"]["chunk_size"] == 20
    assert split.settings["plan"]["chunk_size"] == 7
    assert_matches(split, one.loss, one.metrics, rtol=1e-6, atol=1e-7)
    loss, metrics = brute_force(
        mlp_case.model, CE, mlp_case.batches(24), dirs, linspaces(STEPS, SPANS), metrics=METRICS
    )
    assert_matches(split, loss, metrics)


# -- the user's model ----------------------------------------------------------------------------


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "tied"])
def test_user_model_is_bit_identical_after_a_run(make_case, name, training):
    case = make_case(name)
    model = case.model.train(training)
    next(model.parameters()).requires_grad_(False)  # a frozen parameter must stay frozen
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    requires_grad = [(n, p.requires_grad) for n, p in model.named_parameters()]

    problem = la.Problem(model, CE, data=case.batches(20), metrics=METRICS)
    dirs = la.random_directions(problem, 2, ignore=None, seed=9)
    for path in ("vmap", "sequential"):
        la.surface(problem, dirs, steps=3, path=path, quiet=True)
    Evaluator(problem, dirs)(np.array([[0.3, -0.2], [1.0, 1.0]]))

    after = model.state_dict()
    assert list(after) == list(state)
    for key, value in state.items():
        assert torch.equal(after[key], value), key
        assert after[key].dtype == value.dtype
    assert [m.training for m in model.modules()] == modes
    assert [(n, p.requires_grad) for n, p in model.named_parameters()] == requires_grad
    assert all(p.grad is None for p in model.parameters())


class DropoutMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, N_CLASSES)
        )

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("path", ["auto", "vmap", "sequential"])
@pytest.mark.parametrize("name", ["dropout", "cnn_bn"])
def test_training_mode_model_is_evaluated_in_eval_mode(make_case, name, path):
    """Dropout off and BatchNorm on its running statistics, whatever the user's mode."""
    case = make_case("mlp" if name == "dropout" else name)
    if name == "dropout":
        torch.manual_seed(0)
        case.model = DropoutMLP()
    model = case.model.train()
    data = case.batches(24)
    problem = la.Problem(model, CE, data=data, metrics=METRICS)
    dirs = la.random_directions(problem, 2, seed=10)
    first = la.surface(problem, dirs, steps=(4, 3), path=path, quiet=True)
    second = la.surface(problem, dirs, steps=(4, 3), path=path, quiet=True)
    assert np.array_equal(first.loss, second.loss)
    loss, metrics = brute_force(
        model, CE, data, dirs, linspaces((4, 3), [(-1, 1)] * 2), metrics=METRICS
    )
    assert_matches(first, loss, metrics)
    # The same model in training mode gives another loss: the mode really matters here.
    train_copy = copy.deepcopy(model).train()
    with torch.no_grad():
        train_loss = float(CE(train_copy(case.X), case.y))
    assert not math.isclose(train_loss, evaluate(copy.deepcopy(model), CE, data)[0], rel_tol=1e-3)
    assert model.training


# -- loss reductions and dtypes ------------------------------------------------------------------


def test_sum_reduction_gives_the_total_loss(mlp_case):
    ce_sum = nn.CrossEntropyLoss(reduction="sum")
    batches = mlp_case.batches(24)
    problem = la.Problem(mlp_case.model, ce_sum, data=batches, metrics=METRICS)
    dirs = la.random_directions(problem, 2, seed=11)
    land = la.surface(problem, dirs, steps=STEPS, span=SPANS, quiet=True)
    coords = linspaces(STEPS, SPANS)
    loss, metrics = brute_force(
        mlp_case.model, ce_sum, batches, dirs, coords, metrics=METRICS, reduction="sum"
    )
    assert_matches(land, loss, metrics)
    mean_loss, _ = brute_force(mlp_case.model, CE, batches, dirs, coords)
    np.testing.assert_allclose(land.loss, mean_loss * len(mlp_case.X), **TOL)
    assert land.settings["loss_reduction"] == "sum"


def test_per_sample_loss_is_averaged(mlp_case):
    ce_none = nn.CrossEntropyLoss(reduction="none")
    batches = mlp_case.batches(24)
    problem = la.Problem(mlp_case.model, ce_none, data=batches)
    dirs = la.random_directions(problem, 2, seed=12)
    land = la.surface(problem, dirs, steps=STEPS, span=SPANS, quiet=True)
    data = [(mlp_case.X, mlp_case.y)]
    loss, _ = brute_force(mlp_case.model, CE, data, dirs, linspaces(STEPS, SPANS))
    np.testing.assert_allclose(land.loss, loss, **TOL)


@pytest.mark.parametrize("path", ["vmap", "sequential"])
@pytest.mark.parametrize("name", ["mlp", "cnn_bn"])
def test_float64_problem_matches_to_1e_12(make_case, name, path):
    case = make_case(name)
    batches = case.batches(24)
    problem = la.Problem(case.model, CE, data=batches, metrics=METRICS, dtype=torch.float64)
    dirs = la.random_directions(problem, 2, seed=13)
    assert all(t.dtype == torch.float64 for d in dirs for t in d.values())
    land = la.surface(problem, dirs, steps=STEPS, span=SPANS, path=path, quiet=True)
    assert land.settings["dtype"] == "torch.float64"
    loss, metrics = brute_force(
        case.model,
        CE,
        batches,
        dirs,
        linspaces(STEPS, SPANS),
        metrics=METRICS,
        dtype=torch.float64,
    )
    assert_matches(land, loss, metrics, rtol=1e-12, atol=1e-12)


# -- non-finite values ---------------------------------------------------------------------------


class Exploding(nn.Module):
    """exp of a linear map: overflows to inf for large coefficients."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x):
        return torch.exp(self.lin(x)).squeeze(-1)


def log_mean_loss(out, y):
    """NaN wherever the mean output is negative."""
    return torch.log(out.mean() + 0.0 * y.mean())


@pytest.mark.parametrize("path", ["auto", "vmap", "sequential"])
@pytest.mark.parametrize("kind", ["inf_model", "nan_loss"])
def test_non_finite_losses_are_kept_and_warned_about(kind, path):
    torch.manual_seed(3)
    X, y = torch.randn(40, 3), torch.randn(40)
    if kind == "inf_model":
        model, loss_fn, span = Exploding(), nn.MSELoss(), (-80.0, 80.0)
    else:
        model, loss_fn, span = nn.Linear(3, 1), log_mean_loss, (-3.0, 3.0)
    problem = la.Problem(model, loss_fn, data=[(X[:25], y[:25]), (X[25:], y[25:])])
    dirs = la.random_directions(problem, 1, norm="layer", ignore=None, seed=0)
    with pytest.warns(la.LossatlasWarning, match="non-finite") as record:
        land = la.surface(problem, dirs, steps=17, span=span, path=path, quiet=True)
    assert len(lossatlas_warnings(record)) == 1
    ref, _ = brute_force(
        model, loss_fn, [(X[:25], y[:25]), (X[25:], y[25:])], dirs, [np.linspace(*span, 17)]
    )
    finite = np.isfinite(ref)
    assert 0 < finite.sum() < finite.size  # the line has both kinds of points
    np.testing.assert_array_equal(np.isnan(land.loss), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(land.loss), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(land.loss), np.isneginf(ref))
    np.testing.assert_allclose(land.loss[finite], ref[finite], rtol=1e-4)
    assert land.nonfinite == int((~finite).sum())


def test_non_finite_in_one_batch_only_makes_the_point_non_finite():
    """A NaN in the last batch must not be diluted or dropped by the weighted mean."""
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.zero_()
    X = torch.tensor([[1.0, 1.0], [2.0, 0.0], [float("nan"), 0.0]])
    y = torch.zeros(3, 1)
    problem = la.Problem(model, nn.MSELoss(), data=[(X[:2], y[:2]), (X[2:], y[2:])])
    with pytest.warns(la.LossatlasWarning):
        land = la.surface(problem, [{"bias": torch.ones(1)}], steps=3, quiet=True)
    assert np.isnan(land.loss).all()


# -- interpolation, axes and centres -------------------------------------------------------------


def test_direction_between_reproduces_both_end_models(mlp_case):
    other = build_case("mlp", seed=1).model
    data = [(mlp_case.X, mlp_case.y)]
    problem = la.Problem(mlp_case.model, CE, data=data, metrics=METRICS)
    dirs = la.direction_between(problem, other)
    land = la.surface(problem, dirs, steps=5, span=(0, 1), quiet=True)
    np.testing.assert_allclose(land.coords[0], np.linspace(0, 1, 5))

    for t, model in ((0, mlp_case.model), (-1, other)):
        loss, metrics = evaluate(copy.deepcopy(model), CE, data, metrics=METRICS)
        np.testing.assert_allclose(land.loss[t], loss, **TOL)
        np.testing.assert_allclose(land.metrics["accuracy"][t], metrics["accuracy"], **TOL)
    # Every point is the plain weight interpolation (1 - t) * theta_a + t * theta_b.
    pa, pb = dict(mlp_case.model.named_parameters()), dict(other.named_parameters())
    for i, t in enumerate(np.linspace(0, 1, 5)):
        center = {k: (1 - t) * pa[k].detach() + t * pb[k].detach() for k in pa}
        mid = moved_copy(mlp_case.model, [], center=center)
        np.testing.assert_allclose(land.loss[i], evaluate(mid, CE, data)[0], **TOL)


def test_axis_directions_move_exactly_the_named_entries(mlp_case):
    model = mlp_case.model
    data = [(mlp_case.X, mlp_case.y)]
    problem = la.Problem(model, CE, data=data)
    dirs = la.axis_directions(problem, ["0.weight[1, 2]", "2.bias[-1]"])

    w = model[0].weight.detach()
    moved = Evaluator(problem, dirs[:1]).points(np.array([[0.7], [-1.5]]))
    assert list(moved) == ["0.weight"]
    for row, c in enumerate((0.7, -1.5)):
        diff = moved["0.weight"][row] - w
        assert torch.count_nonzero(diff) == 1
        assert math.isclose(float(diff[1, 2]), c, rel_tol=1e-6)

    steps, spans = (5, 3), [(-2.0, 2.0), (-1.0, 1.0)]
    land = la.surface(problem, dirs, steps=steps, span=spans, quiet=True)
    xs, ys = linspaces(steps, spans)
    ref = np.empty(steps)
    for i, a in enumerate(xs):
        for j, b in enumerate(ys):
            m = copy.deepcopy(model)
            with torch.no_grad():
                m[0].weight[1, 2] += float(a)
                m[2].bias[N_CLASSES - 1] += float(b)
            ref[i, j] = evaluate(m, CE, data)[0]
    assert np.ptp(ref) > 1e-3
    np.testing.assert_allclose(land.loss, ref, **TOL)


@pytest.mark.parametrize("as_dict", [False, True])
@pytest.mark.parametrize("name", ["mlp", "wide_mlp"])
def test_center_evaluates_around_another_model(make_case, name, as_dict):
    mlp_case = make_case(name)
    other = build_case(name, seed=2).model
    data = [(mlp_case.X, mlp_case.y)]
    problem = la.Problem(mlp_case.model, CE, data=data, metrics=METRICS)
    dirs = la.random_directions(problem, 2, seed=14)
    center = {k: p.detach().clone() for k, p in other.named_parameters()} if as_dict else other
    land = la.surface(problem, dirs, steps=(5, 3), span=SPANS, center=center, quiet=True)
    coords = linspaces((5, 3), SPANS)
    loss, metrics = brute_force(
        mlp_case.model,
        CE,
        data,
        dirs,
        coords,
        metrics=METRICS,
        center=dict(other.named_parameters()),
    )
    assert_matches(land, loss, metrics)
    # The middle of a 3x3 grid over (-1, 1) is the centre model itself.
    at_zero = la.surface(problem, dirs, steps=3, center=center, quiet=True)
    np.testing.assert_allclose(
        at_zero.loss[1, 1], evaluate(copy.deepcopy(other), CE, data)[0], **TOL
    )
    assert land.settings["center"] == "custom"


# -- models that cannot run under vmap -----------------------------------------------------------


class ItemModel(nn.Module):
    """Calls `.item()` on a tensor that depends on the parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(4, 6), nn.Linear(6, N_CLASSES)

    def forward(self, x):
        h = torch.tanh(self.lin1(x))
        scale = h.abs().max().item()
        return self.lin2(h) / (1.0 + scale)


class BranchModel(nn.Module):
    """Python control flow on a parameter-dependent value."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(4, 6), nn.Linear(6, N_CLASSES)

    def forward(self, x):
        h = self.lin1(x)
        h = torch.tanh(h) if h.sum() > 0 else torch.relu(h)
        return self.lin2(h)


@pytest.mark.parametrize("model_cls", [ItemModel, BranchModel])
def test_model_that_cannot_vmap_falls_back_with_one_warning(mlp_case, model_cls):
    torch.manual_seed(0)
    model = model_cls().eval()
    batches = mlp_case.batches(24)
    problem = la.Problem(model, CE, data=batches, metrics=METRICS)
    dirs = la.random_directions(problem, 2, seed=15)
    with pytest.warns(la.LossatlasWarning, match="vmap") as record:
        land = la.surface(problem, dirs, steps=STEPS, span=SPANS, chunk_size=3, quiet=True)
    assert len(lossatlas_warnings(record)) == 1
    assert "\n" not in str(lossatlas_warnings(record)[0].message)
    loss, metrics = brute_force(model, CE, batches, dirs, linspaces(STEPS, SPANS), metrics=METRICS)
    assert_matches(land, loss, metrics)
    assert land.settings["plan"]["path"] == "sequential"
    # The sequential path, asked for directly, gives the same values without any warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        direct = la.surface(problem, dirs, steps=STEPS, span=SPANS, path="sequential", quiet=True)
    assert_matches(direct, loss, metrics)


# -- slopes: the loss's derivative along every direction ---------------------------------------
def test_one_weight_loss_and_slope_match_the_closed_form():
    """L(w) = (w x - y)^2 with x = 2, y = 4: dL/dw = 2 (w x - y) x, zero at w = 2."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.5)
    data = (torch.tensor([[2.0]]), torch.tensor([[4.0]]))
    problem = la.Problem(model, nn.MSELoss(), data, dtype=torch.float64)
    dirs = la.axis_directions(problem, ["weight[0, 0]"])
    land = la.surface(problem, dirs, steps=41, span=(-1.5, 2.5), slopes=True, quiet=True)
    w = 0.5 + land.coords[0]
    np.testing.assert_allclose(land.loss, (w * 2 - 4) ** 2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(land.slopes[:, 0], 2 * (w * 2 - 4) * 2, rtol=1e-12, atol=1e-12)
    assert (land.slopes[w < 2, 0] < 0).all() and (land.slopes[w > 2, 0] > 0).all()


@pytest.mark.parametrize("path", ["vmap", "sequential"])
@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "tied"])
def test_slopes_match_central_differences_of_the_reference(make_case, name, path):
    case = make_case(name)
    batches = case.batches(24)  # uneven last batch: slopes are sample-weighted like the loss
    problem = la.Problem(case.model, CE, batches, metrics=METRICS, dtype=torch.float64)
    dirs = la.random_directions(problem, 2, ignore=None, seed=4)
    # Not (-0.5, 0.5): with ignore=None the 1-D directions are the weights, so c = (-0.5, -0.5)
    # zeroes every bias and BatchNorm scale and puts all ReLUs on their kink.
    land = la.surface(problem, dirs, steps=(3, 2), span=(-0.3, 0.4), slopes=True, path=path,
                      quiet=True)  # fmt: skip
    assert land.slopes.shape == (3, 2, 2)
    model64 = copy.deepcopy(case.model).double()
    dirs64 = [{k: t.double() for k, t in d.items()} for d in dirs]
    batches64 = [(x.double() if x.is_floating_point() else x, y) for x, y in batches]
    h = 1e-5
    for i, a in enumerate(land.coords[0]):
        for j, b in enumerate(land.coords[1]):
            for axis in range(2):
                step = np.array([h, 0.0] if axis == 0 else [0.0, h])
                ends = []
                for sign in (1, -1):
                    c = np.array([a, b]) + sign * step
                    moved = moved_copy(model64, list(zip(c, dirs64)))
                    ends.append(evaluate(moved, CE, batches64)[0])
                expected = (ends[0] - ends[1]) / (2 * h)
                assert land.slopes[i, j, axis] == pytest.approx(expected, rel=1e-6, abs=1e-8)


def test_slopes_are_saved_resumed_and_loaded(mlp_case, tmp_path):
    problem = la.Problem(mlp_case.model, CE, (mlp_case.X, mlp_case.y), metrics=METRICS)
    dirs = la.random_directions(problem, 2, seed=2)
    kwargs = {"steps": 5, "slopes": True, "quiet": True}
    whole = la.surface(problem, dirs, **kwargs)
    chunked = la.surface(problem, dirs, chunk_size=4, out=tmp_path / "s.h5", **kwargs)
    np.testing.assert_allclose(chunked.slopes, whole.slopes, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(chunked.metrics["accuracy"], whole.metrics["accuracy"])
    loaded = la.load(tmp_path / "s.h5")
    assert np.array_equal(loaded.slopes, chunked.slopes)
    assert (
        la.surface(problem, dirs, **kwargs).settings["key"]
        != la.surface(problem, dirs, steps=5, quiet=True).settings["key"]
    )  # asking for slopes is another run
