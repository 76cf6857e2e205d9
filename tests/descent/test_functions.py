"""Analytic test functions: literature minima, vectorisation, gradients, grids and safe formulas."""

from __future__ import annotations

import builtins
import math

import numpy as np
import pytest
import torch

from lossatlas.descent import functions as lf
from lossatlas.errors import LossatlasError

F64 = torch.float64

# Global minimisers and minimum values from the literature (Jamil & Yang 2013; Himmelblau 1972;
# Styblinski & Tang 1990), written out here independently of the catalogue. Where the literature
# prints 4 to 6 digits, the extra digits solve grad f = 0 with the closed-form gradient, so the
# gradient test can be tight; `test_precise_minima_round_to_the_printed_literature_values`
# checks that they agree with the printed ones.
LITERATURE = {
    "bowl": ([(2.0, -3.0)], 0.0),
    "ill_conditioned": ([(0.0, 0.0)], 0.0),
    "rosenbrock": ([(1.0, 1.0)], 0.0),
    "himmelblau": (
        [
            (3.0, 2.0),
            (-2.805118086952745, 3.131312518250573),
            (-3.779310253377747, -3.283185991286170),
            (3.584428340330492, -1.848126526964404),
        ],
        0.0,
    ),
    "beale": ([(3.0, 0.5)], 0.0),
    "booth": ([(1.0, 3.0)], 0.0),
    "rastrigin": ([(0.0, 0.0)], 0.0),
    "ackley": ([(0.0, 0.0)], 0.0),
    "six_hump_camel": (
        [(0.0898420131, -0.7126564030), (-0.0898420131, 0.7126564030)],
        -1.0316284535,
    ),
    "styblinski_tang": ([(-2.903534028, -2.903534028)], -78.33233141),
    "plateau": ([(0.0, 0.0)], 0.0),
}
PRINTED = {  # as usually printed: (point, value, digits)
    "himmelblau": ([(-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)], 0.0, 6),
    "six_hump_camel": ([(0.0898, -0.7126), (-0.0898, 0.7126)], -1.0316, 4),
    "styblinski_tang": ([(-2.903534, -2.903534)], -78.33233, 5),
}
CATALOGUE = [*LITERATURE, "saddle"]
AT_MINIMA = [(name, m) for name, (minima, _) in LITERATURE.items() for m in minima]


@pytest.fixture(autouse=True)
def restore_registry():
    """Tests register functions; put the registry back as it was afterwards."""
    saved = dict(lf.FUNCTIONS)
    yield
    lf.FUNCTIONS.clear()
    lf.FUNCTIONS.update(saved)


def random_points(name: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Uniform float64 points in the function's box."""
    (x0, x1), (y0, y1) = lf.get_function(name).box
    u = torch.rand(*shape, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return torch.stack([x0 + (x1 - x0) * u[..., 0], y0 + (y1 - y0) * u[..., 1]], -1)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message, message
    return message


# --- the catalogue ----------------------------------------------------------------------------


def test_catalogue_is_complete_and_matches_the_literature():
    # A subset: other test modules may have registered functions of their own.
    assert set(CATALOGUE) <= set(lf.list_functions()) and len(CATALOGUE) == 12
    for name, (minima, value) in LITERATURE.items():
        f = lf.get_function(name)
        assert f.name == name and f is lf.FUNCTIONS[name]
        assert len(f.minima) == len(minima), name
        for m in minima:  # every literature minimiser is listed, in any order
            assert min(math.dist(m, c) for c in f.minima) < 1e-8, (name, m)
        assert f.min_value == pytest.approx(value, rel=1e-4, abs=1e-4), name
        (x0, x1), (y0, y1) = f.box
        assert all(x0 < x < x1 and y0 < y < y1 for x, y in minima), name
    saddle = lf.get_function("saddle")
    assert saddle.minima == () and saddle.min_value == -math.inf


def test_standard_boxes():
    assert lf.get_function("bowl").box == ((-6.0, 6.0), (-8.0, 8.0))
    assert lf.get_function("rastrigin").box == ((-5.12, 5.12), (-5.12, 5.12))
    assert lf.get_function("beale").box == ((-4.5, 4.5), (-4.5, 4.5))
    assert lf.get_function("six_hump_camel").box == ((-3.0, 3.0), (-2.0, 2.0))


def test_precise_minima_round_to_the_printed_literature_values():
    for name, (points, value, digits) in PRINTED.items():
        precise, precise_value = LITERATURE[name]
        for p in points:
            assert min(math.dist(p, q) for q in precise) < 10**-digits, (name, p)
        assert round(precise_value, digits) == pytest.approx(value, abs=10**-digits), name


@pytest.mark.parametrize(("name", "minimum"), AT_MINIMA)
def test_value_and_zero_gradient_at_every_known_minimum(name, minimum):
    f = lf.get_function(name)
    value = LITERATURE[name][1]
    p = torch.tensor(minimum, dtype=F64)
    assert float(f(p)) == pytest.approx(value, rel=1e-4, abs=1e-4)
    assert float(f.grad(p).norm()) < 1e-4
    # No point on small rings around the minimiser is lower.
    angles = torch.linspace(0, 2 * math.pi, 33, dtype=F64)[:-1]
    for radius in (1e-3, 1e-2):
        ring = p + radius * torch.stack([angles.cos(), angles.sin()], -1)
        assert float(f(ring).min()) >= float(f(p)) - 1e-12, radius


@pytest.mark.parametrize("name", CATALOGUE)
def test_vectorised_in_float64_and_float32(name):
    f = lf.get_function(name)
    batch = random_points(name, (5, 7), seed=1)
    values = f(batch)
    assert values.shape == (5, 7) and values.dtype == F64
    one_by_one = torch.stack([torch.stack([f(batch[i, j]) for j in range(7)]) for i in range(5)])
    torch.testing.assert_close(values, one_by_one, rtol=1e-12, atol=0)
    grads = f.grad(batch)
    assert grads.shape == (5, 7, 2) and grads.dtype == F64
    torch.testing.assert_close(grads[2, 3], f.grad(batch[2, 3]), rtol=1e-12, atol=0)
    values32 = f(batch.float())
    assert values32.dtype == torch.float32 and f.grad(batch.float()).dtype == torch.float32
    scale = float(values.abs().max())
    torch.testing.assert_close(values32.double(), values, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("name", CATALOGUE)
def test_gradients_match_central_finite_differences(name):
    f = lf.get_function(name)
    points = random_points(name, (12,), seed=2)
    h = 1e-5
    fd = torch.stack(
        [(f(points + h * e) - f(points - h * e)) / (2 * h) for e in torch.eye(2, dtype=F64)], -1
    )
    torch.testing.assert_close(f.grad(points), fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CATALOGUE)
def test_formula_text_agrees_with_the_torch_code(name):
    """The `formula` string, parsed independently of the torch code, gives the same values."""
    f = lf.get_function(name)
    assert f.fn.__doc__ and f.description and "\n" not in f.description
    parsed = lf.register_function(f"{name}_text", f.formula, box=f.box)
    points = random_points(name, (50,), seed=3)
    torch.testing.assert_close(parsed(points), f(points), rtol=1e-12, atol=1e-12)


def test_runs_on_any_device():
    """On the meta device a stray CPU tensor would raise, so this catches hard-coded devices."""
    for name in CATALOGUE:
        f = lf.get_function(name)
        for dtype in (torch.float32, F64):
            out = f(torch.zeros(4, 3, 2, device="meta", dtype=dtype))
            assert out.shape == (4, 3) and out.device.type == "meta" and out.dtype == dtype
    for text in ("sin(x)*pi + 2^y + 1", "cos(pi) * 2"):  # a constant too: it must follow the input
        formula = lf.register_function("meta_formula", text, box=((0, 1), (0, 1)), replace=True)
        out = formula(torch.zeros(5, 2, device="meta"))
        assert out.shape == (5,) and out.device.type == "meta"
    if torch.cuda.is_available():
        for name in CATALOGUE:
            points = random_points(name, (9,))
            f = lf.get_function(name)
            torch.testing.assert_close(f(points.cuda()).cpu(), f(points))
            torch.testing.assert_close(f.grad(points.cuda()).cpu(), f.grad(points))


def test_hessians_of_the_quadratics():
    hessian = torch.autograd.functional.hessian
    ill = hessian(lf.get_function("ill_conditioned").fn, torch.tensor([0.3, -0.2], dtype=F64))
    torch.testing.assert_close(torch.linalg.eigvalsh(ill), torch.tensor([1.0, 50.0], dtype=F64))
    saddle = lf.get_function("saddle")
    origin = torch.zeros(2, dtype=F64)
    assert float(saddle(origin)) == 0.0 and float(saddle.grad(origin).norm()) == 0.0
    eig = torch.linalg.eigvalsh(hessian(saddle.fn, origin))
    assert eig[0] < 0 < eig[1]
    torch.testing.assert_close(eig, torch.tensor([-2.0, 2.0], dtype=F64))
    assert float(saddle(torch.tensor([0.0, 100.0]))) == -10000.0  # unbounded below


def test_ackley_gradient_at_its_cone_tip_is_zero_not_nan():
    g = lf.get_function("ackley").grad(torch.zeros(2))
    assert torch.equal(g, torch.zeros(2))


def test_plateau_stalls_plain_gd_but_not_momentum():
    f = lf.get_function("plateau")
    start, lr, steps = (2.0, 2.0), 0.1, 400

    def run(momentum: float) -> torch.Tensor:
        p = torch.tensor(start, dtype=F64, requires_grad=True)
        opt = torch.optim.SGD([p], lr=lr, momentum=momentum)
        for _ in range(steps):
            opt.zero_grad()
            f(p).backward()
            opt.step()
        return p.detach()

    # Closed form at the start: 1 - exp(-8), gradient norm 2 r exp(-r^2) with r = 2 sqrt(2).
    assert float(f(torch.tensor(start))) == pytest.approx(1 - math.exp(-8), rel=1e-6)
    r0 = math.hypot(*start)
    assert float(f.grad(torch.tensor(start, dtype=F64)).norm()) == pytest.approx(
        2 * r0 * math.exp(-(r0**2)), rel=1e-9
    )
    plain, heavy = run(0.0), run(0.9)
    assert float(f(plain)) > 0.999 and float(plain.norm()) > 2.5  # still on the plateau
    assert float(f(heavy)) < 1e-6 and float(heavy.norm()) < 1e-3  # at the minimum


# --- calling and plotting ----------------------------------------------------------------------


def test_call_accepts_sequences_and_checks_the_shape():
    bowl = lf.get_function("bowl")
    value = bowl([[2.0, -3.0], [0.0, 0.0]])
    assert value.dtype == F64 and value.tolist() == [0.0, 13.0]
    assert bowl.grad([0.0, 0.0]).tolist() == [-4.0, 6.0]  # (2 (x - 2), 2 (y + 3))
    for bad in (torch.zeros(3), torch.zeros(4, 3), 1.0):
        with pytest.raises(LossatlasError, match=r"shape \(\.\.\., 2\)") as exc:
            bowl(bad)
        one_line(exc)


def test_grid_orientation_follows_matplotlib():
    bowl = lf.get_function("bowl")
    xs, ys, z = bowl.grid(steps=5, box=((0, 4), (-4, -2)))
    np.testing.assert_allclose(xs, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(ys, [-4, -3.5, -3, -2.5, -2])
    assert z.shape == (5, 5) and z.dtype == np.float64
    assert z[2, 2] == 0.0  # (x, y) = (2, -3)
    assert z[0, 3] == 2.0  # Z[i, j] = f(xs[j], ys[i]) = (3 - 2)^2 + (-4 + 3)^2
    assert z[3, 0] == 4.25  # (0 - 2)^2 + (-2.5 + 3)^2
    np.testing.assert_allclose(z, (xs[None, :] - 2) ** 2 + (ys[:, None] + 3) ** 2)
    xs, ys, z = lf.get_function("rosenbrock").grid()
    assert xs.shape == ys.shape == (101,) and z.shape == (101, 101)
    assert (xs[0], xs[-1], ys[0], ys[-1]) == (-2.0, 2.0, -1.0, 3.0)
    gx, gy = np.meshgrid(xs, ys)
    np.testing.assert_allclose(z, (1 - gx) ** 2 + 100 * (gy - gx**2) ** 2, rtol=1e-12)
    for bad in (1, 0, 2.5, True):
        with pytest.raises(LossatlasError) as exc:
            bowl.grid(steps=bad)
        one_line(exc)


# --- the registry and user functions -----------------------------------------------------------


def test_get_function_suggests_a_close_name():
    with pytest.raises(LossatlasError, match="did you mean 'rosenbrock'") as exc:
        lf.get_function("rosenbrok")
    one_line(exc)
    with pytest.raises(LossatlasError, match="no test function named 'zzz'"):
        lf.get_function("zzz")


def test_formulas_equal_the_same_functions_written_in_torch():
    points = random_points("bowl", (40,), seed=4)
    x, y = points[..., 0], points[..., 1]
    bowl = lf.register_function("my_bowl", "(x-2)^2 + (y+3)**2", box=((-6, 6), (-8, 8)))
    torch.testing.assert_close(bowl(points), (x - 2) ** 2 + (y + 3) ** 2, rtol=1e-14, atol=0)
    torch.testing.assert_close(bowl.grad(points), torch.stack([2 * (x - 2), 2 * (y + 3)], -1))
    wavy = lf.register_function("wavy", "sin(x)*cos(y) + 0.1*x^2", box=((-3, 3), (-3, 3)))
    torch.testing.assert_close(wavy(points), torch.sin(x) * torch.cos(y) + 0.1 * x**2)
    expected = torch.stack(
        [torch.cos(x) * torch.cos(y) + 0.2 * x, -torch.sin(x) * torch.sin(y)], -1
    )
    torch.testing.assert_close(wavy.grad(points), expected)
    assert wavy(points.float()).dtype == torch.float32
    # The same text as a callable: identical values.
    same = lf.register_function(
        "wavy_fn",
        lambda p: torch.sin(p[..., 0]) * torch.cos(p[..., 1]) + 0.1 * p[..., 0] ** 2,
        box=((-3, 3), (-3, 3)),
    )
    torch.testing.assert_close(same(points), wavy(points), rtol=1e-15, atol=0)


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("-x^2 + pi*y - -y", lambda x, y: -(x**2) + np.pi * y + y),
        ("-2^2 + x", lambda x, y: -4 + x),  # power binds tighter than unary minus
        ("2^3^2 + 0*x", lambda x, y: 512.0 + 0 * x),  # and groups to the right
        ("e^x / (1 + +y^2)", lambda x, y: np.exp(x) / (1 + y**2)),
        ("x^-1", lambda x, y: 1 / x),
        ("pi", lambda x, y: np.pi + 0 * x),
        (
            "sqrt(abs(x)) + log(1 + y^2) + tanh(x) + sinh(y) + cosh(x)",
            lambda x, y: (
                np.sqrt(np.abs(x)) + np.log(1 + y**2) + np.tanh(x) + np.sinh(y) + np.cosh(x)
            ),
        ),
        (
            "tan(y/4) + exp(-x) + arctan(x) + atan(y) + sigmoid(x)",
            lambda x, y: (
                np.tan(y / 4) + np.exp(-x) + np.arctan(x) + np.arctan(y) + 1 / (1 + np.exp(-x))
            ),
        ),
    ],
)
def test_formula_arithmetic_against_numpy(formula, expected):
    f = lf.register_function("formula", formula, box=((-2, 2), (-2, 2)))
    points = random_points("formula", (6, 4), seed=5)
    values = f(points)
    assert values.shape == (6, 4)
    x, y = points[..., 0].numpy(), points[..., 1].numpy()
    np.testing.assert_allclose(values.numpy(), expected(x, y), rtol=1e-12)


def test_min_value_defaults_to_the_value_at_the_first_minimum():
    f = lf.register_function(
        "shifted", "x^2 + (y - 1)^2 + 3", box=((-2, 2), (-2, 2)), minima=[(0, 1)]
    )
    assert f.min_value == 3.0 and f.minima == ((0.0, 1.0),)
    g = lf.register_function("unknown", "x^2", box=((-2, 2), (-2, 2)))
    assert g.minima == () and math.isnan(g.min_value)
    h = lf.register_function("given", "x^2", box=((-2, 2), (-2, 2)), min_value=0, minima=[(0, 5)])
    assert h.min_value == 0.0
    c = lf.register_function(
        "callable",
        lambda p: (p**2).sum(-1) - 1,
        box=((-1, 1), (-1, 1)),
        minima=[(0, 0)],
        description="a  bowl\nlowered by one",
    )
    assert c.min_value == -1.0 and c.description == "a bowl lowered by one"
    assert lf.get_function("callable") is c and "callable" in lf.list_functions()


BAD_FORMULAS = [
    ("__import__('os').system('echo hi')", "__import__"),
    ("x.real", "x.real"),
    ("x[0]", "x[0]"),
    ("lambda: 1", "lambda"),
    ("open('f')", "open"),
    ("y if x else 1", "y if x else 1"),
    ("'a'", "'a'"),
    ("z + 1", "'z'"),
    ("x + " * 300 + "x", "1000"),
    ("sin(" * 150 + "x" + ")" * 150, "nests"),
    ("(" * 250 + "x" + ")" * 250, "parse"),
    ("x < y", "x < y"),
    ("x % 2", "x % 2"),
    ("not x", "not x"),
    ("sin(x, y)", "sin(x, y)"),
    ("sin(x=1)", "sin(x=1)"),
    ("sin", "'sin'"),
    ("x.__class__.__bases__", "__class__"),
    ("[c for c in (1,)]", "comprehension"),
    ("True", "True"),
    ("1j", "1j"),
    ("", "parse"),
    ("x****2", "parse"),
    ("import os", "parse"),
    ("x\n+1", "parse"),
    ("x\0", "parse"),
]


@pytest.mark.parametrize(("formula", "named"), BAD_FORMULAS)
def test_bad_formulas_are_rejected_without_running_anything(formula, named, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("eval/exec must never run")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    with pytest.raises(LossatlasError) as exc:
        lf.register_function("bad", formula, box=((-1, 1), (-1, 1)))
    assert named in one_line(exc)
    assert "bad" not in lf.FUNCTIONS


def test_a_formula_is_never_executed(tmp_path):
    target = tmp_path / "pwned"
    for formula in (
        f"__import__('pathlib').Path({str(target)!r}).touch()",
        f"x + (lambda: __import__('pathlib').Path({str(target)!r}).touch())()",
        f"[__import__('pathlib').Path({str(target)!r}).touch() for _ in (1,)][0]",
    ):
        with pytest.raises(LossatlasError):
            lf.register_function("bad", formula, box=((-1, 1), (-1, 1)))
    assert not target.exists()


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda p: p.sum(), r"gave shape \(\)"),
        (lambda p: p, r"gave shape \(2, 3, 2\)"),
        (lambda p: p.numpy().sum(-1), "gave ndarray"),
        (lambda p: p[..., 2], "IndexError"),
        (42, "got int"),
    ],
)
def test_bad_callables_are_rejected(fn, match):
    with pytest.raises(LossatlasError, match=match) as exc:
        lf.register_function("bad", fn, box=((-1, 1), (-1, 1)))
    one_line(exc)
    assert "bad" not in lf.FUNCTIONS


def test_registering_an_existing_name_needs_replace():
    first = lf.register_function("dup", "x^2", box=((-1, 1), (-1, 1)))
    with pytest.raises(LossatlasError, match="replace=True") as exc:
        lf.register_function("dup", "y^2", box=((-1, 1), (-1, 1)))
    one_line(exc)
    assert lf.get_function("dup") is first
    second = lf.register_function("dup", "y^2", box=((-1, 1), (-1, 1)), replace=True)
    assert lf.get_function("dup") is second and float(second([0.0, 3.0])) == 9.0
    with pytest.raises(LossatlasError, match="replace=True"):
        lf.register_function("rosenbrock", "x^2", box=((-1, 1), (-1, 1)))
    for name in ("", "  ", None, 3):
        with pytest.raises(LossatlasError, match="name"):
            lf.register_function(name, "x^2", box=((-1, 1), (-1, 1)))


@pytest.mark.parametrize(
    "box",
    [
        ((0, 0), (0, 1)),
        ((1, 0), (0, 1)),
        ((0, 1), (2, -2)),
        ((0, math.inf), (0, 1)),
        ((0, 1), (math.nan, 1)),
        ((0, 1),),
        ((0, 1), (0, 1), (0, 1)),
        (0, 1),
        "box",
        None,
        ((0, "a"), (0, 1)),
    ],
)
def test_bad_boxes_are_rejected(box):
    with pytest.raises(LossatlasError, match="box") as exc:
        lf.register_function("boxed", "x^2", box=box)
    one_line(exc)
    if box is not None:  # grid(box=None) means the function's own box
        with pytest.raises(LossatlasError, match="box"):
            lf.get_function("bowl").grid(box=box)
    assert "boxed" not in lf.FUNCTIONS


def test_bad_minima_are_rejected():
    for minima in ([(0, math.nan)], [(1, 2, 3)], [0.5], "ab"):
        with pytest.raises(LossatlasError, match="minima") as exc:
            lf.register_function("m", "x^2", box=((-1, 1), (-1, 1)), minima=minima)
        one_line(exc)
