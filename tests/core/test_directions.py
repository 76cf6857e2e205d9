"""Random (filter/layer/model-normalised), between-model and axis directions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lossatlas as la
from tests.oracles.cases import build_case
from tests.oracles.landscape import cosine, flat

NORMS = ["filter", "layer", "model", "none"]
CE = nn.CrossEntropyLoss()


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach() for k, p in model.named_parameters()}


def multi_dim(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: w for k, w in weights(model).items() if w.dim() > 1}


def one_dim(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: w for k, w in weights(model).items() if w.dim() <= 1}


@pytest.fixture(params=["mlp", "cnn_bn"])
def model(request) -> nn.Module:
    """The MLP has Linear weights, the CNN Conv2d and Linear weights and BatchNorm scales."""
    return build_case(request.param).model


def test_direction_shapes_names_and_dtypes(model):
    dirs = la.random_directions(model, 3, seed=0)
    assert len(dirs) == 3 and len(list(dirs)) == 3
    for d in dirs:
        assert list(d) == list(weights(model))
        for k, w in weights(model).items():
            assert d[k].shape == w.shape and d[k].dtype == w.dtype and d[k].device == w.device
    assert dirs.settings == {
        "kind": "random",
        "norm": "filter",
        "ignore": "biasbn",
        "seed": 0,
        "orthogonal": False,
    }


def test_filter_norm_matches_every_filter(model):
    for d in la.random_directions(model, 2, norm="filter", seed=1):
        for k, w in multi_dim(model).items():
            for j in range(w.shape[0]):  # filter j: an output channel or a row of a linear layer
                want = float(w[j].double().norm())
                assert math.isclose(float(d[k][j].double().norm()), want, rel_tol=1e-5), (k, j)
            # The filter is rescaled, not replaced: it is not simply the weight itself.
            assert not torch.allclose(d[k], w)


def test_layer_norm_matches_every_tensor(model):
    for d in la.random_directions(model, 2, norm="layer", seed=2):
        for k, w in multi_dim(model).items():
            want = float(w.double().norm())
            assert math.isclose(float(d[k].double().norm()), want, rel_tol=1e-5), k
        # Filters are not individually normalised with "layer".
        k, w = next(iter(multi_dim(model).items()))
        row_ratio = [float(d[k][j].norm() / w[j].norm()) for j in range(w.shape[0])]
        assert max(row_ratio) - min(row_ratio) > 1e-3


@pytest.mark.parametrize("ignore", ["biasbn", None])
def test_model_norm_matches_the_whole_model(model, ignore):
    w_norm = float(flat(weights(model)).norm())
    for d in la.random_directions(model, 2, norm="model", ignore=ignore, seed=3):
        assert math.isclose(float(flat(d).norm()), w_norm, rel_tol=1e-5)


def test_none_norm_keeps_a_standard_gaussian():
    model = nn.Sequential(nn.Linear(30, 40), nn.Linear(40, 20))  # 2,060 entries
    (d,) = la.random_directions(model, 1, norm="none", ignore=None, seed=4)
    values = flat(d)
    assert abs(float(values.mean())) < 0.1
    assert 0.9 < float(values.std()) < 1.1


@pytest.mark.parametrize("norm", NORMS)
def test_ignore_biasbn_zeroes_exactly_the_1d_parameters(model, norm):
    for d in la.random_directions(model, 2, norm=norm, ignore="biasbn", seed=5):
        for k in one_dim(model):
            assert not d[k].any(), k
        for k in multi_dim(model):
            assert torch.count_nonzero(d[k]) == d[k].numel(), k
    if hasattr(model, "bn1"):
        assert {"bn1.weight", "bn1.bias", "conv1.bias", "head.bias"} <= set(one_dim(model))


@pytest.mark.parametrize("norm", ["filter", "layer"])
def test_without_ignore_1d_entries_equal_the_weights(model, norm):
    """The reference implementation's rule for biases and BN parameters."""
    for d in la.random_directions(model, 2, norm=norm, ignore=None, seed=6):
        for k, w in one_dim(model).items():
            assert torch.equal(d[k], w), k


@pytest.mark.parametrize("norm", ["model", "none"])
def test_without_ignore_model_and_none_leave_1d_entries_random(model, norm):
    d1, d2 = la.random_directions(model, 2, norm=norm, ignore=None, seed=6)
    for k, w in one_dim(model).items():
        assert torch.count_nonzero(d1[k]) == w.numel()
        assert not torch.allclose(d1[k], w) and not torch.equal(d1[k], d2[k])


@pytest.mark.parametrize("norm", NORMS)
def test_same_seed_same_directions_other_seed_differs(model, norm):
    a = la.random_directions(model, 2, norm=norm, seed=7)
    b = la.random_directions(model, 2, norm=norm, seed=7)
    c = la.random_directions(model, 2, norm=norm, seed=8)
    for da, db, dc in zip(a, b, c):
        assert all(torch.equal(da[k], db[k]) for k in da)
        assert all(not torch.equal(da[k], dc[k]) for k in multi_dim(model))
    # The two directions of one call differ from each other.
    assert not torch.equal(flat(a[0]), flat(a[1]))


def test_seed_does_not_touch_the_global_generator(model):
    state = torch.get_rng_state()
    la.random_directions(model, 2, seed=9)
    assert torch.equal(torch.get_rng_state(), state)


def test_problem_and_model_give_the_same_directions(mlp_case):
    problem = la.Problem(mlp_case.model, CE, data=(mlp_case.X, mlp_case.y))
    for dp, dm in zip(
        la.random_directions(problem, 2, seed=10), la.random_directions(mlp_case.model, 2, seed=10)
    ):
        assert all(torch.equal(dp[k], dm[k]) for k in dm)
    # A float64 problem gets float64 directions at the scale of its (converted) weights.
    problem64 = la.Problem(mlp_case.model, CE, data=(mlp_case.X, mlp_case.y), dtype=torch.float64)
    for d in la.random_directions(problem64, 2, seed=10):
        assert all(t.dtype == torch.float64 for t in d.values())
        w = mlp_case.model[0].weight.detach().double()
        # (to the 1e-10 guard against division by zero in the normalisation)
        assert math.isclose(float(d["0.weight"][3].norm()), float(w[3].norm()), rel_tol=1e-9)


@pytest.mark.parametrize("norm", NORMS)
def test_orthogonal_directions(model, norm):
    dirs = la.random_directions(model, 3, norm=norm, ignore="biasbn", seed=11, orthogonal=True)
    for i in range(3):
        for j in range(i):
            assert abs(cosine(dirs[i], dirs[j])) < 1e-6, (i, j)
    assert abs(dirs.cosine()) < 1e-6
    assert dirs.settings["orthogonal"] is True
    # The normalisation is kept exactly.
    for d in dirs:
        for k, w in multi_dim(model).items():
            if norm == "filter":
                got, want = d[k].flatten(1).norm(dim=1), w.flatten(1).norm(dim=1)
                torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
            elif norm == "layer":
                assert math.isclose(float(d[k].norm()), float(w.norm()), rel_tol=1e-5)
        if norm == "model":
            assert math.isclose(
                float(flat(d).norm()), float(flat(weights(model)).norm()), rel_tol=1e-5
            )


def test_random_directions_are_not_orthogonal_by_default(model):
    dirs = la.random_directions(model, 2, ignore=None, seed=12)
    assert abs(cosine(dirs[0], dirs[1])) > 1e-3
    assert math.isclose(dirs.cosine(), cosine(dirs[0], dirs[1]), rel_tol=1e-9, abs_tol=1e-12)
    assert la.random_directions(model, 1, seed=12).cosine() is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": "filters"}, "norm"),
        ({"norm": None}, "norm"),
        ({"n": 0}, "number of directions"),
        ({"n": -1}, "number of directions"),
        ({"n": 1.5}, "number of directions"),
        ({"ignore": "bias"}, "ignore"),
        ({"ignore": "none"}, "ignore"),
    ],
)
def test_bad_random_direction_arguments(mlp_case, kwargs, match):
    kwargs = {"n": 2, **kwargs}
    n = kwargs.pop("n")
    with pytest.raises(la.LossatlasError, match=match) as info:
        la.random_directions(mlp_case.model, n, **kwargs)
    assert "\n" not in str(info.value)


def test_random_directions_need_a_model_or_problem():
    with pytest.raises(la.LossatlasError, match=r"Problem or an nn\.Module"):
        la.random_directions({"w": torch.ones(2, 2)}, 1)


# -- direction_between ---------------------------------------------------------------------------


def test_direction_between_is_the_weight_difference(mlp_case):
    other = build_case("mlp", seed=1).model
    (d,) = la.direction_between(mlp_case.model, other)
    wa, wb = weights(mlp_case.model), weights(other)
    assert list(d) == list(wa)
    for k in wa:
        assert torch.equal(d[k], wb[k] - wa[k])
    # A parameter dict works as the target, too.
    (d2,) = la.direction_between(mlp_case.model, {k: v.clone() for k, v in wb.items()})
    assert all(torch.equal(d[k], d2[k]) for k in d)


def test_direction_between_mismatched_models(mlp_case):
    wider = nn.Sequential(nn.Linear(4, 9), nn.Tanh(), nn.Linear(9, 3))
    with pytest.raises(la.LossatlasError, match=r"'0\.weight' has shape \(9, 4\)"):
        la.direction_between(mlp_case.model, wider)
    with pytest.raises(la.LossatlasError, match="lacks parameter"):
        la.direction_between(mlp_case.model, nn.Sequential(nn.Linear(4, 8)))


# -- axis directions -----------------------------------------------------------------------------


def test_axis_directions_are_unit_vectors_on_one_entry(mlp_case):
    model = mlp_case.model
    dirs = la.axis_directions(model, ["0.weight[1, 2]", " 2.bias[ -1 ] "])
    assert [list(d) for d in dirs] == [["0.weight"], ["2.bias"]]
    expected_w = torch.zeros(8, 4)
    expected_w[1, 2] = 1.0
    expected_b = torch.tensor([0.0, 0.0, 1.0])
    assert torch.equal(dirs[0]["0.weight"], expected_w)
    assert torch.equal(dirs[1]["2.bias"], expected_b)
    assert dirs.settings["kind"] == "axis"
    assert dirs.settings["origin_values"] == [
        float(model[0].weight.detach()[1, 2]),
        float(model[2].bias.detach()[2]),
    ]
    # A single string is one entry.
    assert len(la.axis_directions(model, "2.weight[0, 0]")) == 1


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ("0.weigth[0, 1]", r"no parameter '0\.weigth'; did you mean '0\.weight'\?"),
        ("fc9.kernel[0]", r"no parameter 'fc9\.kernel'"),
        ("0.weight[8, 0]", r"not an entry of '0\.weight', whose shape is \(8, 4\)"),
        ("0.weight[0, -5]", "not an entry"),
        ("0.weight[1]", "not an entry"),
        ("0.weight[0, 1, 2]", "not an entry"),
        ("0.weight", "not an entry"),
        ("0.weight[a, b]", "cannot read"),
        ("0.weight(0, 1)", "cannot read"),
        ("0.weight[1-2, 0]", "1-2"),
    ],
)
def test_axis_entry_parsing_errors(mlp_case, entry, match):
    with pytest.raises(la.LossatlasError, match=match) as info:
        la.axis_directions(mlp_case.model, [entry])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"seed": -1}, "seed must be"), ({"seed": 1.5}, "seed must be"), ({"n": 0}, "at least 1")],
)
def test_counts_and_seeds_are_checked_by_the_shared_rule(mlp_case, kwargs, match) -> None:
    with pytest.raises(la.LossatlasError, match=match):
        la.random_directions(mlp_case.model, **{"n": 2, **kwargs})
