"""Curves between minima (mode connectivity): an analytic pass around a ridge, coefficients in
closed form, and losses along the curve against hand evaluation and brute-force model copies."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas.core.directions import Directions
from lossatlas.core.engine import Evaluator
from lossatlas.core.metrics import error
from lossatlas.core.problem import Problem
from lossatlas.errors import LossatlasError
from lossatlas.io.storage import load, save
from lossatlas.minima.curves import Curve, CurveLosses, coefficients, curve_losses, fit_curve
from lossatlas.plot.curves import plot_curve
from tests.oracles.cases import build_case
from tests.oracles.landscape import evaluate, moved_copy

CE = nn.CrossEntropyLoss()


# -- an analytic landscape: two minima, a ridge on the segment between them, a pass around it --
def f_torch(x, y):
    """Double well in x, a valley floor y = 0, a bump at (0, -0.05) right on the segment."""
    return 0.2 * (x**2 - 1) ** 2 + y**2 + 3 * torch.exp(-(x**2 + (y + 0.05) ** 2) / 0.1)


def f_numpy(p: np.ndarray) -> np.ndarray:
    x, y = p[..., 0], p[..., 1]
    return 0.2 * (x**2 - 1) ** 2 + y**2 + 3 * np.exp(-(x**2 + (y + 0.05) ** 2) / 0.1)


class Toy(nn.Module):
    def __init__(self, w=(0.3, 0.4)) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return f_torch(self.w[0], self.w[1]).expand(x.shape[0])


def toy_problem() -> Problem:
    X, y = torch.zeros(6, 1, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    return Problem(Toy(), lambda out, _: out.mean(), (X, y))


A = {"w": torch.tensor([-1.0, 0.0], dtype=torch.float64)}
B = {"w": torch.tensor([1.0, 0.0], dtype=torch.float64)}


def by_hand(curve: Curve, t: np.ndarray) -> np.ndarray:
    """phi(t) in float64 numpy, from the closed forms (not from `curve.coefficients`)."""
    P = np.stack([p["w"].numpy() for p in curve.control_points])
    t = t[:, None]
    if curve.kind == "bezier":
        return (1 - t) ** 2 * P[0] + 2 * t * (1 - t) * P[1] + t**2 * P[2]
    nodes = np.linspace(0, 1, len(P))
    return np.stack([np.interp(t[:, 0], nodes, P[:, j]) for j in range(2)], axis=1)


def chord_barrier(t: np.ndarray, loss: np.ndarray) -> float:
    return max(loss[i] - ((1 - t[i]) * loss[0] + t[i] * loss[-1]) for i in range(len(t)))


@pytest.mark.parametrize("kind, bends", [("bezier", 1), ("chain", 2)])
def test_curve_goes_around_the_ridge(kind, bends):
    problem = toy_problem()
    curve = fit_curve(
        problem, A, B, kind=kind, bends=bends, steps=300, lr=0.05, optimizer="adam", quiet=True
    )
    cl = curve_losses(problem, curve, steps=81)
    t = np.linspace(0, 1, 81)
    # The engine's losses are f at phi(t) and at the segment's points, both worked out by hand.
    np.testing.assert_allclose(cl.loss, f_numpy(by_hand(curve, t)), rtol=1e-12, atol=1e-14)
    line = (1 - t)[:, None] * A["w"].numpy() + t[:, None] * B["w"].numpy()
    np.testing.assert_allclose(cl.line_loss, f_numpy(line), rtol=1e-12, atol=1e-14)
    assert cl.barrier == pytest.approx(chord_barrier(t, cl.loss), abs=1e-15)
    assert cl.line_barrier == pytest.approx(chord_barrier(t, cl.line_loss), abs=1e-15)
    # The segment climbs the bump: f(0, 0) = 0.2 + 3 exp(-0.025) = 3.126; ends ~1.4e-4.
    assert cl.line_barrier == pytest.approx(3.1258, abs=1e-3)
    # Measured: Bezier 0.675, chain (2 bends) 1.78: the curve bends around the bump.
    limit = 0.25 if kind == "bezier" else 0.6
    assert cl.barrier < limit * cl.line_barrier
    middle = curve.control_points[1:-1]
    assert max(abs(float(p["w"][1])) for p in middle) > 0.15  # left the segment (y = 0)
    assert curve.history["loss"].shape == curve.history["t"].shape == (300,)
    late, early = curve.history["loss"][-100:].mean(), curve.history["loss"][:100].mean()
    assert late < early


def test_coefficients_closed_forms():
    t = np.concatenate([[0.0, 1.0], np.random.default_rng(0).random(50), [1 / 3, 2 / 3, 0.5]])
    bez = coefficients("bezier", 3, t)
    np.testing.assert_allclose(bez, np.stack([(1 - t) ** 2, 2 * t * (1 - t), t**2], 1), 0, 1e-15)
    np.testing.assert_allclose(bez.sum(1), 1, rtol=0, atol=1e-15)
    for k in (1, 2, 4):
        chain = coefficients("chain", k + 2, t)
        np.testing.assert_allclose(chain.sum(1), 1, rtol=0, atol=1e-15)
        assert (chain >= 0).all() and ((chain > 0).sum(1) <= 2).all()
    for rows in (bez, coefficients("chain", 4, t)):  # exactly the ends at t = 0 and t = 1
        assert rows[0].tolist() == [1.0] + [0.0] * (rows.shape[1] - 1)
        assert rows[1].tolist() == [0.0] * (rows.shape[1] - 1) + [1.0]


def test_points_pass_through_the_ends_and_bends():
    gen = torch.Generator().manual_seed(3)
    pts = tuple({"w": torch.randn(2, 3, generator=gen, dtype=torch.float64)} for _ in range(4))
    chain = Curve("chain", pts)
    bez = Curve("bezier", pts[:3])
    for curve in (chain, bez):
        assert torch.equal(curve.point(0.0)["w"], curve.control_points[0]["w"])
        assert torch.equal(curve.point(1.0)["w"], curve.control_points[-1]["w"])
    for i in range(4):  # the chain passes through bend i at t = i / 3 ...
        torch.testing.assert_close(chain.point(i / 3)["w"], pts[i]["w"], rtol=0, atol=1e-15)
    for i in range(3):  # ... and is linear in between
        for s in (0.25, 0.5, 0.8):
            want = (1 - s) * pts[i]["w"] + s * pts[i + 1]["w"]
            torch.testing.assert_close(chain.point((i + s) / 3)["w"], want, rtol=0, atol=1e-14)
    t = 0.3
    want = (1 - t) ** 2 * pts[0]["w"] + 2 * t * (1 - t) * pts[1]["w"] + t**2 * pts[2]["w"]
    torch.testing.assert_close(bez.point(t)["w"], want, rtol=0, atol=1e-15)


def mlp_setup(dtype=torch.float64):
    case_a, case_b = build_case("mlp", seed=0), build_case("mlp", seed=1)
    batches = case_a.batches(16)  # uneven: 16, 16, 16, 10
    problem = Problem(case_a.model, CE, batches, metrics={"error": error}, dtype=dtype)
    return problem, case_a, case_b


def test_curve_losses_match_the_engine_and_brute_force():
    problem, case_a, case_b = mlp_setup()
    curve = fit_curve(
        problem, case_a.model, case_b.model, kind="chain", bends=2, steps=5, lr=0.05, quiet=True
    )
    cl = curve_losses(problem, curve, steps=7)
    zero = {k: torch.zeros_like(w) for k, w in problem.params.items()}
    for end, i in ((case_a.model, 0), (case_b.model, -1)):
        weights = {k: p.detach().double() for k, p in end.named_parameters()}
        ev = Evaluator(problem, Directions((weights,)), center=zero)
        alone = ev(np.array([[1.0]]))
        assert cl.loss[i] == alone.loss[0] and cl.line_loss[i] == alone.loss[0]  # bit-equal
        assert cl.metrics["error"][i] == alone.metrics["error"][0]
        plain = evaluate(copy.deepcopy(end).double(), CE, case_a.batches(16), dtype=torch.float64)
        assert abs(cl.loss[i] - plain[0]) <= 1e-12
    # Interior points: a model copy per t with phi(t) written in, loss over the batches.
    nodes = np.linspace(0, 1, 4)
    model = case_a.model
    for j, t in enumerate(cl.t):
        hats = np.maximum(0, 1 - np.abs(t - nodes) * 3)
        moved = moved_copy(
            model,
            list(zip(hats, curve.control_points)),
            center={k: 0 * w for k, w in zero.items()},
            dtype=torch.float64,
        )
        loss, metrics = evaluate(
            moved, CE, case_a.batches(16), metrics={"error": error}, dtype=torch.float64
        )
        assert cl.loss[j] == pytest.approx(loss, rel=1e-12, abs=1e-12)
        assert cl.metrics["error"][j] == pytest.approx(metrics["error"], abs=1e-12)
        ends = [(1 - t, curve.control_points[0]), (t, curve.control_points[-1])]
        moved = moved_copy(model, ends, center=zero, dtype=torch.float64)
        line = evaluate(moved, CE, case_a.batches(16), dtype=torch.float64)[0]
        assert cl.line_loss[j] == pytest.approx(line, rel=1e-12, abs=1e-12)


def test_full_batch_steps_weigh_samples_like_the_engine():
    # The first recorded loss is at phi(t_0) on the initial (straight) curve, before any step.
    problem, case_a, case_b = mlp_setup()
    curve = fit_curve(problem, case_a.model, case_b.model, steps=1, lr=1e-3, quiet=True)
    t0 = curve.history["t"][0]
    a, b = curve.control_points[0], curve.control_points[-1]
    zero = {k: 0 * v for k, v in a.items()}
    moved = moved_copy(case_a.model, [(1 - t0, a), (t0, b)], center=zero, dtype=torch.float64)
    want = evaluate(moved, CE, case_a.batches(16), dtype=torch.float64)[0]
    assert curve.history["loss"][0] == pytest.approx(want, rel=1e-12)


def test_seeded_and_side_effect_free():
    problem, case_a, case_b = mlp_setup(dtype=torch.float32)
    before = {k: v.clone() for k, v in case_a.model.state_dict().items()}
    before_b = {k: v.clone() for k, v in case_b.model.state_dict().items()}
    own = {k: v.clone() for k, v in problem.params.items()}
    rng = torch.get_rng_state()
    kw = dict(kind="chain", bends=2, steps=12, lr=0.05, optimizer="momentum", batch_size=16)
    runs = [
        fit_curve(problem, case_a.model, case_b.model, seed=s, quiet=True, **kw) for s in (4, 4, 5)
    ]
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in case_a.model.state_dict().items():
        assert torch.equal(v, before[k]) and torch.equal(case_b.model.state_dict()[k], before_b[k])
    assert all(torch.equal(problem.params[k], v) for k, v in own.items())
    same, other = runs[1], runs[2]
    np.testing.assert_array_equal(runs[0].history["t"], same.history["t"])
    np.testing.assert_array_equal(runs[0].history["loss"], same.history["loss"])
    for p, q in zip(runs[0].control_points, same.control_points):
        assert all(torch.equal(p[k], q[k]) for k in p)
    assert not np.array_equal(runs[0].history["t"], other.history["t"])
    pts = runs[0].control_points
    assert all(v.dtype == torch.float64 and v.device.type == "cpu" for p in pts for v in p.values())
    assert pts[1]["0.weight"].ne(pts[0]["0.weight"] * 2 / 3 + pts[-1]["0.weight"] / 3).any()


def test_mlp_end_to_end_stores_and_plots(tmp_path):
    case_a, case_b = build_case("mlp", seed=0), build_case("mlp", seed=1)
    problem = Problem(case_a.model, CE, (case_a.X, case_a.y), metrics={"error": error})
    curve = fit_curve(
        problem,
        problem,
        case_b.model,
        steps=10,
        lr=0.1,
        optimizer="adam",
        batch_size=20,
        quiet=True,
    )
    cl = curve_losses(problem, curve, steps=9)
    assert cl.loss.shape == cl.line_loss.shape == cl.metrics["error"].shape == (9,)
    assert np.isfinite(cl.loss).all() and cl.barrier >= 0 and cl.line_barrier >= 0
    for record in (curve, cl):
        back = load(save(record, tmp_path / f"{type(record).__name__}.h5"))
        assert type(back) is type(record)
    back = load(tmp_path / "Curve.h5")
    assert isinstance(back, Curve) and back.kind == "bezier" and len(back.control_points) == 3
    assert torch.equal(back.control_points[1]["0.weight"], curve.control_points[1]["0.weight"])
    np.testing.assert_array_equal(back.history["loss"], curve.history["loss"])
    back = load(tmp_path / "CurveLosses.h5")
    assert isinstance(back, CurveLosses) and back.barrier == cl.barrier
    np.testing.assert_array_equal(back.line_metrics["error"], cl.line_metrics["error"])
    for name, log in (("curve.png", False), ("curve.svg", True)):
        assert plot_curve(cl, tmp_path / name, log=log).stat().st_size > 0
    plain = curve_losses(toy_problem(), fit_curve(toy_problem(), A, B, steps=3, quiet=True))
    assert plot_curve(plain, tmp_path / "toy.pdf").exists()  # no metrics: one panel


def test_bad_inputs_are_one_line_errors():
    problem = toy_problem()
    curve = fit_curve(problem, A, B, steps=2, quiet=True)
    bad = [
        lambda: fit_curve(problem, A, B, kind="chain", bends=0),
        lambda: fit_curve(problem, A, B, kind="bezier", bends=2),
        lambda: fit_curve(problem, A, B, kind="spline"),
        lambda: fit_curve(problem, A, B, steps=0),
        lambda: fit_curve(problem, A, B, lr=-1.0),
        lambda: fit_curve(problem, A, B, optimizer="adma"),
        lambda: fit_curve(problem, A, nn.Linear(2, 2)),
        lambda: fit_curve(problem, {"w": torch.zeros(3)}, B),
        lambda: fit_curve(problem, A, {"w": torch.tensor([math.nan, 0.0])}),
        lambda: fit_curve(problem, A, "model.pt"),
        lambda: fit_curve(problem, A, B, kind="chain", bends=2, init=[A]),
        lambda: fit_curve(problem, A, B, init="random"),
        lambda: curve_losses(problem, curve, steps=1),
        lambda: curve_losses(problem, "curve"),
        lambda: curve_losses(mlp_setup()[0], curve),
        lambda: curve.coefficients([1.5]),
        lambda: plot_curve(curve_losses(problem, curve, steps=3), "curve.txt"),
    ]
    for call in bad:
        with pytest.raises(LossatlasError) as info:
            call()
        assert "\n" not in str(info.value)
