"""Interpolation between models, barriers and the plane through three models, against forward
passes of hand-built model copies (float64), closed forms and the engine at the models."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from lossatlas.core.engine import Evaluator
from lossatlas.io import storage
from lossatlas.minima.interpolation import (
    BarrierMatrix,
    Interpolation,
    barrier,
    barrier_matrix,
    interpolate,
    interpolation_grid,
    plane_through,
)
from lossatlas.plot.interpolation import figure_interpolation, plot_barriers, plot_interpolation
from tests.oracles.cases import build_case
from tests.oracles.landscape import evaluate

CE = nn.CrossEntropyLoss()


def one_line_error(match: str):
    return pytest.raises(la.LossatlasError, match=match)


def setup(name: str = "mlp", metrics=None):
    """A float64 model, its problem and the data as one batch."""
    case = build_case(name)
    model = case.model.double()
    metrics = {"accuracy": la.accuracy} if metrics is None else metrics
    problem = la.Problem(model, CE, data=(case.X, case.y), dtype="float64", metrics=metrics)
    return model, problem, [(case.X.double(), case.y)]


def perturbed(model: nn.Module, seed: int, scale: float = 0.5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: p.detach().double() + scale * torch.randn(p.shape, generator=g, dtype=torch.float64)
        for k, p in model.named_parameters()
    }


def holding(model: nn.Module, params, buffers=None) -> nn.Module:
    """A float64 copy of `model` holding `params` (built by hand, not through lossatlas)."""
    moved = copy.deepcopy(model).double().eval()
    state = {**params, **(buffers or {})}
    with torch.no_grad():
        for name, value in moved.state_dict(keep_vars=True).items():
            if name in state:
                value.copy_(state[name])
    return moved


def engine_at(problem: la.Problem, params, buffers=None):
    """The engine's loss and metrics at a Problem's own weights (zero offset along a direction).

    Without the input-layer shortcut, which would give the first layer's output as its value at
    the weights plus 0 times its value along the direction, both from one stacked product, so
    rounded otherwise than the plain forward.
    """
    at = problem.with_weights(params, buffers)
    ones = {k: torch.ones_like(w) for k, w in at.params.items()}
    return Evaluator(at, [ones], shortcut=False)(np.zeros((1, 1)))


@pytest.mark.parametrize("name", ["mlp", "wide_mlp", "cnn_bn"])
@pytest.mark.parametrize("margin", [0.0, 0.25])
def test_ends_are_the_models_exactly(name, margin):
    # wide_mlp's inner points take the input-layer shortcut; cnn_bn takes the sequential path.
    model, problem, batches = setup(name)
    a, b = perturbed(model, 1), perturbed(model, 2)
    r = interpolate(problem, a, b, steps=13, margin=margin)
    assert len(r.t) == 13 and r.t[0] == -margin and r.t[-1] == 1 + margin
    for params, end in ((a, 0.0), (b, 1.0)):
        (i,) = np.flatnonzero(r.t == end)
        ref = engine_at(problem, params)
        assert r.loss[i] == ref.loss[0]  # bit for bit: 0 + 1 * theta + 0 * other is theta
        assert r.metrics["accuracy"][i] == ref.metrics["accuracy"][0]
        plain, plain_metrics = evaluate(
            holding(model, params), CE, batches, metrics=problem.metrics
        )
        assert r.loss[i] == pytest.approx(plain, rel=1e-12, abs=0)
        assert r.metrics["accuracy"][i] == plain_metrics["accuracy"]


@pytest.mark.parametrize("name", ["mlp", "wide_mlp"])
def test_ends_are_exact_in_float32_too(name):
    case = build_case(name)
    problem = la.Problem(case.model, CE, data=(case.X, case.y), metrics={"accuracy": la.accuracy})
    assert problem.dtype == torch.float32
    a, b = perturbed(case.model, 1), perturbed(case.model, 2)  # cast to float32 by both
    r = interpolate(problem, a, b, steps=9)
    assert r.loss[0] == engine_at(problem, a).loss[0]
    assert r.loss[-1] == engine_at(problem, b).loss[0]


def test_interior_points_match_models_built_by_hand():
    model, problem, batches = setup()
    a, b = perturbed(model, 1), perturbed(model, 2, scale=1.5)
    r = interpolate(problem, a, b, steps=11, margin=0.3)
    assert 0.0 in r.t and 1.0 in r.t and np.all(np.diff(r.t) > 0)
    for t, loss, acc in zip(r.t, r.loss, r.metrics["accuracy"]):
        moved = holding(model, {k: (1 - t) * a[k] + t * b[k] for k in a})
        want, want_metrics = evaluate(moved, CE, batches, metrics=problem.metrics)
        assert loss == pytest.approx(want, rel=1e-12, abs=0)
        assert acc == pytest.approx(want_metrics["accuracy"], abs=1e-12)
    assert r.provenance["n_points"] == 11 and r.provenance["n_model_calls"] >= 1
    assert r.settings["distance"] == pytest.approx(
        float(torch.cat([(b[k] - a[k]).reshape(-1) for k in a]).norm()), rel=1e-12
    )


def test_every_kind_of_model_argument_gives_the_same_path():
    model, problem, _ = setup()
    a, b = perturbed(model, 1), perturbed(model, 2)
    ref = interpolate(problem, a, b, steps=7)
    record = SimpleNamespace(params=b, buffers={}, name="rec")
    state = holding(model, a).state_dict()
    for first, second in [
        (problem.with_weights(a), holding(model, b)),
        (holding(model, a), record),
        (state, {k: v.numpy() for k, v in b.items()}),
    ]:
        r = interpolate(problem, first, second, steps=7)
        np.testing.assert_array_equal(r.loss, ref.loss)
    assert interpolate(problem, a, record, steps=3).names == ("a", "b")
    named = SimpleNamespace(params=a, name="first")
    assert interpolate(problem, named, record, steps=3).label == "first → rec"


def test_a_model_with_itself_has_no_barrier():
    model, problem, _ = setup()
    a = perturbed(model, 1)
    assert interpolate(problem, a, a, steps=2).loss_barrier == 0.0  # only the exact ends
    r = interpolate(problem, a, a, steps=41)
    # (1 - t) w + t w rounds to within an ulp of w, not always to w, so the loss wobbles at
    # the level of float64 rounding; the chord term is exact at the ends, so it is never < 0.
    assert 0.0 <= r.loss_barrier <= 1e-15
    assert np.ptp(r.loss) <= 1e-15
    assert r.error_barrier == 0.0  # accuracy does not notice it, and the chord is flat


class DoubleWell(nn.Module):
    """L(w) = (|w|^2 - 1)^2, whatever the input: a loss with a closed form along any line."""

    def __init__(self, n: int = 5) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.w**2).sum() - 1) ** 2 + 0 * x[:, 0]


def well_problem(**kw) -> la.Problem:
    data = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    return la.Problem(DoubleWell(), lambda out, y: out.mean(), data, **kw)


def well_loss(t, a, b):
    """(|w(t)|^2 - 1)^2 with |w(t)|^2 = (1 - t)^2 |a|^2 + 2 t (1 - t) a.b + t^2 |b|^2."""
    sq = (1 - t) ** 2 * (a @ a) + 2 * t * (1 - t) * (a @ b) + t**2 * (b @ b)
    return (sq - 1) ** 2


def test_barrier_of_a_double_well_has_its_closed_form():
    problem = well_problem()
    rng = np.random.default_rng(0)
    a, b = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 5)))
    cos = a @ b
    r = interpolate(problem, {"w": torch.tensor(a)}, {"w": torch.tensor(b)}, steps=21, margin=0)
    np.testing.assert_allclose(r.loss, well_loss(r.t, a, b), rtol=1e-12, atol=1e-15)
    # Both ends are minima (|a| = |b| = 1): L(t) = 4 t^2 (1 - t)^2 (1 - cos)^2, highest at 1/2.
    assert r.loss_barrier == pytest.approx((1 - cos) ** 2 / 4, rel=1e-12)
    assert r.argmax_t == 0.5 and not r.monotonic
    assert r.error is None and r.error_barrier is None and r.settings["error_metric"] is None

    # Unequal ends: the barrier above the chord, from the closed form on the same grid.
    a2, b2 = 1.3 * a, 0.4 * b
    r = interpolate(problem, {"w": torch.tensor(a2)}, {"w": torch.tensor(b2)}, steps=101)
    exact = well_loss(r.t, a2, b2)
    gap = exact - ((1 - r.t) * exact[0] + r.t * exact[-1])
    assert r.loss_barrier == pytest.approx(gap.max(), rel=1e-10)
    assert r.argmax_t == r.t[np.argmax(gap)]


def test_monotonic_descent_from_the_origin_to_the_well():
    problem = well_problem()
    e = torch.zeros(5, dtype=torch.float64)
    e[0] = 1
    r = interpolate(problem, {"w": torch.zeros(5)}, {"w": e}, steps=21)  # L = (t^2 - 1)^2
    np.testing.assert_allclose(r.loss, (r.t**2 - 1) ** 2, rtol=1e-12, atol=1e-15)
    assert r.monotonic
    assert not interpolate(problem, {"w": 2 * e}, {"w": -e}, steps=21).monotonic


def test_error_barriers():
    model, problem, _ = setup()
    a, b = perturbed(model, 1, 2.0), perturbed(model, 2, 2.0)
    r = interpolate(problem, a, b, steps=21)
    assert r.settings["error_metric"] == "1 - accuracy"
    np.testing.assert_array_equal(r.error, 1 - r.metrics["accuracy"])
    e = r.error
    assert r.error_barrier == pytest.approx(np.max(e - ((1 - r.t) * e[0] + r.t * e[-1])), abs=1e-15)
    assert r.error_barrier > 0  # this pair has one
    height, _ = barrier(r.t, e, baseline="mean")  # Frankle et al.'s form
    assert height == pytest.approx(e.max() - (e[0] + e[-1]) / 2, abs=1e-15)

    _, with_error, _ = setup(metrics={"error": la.error})
    same = interpolate(with_error, a, b, steps=21)
    assert same.settings["error_metric"] == "error"
    np.testing.assert_allclose(same.error, r.error, atol=1e-12)
    assert interpolate(problem, a, b, steps=5, metric=None).error_barrier is None
    acc = interpolate(problem, a, b, steps=5, metric="accuracy")
    np.testing.assert_array_equal(acc.error, acc.metrics["accuracy"])
    _, bare, _ = setup(metrics={})
    assert interpolate(bare, a, b, steps=5).error_barrier is None
    with one_line_error("no metric 'top5'"):
        interpolate(problem, a, b, metric="top5")


def trained_and_permuted(model: nn.Module, batches, n: int = 3) -> list[dict[str, torch.Tensor]]:
    """A briefly trained MLP and copies with permuted hidden units: one function, n weights."""
    net = copy.deepcopy(model).double()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    ((x, y),) = batches
    for _ in range(150):
        opt.zero_grad()
        CE(net(x), y).backward()
        opt.step()
    w = {k: p.detach().clone() for k, p in net.named_parameters()}
    out = []
    for seed in range(n):
        perm = (
            torch.randperm(8, generator=torch.Generator().manual_seed(seed))
            if seed
            else torch.arange(8)
        )
        out.append(
            {
                "0.weight": w["0.weight"][perm],
                "0.bias": w["0.bias"][perm],
                "2.weight": w["2.weight"][:, perm],
                "2.bias": w["2.bias"],
            }
        )
    return out


def test_barrier_matrix_is_the_pairwise_interpolations():
    model, problem, batches = setup()
    models = trained_and_permuted(model, batches)
    m = barrier_matrix(problem, models, steps=11, quiet=True)
    assert m.names == ("model 0", "model 1", "model 2")
    for grid in (m.loss_barrier, m.error_barrier):
        np.testing.assert_array_equal(grid, grid.T)
        np.testing.assert_array_equal(np.diag(grid), 0.0)
    for i in range(3):
        for j in range(i + 1, 3):
            r = interpolate(problem, models[i], models[j], steps=11)
            assert m.loss_barrier[i, j] == r.loss_barrier
            assert m.error_barrier[i, j] == r.error_barrier
    for i in range(3):
        assert m.endpoint_loss[i] == engine_at(problem, models[i]).loss[0]
    assert m.loss_barrier[0, 1] > 0.1 and m.loss_barrier[0, 2] > 0.1  # permutations: barriers
    np.testing.assert_allclose(m.endpoint_loss, m.endpoint_loss[0], rtol=1e-12)  # one function
    assert m.provenance["n_pairs"] == 3 and m.provenance["n_points"] == 33

    named = barrier_matrix(problem, dict(zip("xyz", models)), steps=3, metric=None, quiet=True)
    assert named.names == ("x", "y", "z") and named.error_barrier is None
    records = [SimpleNamespace(params=p, name=f"seed {i}") for i, p in enumerate(models[:2])]
    assert barrier_matrix(problem, records, steps=3, quiet=True).names == ("seed 0", "seed 1")
    with one_line_error("at least 2 models"):
        barrier_matrix(problem, models[:1])
    with one_line_error("3 distinct labels"):
        barrier_matrix(problem, models, names=["p", "q"])
    with one_line_error("3 distinct labels"):
        barrier_matrix(problem, models, names=["p", "p", "q"])


def flat(params) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflat(vec: torch.Tensor, like) -> dict[str, torch.Tensor]:
    return {
        k: p.reshape(like[k].shape)
        for k, p in zip(like, vec.split([w.numel() for w in like.values()]))
    }


def test_plane_through_three_models(tmp_path):
    model, problem, batches = setup()
    a, b = perturbed(model, 1), perturbed(model, 2)
    xa, ab = flat(a), flat(b) - flat(a)
    side = torch.randn(ab.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    side = side - (side @ ab) / (ab @ ab) * ab  # orthogonal to b - a
    side = 0.7 * float(ab.norm()) * side / side.norm()
    c = unflat(xa + 0.5 * ab + side, a)  # above the middle of a-b
    s = plane_through(problem, a, b, c, steps=7, margin=0.25, quiet=True)
    d_ab, d_c = float(ab.norm()), float(side.norm())
    want = {"a": [[0.0, 0.0]], "b": [[d_ab, 0.0]], "c": [[0.5 * d_ab, d_c]]}
    assert list(s.paths) == ["a", "b", "c"]
    for label, xy in want.items():
        np.testing.assert_allclose(s.paths[label], xy, rtol=1e-12, atol=1e-12)
    u, v = (flat(d) for d in s.directions)
    assert float(u.norm()) == pytest.approx(1, abs=1e-14)
    assert float(v.norm()) == pytest.approx(1, abs=1e-14)
    assert abs(float(u @ v)) < 1e-14
    assert s.directions.settings["kind"] == "models-plane"
    x, y = s.coords  # margins of a quarter of the extent put the models on grid nodes
    np.testing.assert_allclose(x, d_ab * np.linspace(-0.25, 1.25, 7), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, d_c * np.linspace(-0.25, 1.25, 7), rtol=1e-12, atol=1e-12)
    for params, node in ((a, (1, 1)), (b, (5, 1)), (c, (3, 5))):
        direct, _ = evaluate(holding(model, params), CE, batches)
        assert s.loss[node] == pytest.approx(direct, rel=1e-10)
    s.save(tmp_path / "plane.h5")
    np.testing.assert_array_equal(la.load(tmp_path / "plane.h5").paths["c"], s.paths["c"])
    out = la.plot_paths(s, s.paths, tmp_path / "plane.png", dpi=50)
    assert out.stat().st_size > 1000

    with one_line_error("collinear"):
        plane_through(problem, a, b, unflat(xa + 2.0 * ab, a), steps=3, quiet=True)
    with one_line_error("are equal"):
        plane_through(problem, a, a, c, steps=3, quiet=True)
    with one_line_error("are equal"):
        plane_through(problem, a, b, a, steps=3, quiet=True)
    with one_line_error("margin"):
        plane_through(problem, a, b, c, margin=-1)
    with one_line_error("steps"):
        plane_through(problem, a, b, c, steps=1)


def test_buffers_are_the_problems():
    model, problem, _ = setup("cnn_bn")
    other = holding(model, perturbed(model, 2))
    with torch.no_grad():
        other.bn1.running_mean += 1.0  # its own statistics, which the path does not use
    with pytest.warns(la.LossatlasWarning, match="b have BatchNorm statistics of their own"):
        r = interpolate(problem, model, other, steps=5)
    assert r.settings["buffers_differ"] == ["b"] and r.settings["bn"] == problem.bn
    params = {k: p.detach() for k, p in other.named_parameters()}
    assert r.loss[-1] == engine_at(problem, params).loss[0]
    own = engine_at(problem, params, dict(other.named_buffers())).loss[0]
    assert abs(r.loss[-1] - own) > 1e-6


def test_wrong_inputs_raise_one_line_errors():
    model, problem, _ = setup()
    a, b = perturbed(model, 1), perturbed(model, 2)
    wide = build_case("wide_mlp").model
    cases = [
        (lambda: interpolate(problem, a, wide), "does not fit the problem's model"),
        (lambda: interpolate(problem, {**a, "0.weight": torch.zeros(3, 3)}, b), "wrong shape"),
        (lambda: interpolate(problem, {k: a[k] for k in list(a)[1:]}, b), "missing"),
        (lambda: interpolate(problem, {**a, "extra": torch.zeros(1)}, b), "unknown"),
        (lambda: interpolate(problem, "model.pt", b), "must be a Problem, an nn.Module"),
        (lambda: interpolate(problem, {**a, "0.bias": a["0.bias"] * np.nan}, b), "non-finite"),
        (lambda: interpolate(model, a, b), "expected a lossatlas.Problem"),
        (lambda: interpolate(problem, a, b, steps=1), "steps must be"),
        (lambda: interpolate(problem, a, b, steps=2.5), "steps must be"),
        (lambda: interpolate(problem, a, b, margin=-0.1), "margin must be"),
        (lambda: interpolate(problem, a, b, margin=float("nan")), "margin must be"),
        (lambda: interpolate(problem, a, b, steps=3, margin=0.2), "steps >= 4"),
        (lambda: interpolate(problem, a, b, names=["x"]), "2 distinct labels"),
        (lambda: barrier_matrix(problem, [a, wide]), "does not fit"),
    ]
    for call, match in cases:
        with one_line_error(match) as info:
            call()
        assert "\n" not in str(info.value)


def test_grid_holds_the_ends_exactly():
    np.testing.assert_array_equal(interpolation_grid(5), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(interpolation_grid(4, 0.1), [-0.1, 0, 1, 1.1])
    uniform = interpolation_grid(31, 0.25)  # the margin is 5 steps of 0.05
    np.testing.assert_allclose(np.diff(uniform), 0.05, rtol=1e-12)
    for steps, margin in [(7, 0.2), (40, 0.33), (6, 3.0)]:
        t = interpolation_grid(steps, margin)
        assert len(t) == steps and t[0] == -margin and t[-1] == 1 + margin
        assert 0.0 in t and 1.0 in t and np.all(np.diff(t) > 0)


def test_records_are_stored_and_loaded(tmp_path):
    model, problem, _ = setup()
    models = [perturbed(model, s) for s in range(3)]
    r = interpolate(problem, models[0], models[1], steps=9, margin=0.25)
    back = storage.load(storage.save(r, tmp_path / "r.h5"))
    assert isinstance(back, Interpolation) and back.names == r.names
    np.testing.assert_array_equal(back.loss, r.loss)
    np.testing.assert_array_equal(back.metrics["accuracy"], r.metrics["accuracy"])
    assert back.loss_barrier == r.loss_barrier and back.settings == r.settings
    m = barrier_matrix(problem, models, steps=5, quiet=True)
    back = storage.load(storage.save(m, tmp_path / "m.h5"))
    assert isinstance(back, BarrierMatrix) and back.names == m.names
    np.testing.assert_array_equal(back.loss_barrier, m.loss_barrier)
    np.testing.assert_array_equal(back.error_barrier, m.error_barrier)


def test_figures(tmp_path):
    model, problem, _ = setup()
    models = [perturbed(model, s, 2.0) for s in range(3)]
    one = interpolate(problem, models[0], models[1], steps=11, margin=0.2)
    two = interpolate(problem, models[0], models[2], steps=11)
    for name in ("one.png", "one.svg"):
        assert plot_interpolation(one, tmp_path / name, dpi=60).stat().st_size > 1000
    assert (
        plot_interpolation([one, two], tmp_path / "two.png", log=True, dpi=60).stat().st_size > 1000
    )
    lines = figure_interpolation([one, two]).legends[0].get_texts()
    assert [t.get_text()[:9] for t in lines] == ["a → b (1)", "a → b (2)"]
    fig = figure_interpolation({"first": one, "second": two})
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "1 - accuracy"
    svg = plot_interpolation({"first": one}, tmp_path / "named.svg").read_text()
    assert "first" in svg
    bare = interpolate(problem, models[0], models[1], steps=5, metric=None)
    assert len(figure_interpolation(bare).axes) == 1

    m = barrier_matrix(problem, models, steps=5, quiet=True)
    for which in ("loss", "error"):
        for suffix in ("png", "svg"):
            out = plot_barriers(m, tmp_path / f"{which}.{suffix}", which=which, dpi=60)
            assert out.stat().st_size > 1000
    assert "model 2" in (tmp_path / "loss.svg").read_text()
    no_error = barrier_matrix(problem, models, steps=3, metric=None, quiet=True)
    with one_line_error("no error barriers"):
        plot_barriers(no_error, tmp_path / "e.png", which="error")
    with one_line_error("which must be"):
        plot_barriers(m, tmp_path / "e.png", which="accuracy")
    with one_line_error("cannot save a figure"):
        plot_barriers(m, tmp_path / "m.txt")
    with one_line_error("cannot save a figure"):
        plot_interpolation(one, tmp_path / "i.jpg")
    with one_line_error("an Interpolation"):
        plot_interpolation([m], tmp_path / "i.png")
