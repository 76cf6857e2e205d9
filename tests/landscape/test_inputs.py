"""Input-space surfaces against a brute-force loop: one input built by hand per grid point and
anchor, the model and loss called on one sample at a time, in float64."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from lossatlas.core.problem import batch_value
from lossatlas.errors import LossatlasWarning
from lossatlas.landscape.input_eval import PerSample
from lossatlas.landscape.inputs import InputSurface, input_surface, per_sample_loss
from lossatlas.plot.inputs import plot_input_surface
from tests.oracles.cases import build_case

RTOL, ATOL = 1e-10, 1e-12


def true_fn(x: torch.Tensor) -> torch.Tensor:
    """The 2-input regression's known target, (N, 2) -> (N, 1)."""
    return (torch.sin(2 * x[:, 0]) * x[:, 1]).unsqueeze(1)


def regression():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    X = 2 * torch.rand(40, 2) - 1 + torch.tensor([0.5, -0.2])
    return model, X, true_fn(X)


def classifier():
    case = build_case("mlp")  # 4 inputs, 3 classes
    return case.model, case.X, case.y


def one_sample_loss(model, loss_fn, x, y) -> float:
    """The loss of one input `x` (any shape) against one target `y`, in float64."""
    with torch.no_grad():
        return float(loss_fn(model(x.double()[None]), y[None]))


def reference(model, loss_fn, coords, make_input, anchors, labels=None, target=None):
    """Loop over grid points and anchors: `make_input(anchor, c1, c2)` builds each input."""
    model = copy.deepcopy(model).double().eval()
    loss = np.empty((len(coords[0]), len(coords[1])))
    for i, c1 in enumerate(coords[0]):
        for j, c2 in enumerate(coords[1]):
            values = []
            for k, anchor in enumerate(anchors):
                x = make_input(anchor.double().clone(), float(c1), float(c2))
                y = target(x[None])[0] if target is not None else labels[k]
                values.append(one_sample_loss(model, loss_fn, x, y))
            loss[i, j] = sum(values) / len(values)
    return loss


def problem(model, X, y, loss_fn, **kwargs) -> la.Problem:
    return la.Problem(model, loss_fn, (X, y), dtype="float64", **kwargs)


def set_features(f1, f2):
    def make(x, c1, c2):
        flat = x.reshape(-1)
        flat[f1], flat[f2] = c1, c2
        return flat.reshape(x.shape)

    return make


def along(d1, d2, scale):
    d1, d2 = torch.from_numpy(d1), torch.from_numpy(d2)
    return lambda x, c1, c2: x + scale(x) * (c1 * d1 + c2 * d2)


def norm_scale(x):
    return x.norm()


def unit_scale(x):
    return 1.0


def test_features_plane_of_a_two_input_model_with_a_known_target():
    model, X, y = regression()
    prob = problem(model, X, y, nn.MSELoss())
    result = input_surface(prob, target=true_fn, steps=(9, 7), quiet=True)
    assert isinstance(result, InputSurface)
    assert result.loss.shape == result.prediction.shape == (9, 7)
    assert result.axes == ("x1", "x2")
    # The default span is the data's range in the two features, padded by 10%.
    for axis, c in enumerate(result.coords):
        lo, hi = float(X[:, axis].min()), float(X[:, axis].max())
        pad = 0.1 * (hi - lo)
        assert c[0] == pytest.approx(lo - pad) and c[-1] == pytest.approx(hi + pad)
    np.testing.assert_allclose(result.points, X.double().numpy(), rtol=0, atol=1e-7)
    zero = [torch.zeros(2)]
    expected = reference(
        model, nn.MSELoss(), result.coords, set_features(0, 1), zero, target=true_fn
    )
    np.testing.assert_allclose(result.loss, expected, rtol=RTOL, atol=ATOL)
    # The prediction is the model's output at the grid point (the whole input plane).
    grid = torch.cartesian_prod(*(torch.from_numpy(c) for c in result.coords))
    with torch.no_grad():
        out = copy.deepcopy(model).double()(grid).reshape(9, 7).numpy()
    np.testing.assert_allclose(result.prediction, out, rtol=RTOL, atol=ATOL)
    assert result.settings["target"] == "function" and result.settings["anchors"] is None
    assert result.provenance["points"] == 63 and result.provenance["versions"]["torch"]
    assert result.argmin() == tuple(
        float(c[i]) for c, i in zip(result.coords, np.unravel_index(expected.argmin(), (9, 7)))
    )


def test_features_plane_of_a_classifier_around_an_anchor():
    model, X, y = classifier()
    prob = problem(model, X, y, nn.CrossEntropyLoss())
    span = ((-2.0, 1.5), (-1.0, 2.5))
    result = input_surface(prob, features=(1, 3), anchors=5, span=span, steps=(8, 6), quiet=True)
    assert result.axes == ("feature 1", "feature 3")
    np.testing.assert_allclose(result.coords[0], np.linspace(-2.0, 1.5, 8))
    np.testing.assert_allclose(result.points, X[:, [1, 3]].double().numpy(), atol=1e-7)
    expected = reference(
        model, nn.CrossEntropyLoss(), result.coords, set_features(1, 3), [X[5]], labels=[y[5]]
    )
    np.testing.assert_allclose(result.loss, expected, rtol=RTOL, atol=ATOL)
    assert result.provenance["per_sample_loss"] == "unreduced"
    # The prediction is the predicted class of each input.
    moved = copy.deepcopy(model).double()
    for i, c1 in enumerate(result.coords[0]):
        for j, c2 in enumerate(result.coords[1]):
            x = set_features(1, 3)(X[5].double().clone(), c1, c2)
            assert result.prediction[i, j] == int(moved(x[None]).argmax())
    assert result.settings["prediction"] == "class"


def test_features_plane_needs_a_target_or_anchors():
    model, X, y = classifier()
    prob = problem(model, X, y, nn.CrossEntropyLoss())
    with pytest.raises(la.LossatlasError, match="target=") as info:
        input_surface(prob, quiet=True)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("scale", ["norm", "unit"])
def test_random_plane_directions_and_values(scale):
    model, X, y = classifier()
    prob = problem(model, X, y, nn.CrossEntropyLoss())
    result = input_surface(prob, plane="random", anchors=3, scale=scale, steps=(7, 5), quiet=True)
    d1, d2 = (torch.from_numpy(d).reshape(-1) for d in result.directions)
    assert float(d1 @ d2) == pytest.approx(0, abs=1e-12)
    assert float(d1.norm()) == pytest.approx(1) and float(d2.norm()) == pytest.approx(1)
    size = float(X[3].double().norm()) if scale == "norm" else 1.0
    assert result.settings["anchor_scales"] == [pytest.approx(size)]
    np.testing.assert_allclose(result.coords[1], np.linspace(-1, 1, 5))
    np.testing.assert_array_equal(result.points, np.zeros((1, 2)))
    make = along(*result.directions, norm_scale if scale == "norm" else unit_scale)
    expected = reference(model, nn.CrossEntropyLoss(), result.coords, make, [X[3]], labels=[y[3]])
    np.testing.assert_allclose(result.loss, expected, rtol=RTOL, atol=ATOL)


def test_random_plane_of_image_inputs():
    case = build_case("cnn_bn")  # 1x6x6 inputs, BatchNorm with running statistics
    prob = problem(case.model, case.X, case.y, nn.CrossEntropyLoss())
    result = input_surface(prob, plane="random", anchors=-1, span=0.5, steps=4, quiet=True)
    assert result.settings["anchors"] == [len(case.X) - 1]
    assert all(d.shape == (1, 6, 6) for d in result.directions)
    make = along(*result.directions, norm_scale)
    expected = reference(
        case.model, nn.CrossEntropyLoss(), result.coords, make, [case.X[-1]], labels=[case.y[-1]]
    )
    np.testing.assert_allclose(result.loss, expected, rtol=RTOL, atol=ATOL)


def input_gradient(model, loss_fn, x, y) -> torch.Tensor:
    """d loss(model(x), y) / dx of one sample, by autograd on a float64 copy."""
    x = x.double().clone().requires_grad_(True)
    loss = loss_fn(copy.deepcopy(model).double()(x[None]), y[None])
    return torch.autograd.grad(loss, x)[0].reshape(-1)


def test_gradient_plane_follows_the_input_gradient():
    model, X, y = classifier()
    loss_fn = nn.CrossEntropyLoss()
    prob = problem(model, X, y, loss_fn)
    h = 1e-4
    result = input_surface(prob, plane="gradient", anchors=9, span=(-h, h), steps=3, quiet=True)
    assert result.axes == ("input gradient", "random (orthogonal)")
    g = input_gradient(model, loss_fn, X[9], y[9])
    d1, d2 = (torch.from_numpy(d).reshape(-1) for d in result.directions)
    torch.testing.assert_close(d1, g / g.norm(), rtol=0, atol=1e-12)
    assert float(d1 @ d2) == pytest.approx(0, abs=1e-12) and float(d2.norm()) == pytest.approx(1)
    # The loss rises along the first axis, at the rate |x| |g| (a finite-difference check).
    minus, center, plus = result.loss[:, 1]
    assert minus < center < plus
    slope = (plus - minus) / (2 * h)
    assert slope == pytest.approx(float(X[9].double().norm() * g.norm()), rel=1e-6)
    # ...and to first order not along the second (orthogonal to the gradient).
    assert abs(result.loss[1, 2] - result.loss[1, 0]) / (2 * h) < 1e-6 * slope
    make = along(*result.directions, norm_scale)
    expected = reference(model, loss_fn, result.coords, make, [X[9]], labels=[y[9]])
    np.testing.assert_allclose(result.loss, expected, rtol=RTOL, atol=ATOL)


def test_gradient_plane_of_several_anchors_is_the_ascent_of_their_mean():
    model, X, y = classifier()
    loss_fn = nn.CrossEntropyLoss()
    prob = problem(model, X, y, loss_fn)
    anchors = [2, 11, 30]
    result = input_surface(prob, plane="gradient", anchors=anchors, steps=3, quiet=True)
    g = sum(X[a].double().norm() * input_gradient(model, loss_fn, X[a], y[a]) for a in anchors)
    d1 = torch.from_numpy(result.directions[0]).reshape(-1)
    torch.testing.assert_close(d1, g / g.norm(), rtol=0, atol=1e-12)
    assert result.provenance["forward_passes"] == 2  # the gradient, then the grid


def test_several_anchors_average_their_losses():
    model, X, y = classifier()
    prob = problem(model, X, y, nn.CrossEntropyLoss())
    anchors = [0, 7, 13]
    kwargs = {"plane": "random", "steps": (5, 4), "seed": 3, "quiet": True}
    result = input_surface(prob, anchors=anchors, **kwargs)
    assert result.prediction is None and result.points.shape == (3, 2)
    make = along(*result.directions, norm_scale)
    expected = reference(
        model, nn.CrossEntropyLoss(), result.coords, make, X[anchors], labels=y[anchors]
    )
    np.testing.assert_allclose(result.loss, expected, rtol=RTOL, atol=ATOL)
    singles = [input_surface(prob, anchors=a, **kwargs).loss for a in anchors]
    np.testing.assert_allclose(result.loss, np.mean(singles, axis=0), rtol=RTOL, atol=ATOL)
    # Features mode with several anchors and a target function.
    model, Xr, yr = regression()
    prob = problem(model, Xr, yr, nn.MSELoss())
    result = input_surface(prob, anchors=[1, 4], target=true_fn, steps=4, quiet=True)
    expected = reference(
        model, nn.MSELoss(), result.coords, set_features(0, 1), Xr[[1, 4]], target=true_fn
    )
    np.testing.assert_allclose(result.loss, expected, rtol=RTOL, atol=ATOL)


def test_anchors_are_found_across_batches_and_chunks_do_not_change_values():
    case = build_case("mlp")
    prob = la.Problem(case.model, nn.CrossEntropyLoss(), case.batches(16), dtype="float64")
    kwargs = {"plane": "random", "anchors": [40, 3], "steps": (6, 5), "quiet": True}
    whole = input_surface(prob, **kwargs)
    chunked = input_surface(prob, chunk=7, **kwargs)
    assert chunked.provenance["forward_passes"] == math.ceil(6 * 5 * 2 / 7)
    np.testing.assert_allclose(chunked.loss, whole.loss, rtol=1e-13, atol=0)
    make = along(*whole.directions, norm_scale)
    anchors = case.X[[40, 3]]
    expected = reference(
        case.model, nn.CrossEntropyLoss(), whole.coords, make, anchors, labels=case.y[[40, 3]]
    )
    np.testing.assert_allclose(whole.loss, expected, rtol=RTOL, atol=ATOL)


def test_deterministic_by_seed_and_global_rng_untouched():
    model, X, y = classifier()
    prob = problem(model, X, y, nn.CrossEntropyLoss())
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = input_surface(prob, plane="random", seed=5, steps=4, quiet=True)
    b = input_surface(prob, plane="random", seed=5, steps=4, quiet=True)
    c = input_surface(prob, plane="random", seed=6, steps=4, quiet=True)
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(a.loss, b.loss)
    for d, e, f in zip(a.directions, b.directions, c.directions):
        np.testing.assert_array_equal(d, e)
        assert not np.allclose(d, f)
    assert not np.allclose(a.loss, c.loss)


def test_the_users_model_is_untouched():
    model, X, y = classifier()
    model.train()
    before = copy.deepcopy(model.state_dict())
    prob = la.Problem(model, nn.CrossEntropyLoss(), (X, y))  # float32, as the model
    for plane in ("features", "random", "gradient"):
        input_surface(prob, plane=plane, anchors=[1, 2], steps=3, quiet=True)
    assert model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in prob.params.values())
    assert next(model.parameters()).dtype == torch.float32


def test_per_sample_losses_equal_one_call_per_sample():
    torch.manual_seed(0)
    out, labels = torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 3, (6,))
    goal = torch.randn(6, 3, dtype=torch.float64)

    def item_loss(o, t):  # not vmap-able: .item() needs a real value
        return ((o - t) ** 2).mean() * (1.0 + 0 * o.sum().item())

    weighted = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    cases = [
        (nn.MSELoss(), goal, "unreduced"),
        (nn.MSELoss(reduction="sum"), goal, "unreduced"),
        (nn.CrossEntropyLoss(), labels, "unreduced"),
        (nn.CrossEntropyLoss(label_smoothing=0.1), labels, "unreduced"),
        (weighted, labels, "vmap"),  # class weights: a one-sample mean divides them out
        (lambda o, t: (o - t).abs().pow(3).sum(), goal, "vmap"),
        (nn.MSELoss(reduction="none"), goal, "vmap"),  # a per-element loss is averaged
    ]
    for loss_fn, targets, method in cases:
        loop = [float(batch_value(loss_fn(out[i : i + 1], targets[i : i + 1]))) for i in range(6)]
        per = PerSample(loss_fn)
        np.testing.assert_allclose(per(out, targets).numpy(), loop, rtol=1e-12)
        assert per.method == method
    np.testing.assert_allclose(
        per_sample_loss(nn.MSELoss(), out, goal), ((out - goal) ** 2).mean(1)
    )
    with pytest.warns(LossatlasWarning, match="vmap"):
        values = per_sample_loss(item_loss, out, goal)
    np.testing.assert_allclose(values.numpy(), ((out - goal) ** 2).mean(1).numpy(), rtol=1e-12)
    mse = nn.MSELoss()
    PerSample(mse)(out, goal)
    assert mse.reduction == "mean"  # the user's loss keeps its reduction


def test_a_loss_that_needs_the_loop_matches_the_reference():
    model, X, y = regression()

    def loss_fn(o, t):
        return ((o - t) ** 2).mean() + 0 * o.sum().item()

    prob = problem(model, X, y, loss_fn)
    with pytest.warns(LossatlasWarning, match="one sample at a time"):
        result = input_surface(prob, target=true_fn, steps=4, quiet=True)
    assert result.provenance["per_sample_loss"] == "loop"
    expected = reference(
        model, loss_fn, result.coords, set_features(0, 1), [torch.zeros(2)], target=true_fn
    )
    np.testing.assert_allclose(result.loss, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"plane": "diagonal"}, "plane="),
        ({"features": (0, 4), "anchors": 0}, r"0\.\.3"),
        ({"features": (2, 2), "anchors": 0}, "different"),
        ({"features": (1,), "anchors": 0}, "two"),
        ({"features": (0.5, 1), "anchors": 0}, "two ints"),
        ({"anchors": 58}, "out of range"),
        ({"plane": "random", "anchors": -59}, "out of range"),
        ({"plane": "random", "anchors": []}, "indices"),
        ({"plane": "random", "anchors": "first"}, "indices"),
        ({"plane": "random", "steps": 1}, "at least 2"),
        ({"plane": "random", "steps": (3, 4, 5)}, "pair"),
        ({"plane": "random", "steps": 2.5}, "pair"),
        ({"plane": "random", "span": (1, -1)}, "lo < hi"),
        ({"plane": "random", "span": "wide"}, "span"),
        ({"plane": "random", "span": float("nan")}, "span"),
        ({"plane": "random", "scale": "big"}, "scale="),
        ({"plane": "random", "chunk": 0}, "at least 1"),
        ({"target": 3}, "target"),
        ({"target": lambda x: x[:3, 0]}, "target"),
    ],
)
def test_user_mistakes_are_one_line_errors(kwargs, match):
    model, X, y = classifier()
    prob = problem(model, X, y, nn.CrossEntropyLoss())
    with pytest.raises(la.LossatlasError, match=match) as info:
        input_surface(prob, quiet=True, **kwargs)
    assert "\n" not in str(info.value)


def test_inputs_that_cannot_make_a_plane():
    case = build_case("embedding")  # integer token ids
    prob = la.Problem(case.model, nn.CrossEntropyLoss(), (case.X, case.y))
    with pytest.raises(la.LossatlasError, match="floating-point inputs"):
        input_surface(prob, plane="random", quiet=True)
    model, X, y = classifier()
    X = X.clone()
    X[4] = 0
    prob = problem(model, X, y, nn.CrossEntropyLoss())
    with pytest.raises(la.LossatlasError, match="scale='unit'"):
        input_surface(prob, plane="random", anchors=4, quiet=True)
    assert input_surface(prob, plane="random", anchors=4, scale="unit", steps=3, quiet=True)
    one = nn.Linear(1, 1)
    prob = la.Problem(one, nn.MSELoss(), (torch.randn(5, 1), torch.randn(5, 1)))
    with pytest.raises(la.LossatlasError, match="at least 2"):
        input_surface(prob, plane="random", quiet=True)
    with pytest.raises(TypeError):
        input_surface(prob, "random")  # keyword-only


def test_figure_writes_png_and_svg_and_rejects_other_suffixes(tmp_path):
    model, X, y = classifier()
    prob = problem(model, X, y, nn.CrossEntropyLoss())
    with_prediction = input_surface(prob, features=(1, 3), anchors=5, steps=12, quiet=True)
    path = plot_input_surface(with_prediction, tmp_path / "plane.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
    several = input_surface(prob, plane="gradient", anchors=[1, 2], steps=12, quiet=True)
    assert plot_input_surface(several, tmp_path / "sub" / "g.svg", log=True).stat().st_size > 0
    model, Xr, yr = regression()
    regr = input_surface(problem(model, Xr, yr, nn.MSELoss()), target=true_fn, steps=9, quiet=True)
    assert plot_input_surface(regr, tmp_path / "r.pdf", log=True).stat().st_size > 0
    with pytest.raises(la.LossatlasError, match="cannot save a figure"):
        plot_input_surface(with_prediction, tmp_path / "plane.txt")
    assert not (tmp_path / "plane.txt").exists()
