"""Analytic two-variable test functions for watching optimizers, and a safe formula parser.

Every function takes points of shape `(..., 2)`, with `x = p[..., 0]` and `y = p[..., 1]`, and
returns values of shape `(...)`. They are written with torch operations only, so they are
vectorised, differentiable with autograd, and run in any floating dtype on any device.

`FUNCTIONS` holds the catalogue (the classic benchmarks of Jamil & Yang, "A literature survey of
benchmark functions for global optimization problems", 2013, plus a few teaching shapes) and
whatever `register_function` adds, from a Python callable or from a formula string such as
`"sin(x) * cos(y) + 0.1 * x^2"` (parsed safely by `lossatlas.descent.formula`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossatlas.descent.formula import compile_formula, show
from lossatlas.errors import LossatlasError, check_count

Box = tuple[tuple[float, float], tuple[float, float]]
Point = tuple[float, float]


def check_box(box: Any) -> Box:
    try:
        (x0, x1), (y0, y1) = box
        pairs = ((float(x0), float(x1)), (float(y0), float(y1)))
    except (TypeError, ValueError):
        raise LossatlasError(f"box must be ((xmin, xmax), (ymin, ymax)), got {show(box)}") from None
    if not all(math.isfinite(lo) and math.isfinite(hi) and lo < hi for lo, hi in pairs):
        raise LossatlasError(f"box needs two finite (low, high) pairs with low < high, got {pairs}")
    return pairs


def _check_minima(minima: Any) -> tuple[Point, ...]:
    try:
        points = tuple((float(a), float(b)) for a, b in minima)
    except (TypeError, ValueError):
        raise LossatlasError(
            f"minima must be a sequence of (x, y) pairs, got {show(minima)}"
        ) from None
    if not all(math.isfinite(v) for point in points for v in point):
        raise LossatlasError(f"minima must be finite (x, y) pairs, got {points}")
    return points


def _as_points(points: Any) -> Tensor:
    try:
        p = points if isinstance(points, Tensor) else torch.as_tensor(points, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise LossatlasError(f"cannot read {show(points)} as points of shape (..., 2)") from None
    if not p.is_floating_point():
        p = p.to(torch.float64)
    if p.dim() == 0 or p.shape[-1] != 2:
        raise LossatlasError(f"points must have shape (..., 2), got shape {tuple(p.shape)}")
    return p


@dataclass(frozen=True)
class TestFunction:
    """A named function of two variables with its plotting box and known global minima.

    Call it on points of shape `(..., 2)` (a tensor, or anything `torch.as_tensor` reads, which is
    then float64) to get values of shape `(...)`.

    Attributes:
        name: the key in `FUNCTIONS`.
        fn: the torch function itself, `(..., 2) -> (...)`.
        formula: the formula as text, e.g. `"(x - 2)^2 + (y + 3)^2"`.
        box: default plotting box `((xmin, xmax), (ymin, ymax))`.
        minima: every known global minimiser `(x, y)`; empty when there is none or none is known.
        min_value: the global minimum; `-inf` when unbounded below, `nan` when unknown.
        description: one line.
    """

    __test__ = False  # a library class, not a pytest test class, despite its name

    name: str
    fn: Callable[[Tensor], Tensor]
    formula: str
    box: Box
    minima: tuple[Point, ...] = ()
    min_value: float = math.nan
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "box", check_box(self.box))
        object.__setattr__(self, "minima", _check_minima(self.minima))
        try:
            object.__setattr__(self, "min_value", float(self.min_value))
        except (TypeError, ValueError):
            raise LossatlasError(
                f"min_value must be a number, got {show(self.min_value)}"
            ) from None

    def __call__(self, points: Any) -> Tensor:
        return self.fn(_as_points(points))

    def grad(self, points: Any) -> Tensor:
        """The autograd gradient `(df/dx, df/dy)` at every point: shape `(..., 2)`, detached."""
        p = _as_points(points).detach().requires_grad_(True)
        with torch.enable_grad():
            value = self.fn(p)
        if not value.requires_grad:  # a constant function
            return torch.zeros_like(p)
        # Values depend on their own point only, so the gradient of the sum is the pointwise one.
        (g,) = torch.autograd.grad(value.sum(), p, allow_unused=True)
        return torch.zeros_like(p) if g is None else g

    def grid(
        self, steps: int = 101, box: Box | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values on a regular grid, in float64, for plotting.

        Returns `(xs, ys, Z)` with `xs`, `ys` of shape `(steps,)` and `Z[i, j] = f(xs[j], ys[i])`:
        rows follow `y` and columns `x`, the convention of `np.meshgrid(xs, ys)` and of
        matplotlib's `contour(xs, ys, Z)`.

        Args:
            steps: points along each axis (at least 2).
            box: `((xmin, xmax), (ymin, ymax))`; defaults to the function's own box.
        """
        (x0, x1), (y0, y1) = self.box if box is None else check_box(box)
        steps = check_count("steps", steps, 2)
        xs, ys = np.linspace(x0, x1, steps), np.linspace(y0, y1, steps)
        grid_x, grid_y = np.meshgrid(xs, ys)
        with torch.no_grad():
            z = self.fn(torch.from_numpy(np.stack([grid_x, grid_y], axis=-1)))
        return xs, ys, z.detach().cpu().numpy()


# --- the catalogue ---------------------------------------------------------------------------

FUNCTIONS: dict[str, TestFunction] = {}


def _catalogue(formula: str, box: Box, minima: Sequence[Point], min_value: float, about: str):
    """Register the decorated function in `FUNCTIONS`, under its name without the underscore."""

    def add(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        name = fn.__name__.lstrip("_")
        FUNCTIONS[name] = TestFunction(name, fn, formula, box, tuple(minima), min_value, about)
        return fn

    return add


@_catalogue("(x - 2)^2 + (y + 3)^2", ((-6, 6), (-8, 8)), [(2, -3)], 0.0, "a round quadratic bowl")
def _bowl(p: Tensor) -> Tensor:
    """`(x - 2)^2 + (y + 3)^2`: a round bowl, minimum 0 at `(2, -3)`."""
    return (p[..., 0] - 2) ** 2 + (p[..., 1] + 3) ** 2


@_catalogue(
    "0.5 * (x^2 + 50 * y^2)",
    ((-10, 10), (-5, 5)),
    [(0, 0)],
    0.0,
    "a narrow quadratic valley: Hessian eigenvalues 1 and 50 (condition number 50)",
)
def _ill_conditioned(p: Tensor) -> Tensor:
    """`0.5 (x^2 + 50 y^2)`: Hessian `diag(1, 50)`, eigenvalues 1 and 50, condition number 50.

    Minimum 0 at the origin. Gradient descent is stable only for `lr < 2/50 = 0.04`, and at such
    rates it crawls along `x`, shrinking the error there by a factor `1 - lr > 0.96` a step.
    """
    return 0.5 * (p[..., 0] ** 2 + 50 * p[..., 1] ** 2)


@_catalogue(
    "(1 - x)^2 + 100 * (y - x^2)^2",
    ((-2, 2), (-1, 3)),
    [(1, 1)],
    0.0,
    "Rosenbrock's curved, flat-bottomed valley leading slowly to (1, 1)",
)
def _rosenbrock(p: Tensor) -> Tensor:
    """Rosenbrock (1960): `(a - x)^2 + b (y - x^2)^2` with `a = 1`, `b = 100`; 0 at `(1, 1)`."""
    x, y = p[..., 0], p[..., 1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


@_catalogue(
    "(x^2 + y - 11)^2 + (x + y^2 - 7)^2",
    ((-5, 5), (-5, 5)),
    [
        (3.0, 2.0),
        (-2.805118086952745, 3.131312518250573),
        (-3.779310253377747, -3.283185991286170),
        (3.584428340330492, -1.848126526964404),
    ],
    0.0,
    "Himmelblau's four global minima of value 0; the start picks the basin",
)
def _himmelblau(p: Tensor) -> Tensor:
    """Himmelblau (1972): `(x^2 + y - 11)^2 + (x + y^2 - 7)^2`; four global minima, all 0.

    At `(3, 2)`, `(-2.805118, 3.131312)`, `(-3.779310, -3.283186)` and `(3.584428, -1.848126)`.
    """
    x, y = p[..., 0], p[..., 1]
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


@_catalogue(
    "(1.5 - x + x*y)^2 + (2.25 - x + x*y^2)^2 + (2.625 - x + x*y^3)^2",
    ((-4.5, 4.5), (-4.5, 4.5)),
    [(3, 0.5)],
    0.0,
    "Beale: a flat centre, steep ridges towards the corners, minimum at (3, 0.5)",
)
def _beale(p: Tensor) -> Tensor:
    """Beale: `(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2`; 0 at `(3, 0.5)`."""
    x, y = p[..., 0], p[..., 1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


@_catalogue(
    "(x + 2*y - 7)^2 + (2*x + y - 5)^2",
    ((-10, 10), (-10, 10)),
    [(1, 3)],
    0.0,
    "Booth: a tilted quadratic valley with its minimum at (1, 3)",
)
def _booth(p: Tensor) -> Tensor:
    """Booth: `(x + 2y - 7)^2 + (2x + y - 5)^2`; 0 at `(1, 3)`."""
    x, y = p[..., 0], p[..., 1]
    return (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2


@_catalogue(
    "20 + x^2 - 10*cos(2*pi*x) + y^2 - 10*cos(2*pi*y)",
    ((-5.12, 5.12), (-5.12, 5.12)),
    [(0, 0)],
    0.0,
    "Rastrigin: a regular lattice of local minima on a bowl, global minimum at the origin",
)
def _rastrigin(p: Tensor) -> Tensor:
    """Rastrigin, 2-D, `A = 10`: `2A + sum_i (x_i^2 - A cos(2 pi x_i))`; 0 at the origin."""
    return 20 + (p**2 - 10 * torch.cos(2 * math.pi * p)).sum(-1)


@_catalogue(
    "-20*exp(-0.2*sqrt(0.5*(x^2 + y^2))) - exp(0.5*(cos(2*pi*x) + cos(2*pi*y))) + 20 + e",
    ((-5, 5), (-5, 5)),
    [(0, 0)],
    0.0,
    "Ackley: a nearly flat, rippled outer region around a sharp hole at the origin",
)
def _ackley(p: Tensor) -> Tensor:
    """Ackley, `a = 20`, `b = 0.2`, `c = 2 pi`; 0 at the origin.

    `-a exp(-b sqrt((x^2 + y^2) / 2)) - exp((cos(c x) + cos(c y)) / 2) + a + e`.

    The origin is a cone tip where no gradient exists; autograd returns the subgradient 0 there
    (a plain `sqrt` would give NaN), so optimizers that land exactly on it stay put.
    """
    s = 0.5 * (p**2).sum(-1)
    positive = s > 0
    r = torch.where(positive, torch.where(positive, s, torch.ones_like(s)).sqrt(), 0.0 * s)
    waves = 0.5 * torch.cos(2 * math.pi * p).sum(-1)
    return -20 * torch.exp(-0.2 * r) - torch.exp(waves) + 20 + math.e


@_catalogue(
    "(4 - 2.1*x^2 + x^4/3)*x^2 + x*y + (-4 + 4*y^2)*y^2",
    ((-3, 3), (-2, 2)),
    [(0.08984201310031806, -0.7126564030207396), (-0.08984201310031806, 0.7126564030207396)],
    -1.0316284534898774,
    "six-hump camel: six local minima, two of them global (-1.0316)",
)
def _six_hump_camel(p: Tensor) -> Tensor:
    """Six-hump camel: `(4 - 2.1 x^2 + x^4 / 3) x^2 + xy + (-4 + 4 y^2) y^2`.

    Two global minima, -1.0316, at `(0.0898, -0.7126)` and `(-0.0898, 0.7126)`.
    """
    x, y = p[..., 0], p[..., 1]
    return (4 - 2.1 * x**2 + x**4 / 3) * x**2 + x * y + (-4 + 4 * y**2) * y**2


@_catalogue(
    "0.5*(x^4 - 16*x^2 + 5*x + y^4 - 16*y^2 + 5*y)",
    ((-5, 5), (-5, 5)),
    [(-2.903534027771178, -2.903534027771178)],
    -78.33233140754282,
    "Styblinski-Tang: four basins of unequal depth, the deepest at (-2.903534, -2.903534)",
)
def _styblinski_tang(p: Tensor) -> Tensor:
    """Styblinski-Tang, 2-D: `0.5 sum_i (x_i^4 - 16 x_i^2 + 5 x_i)`.

    Minimum -78.33233 (-39.16617 per dimension) at `(-2.903534, -2.903534)`.
    """
    return 0.5 * (p**4 - 16 * p**2 + 5 * p).sum(-1)


@_catalogue(
    "x^2 - y^2", ((-2, 2), (-2, 2)), [], -math.inf, "a saddle at the origin; unbounded below"
)
def _saddle(p: Tensor) -> Tensor:
    """`x^2 - y^2`: a saddle at the origin (zero gradient, Hessian `diag(2, -2)`), no minimum.

    Unbounded below, so `minima` is empty and `min_value` is `-inf`.
    """
    return p[..., 0] ** 2 - p[..., 1] ** 2


@_catalogue(
    "1 - exp(-(x^2 + y^2))",
    ((-3.5, 3.5), (-3.5, 3.5)),
    [(0, 0)],
    0.0,
    "a Gaussian well in a flat plateau: from (2, 2), SGD(lr=0.1) still has loss 0.9994 after "
    "400 steps, momentum 0.9 reaches the minimum",
)
def _plateau(p: Tensor) -> Tensor:
    """`1 - exp(-(x^2 + y^2))`: a Gaussian well, 0 at the origin, in a plateau at 1.

    The gradient `2 r exp(-r^2)` is tiny away from the well: `1.9e-3` at `(2, 2)`. From there,
    `torch.optim.SGD(lr=0.1)` moves 0.05 in 400 steps and the loss is still 0.9994 (it needs about
    1100 steps to fall in), while `SGD(lr=0.1, momentum=0.9)`, whose steps grow to ten times as
    long on a slope that barely changes, falls in after about 150 steps and is at `2e-12` after
    400.
    """
    return 1 - torch.exp(-(p**2).sum(-1))


def list_functions() -> list[str]:
    """Names of the registered functions: the catalogue in order, then those registered later."""
    return list(FUNCTIONS)


def get_function(name: str) -> TestFunction:
    """The registered function called `name`."""
    if name in FUNCTIONS:
        return FUNCTIONS[name]
    close = difflib.get_close_matches(str(name), list(FUNCTIONS), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(FUNCTIONS)}"
    raise LossatlasError(f"no test function named {show(name)}; {hint}")


def _check_callable(fn: Callable[[Tensor], Tensor]) -> None:
    """Evaluate `fn` once on a (2, 3, 2) batch: it must give a tensor of shape (2, 3)."""
    probe = torch.tensor(
        [[[0.5, -0.25], [1.0, 2.0], [-1.5, 0.75]], [[0.0, 0.0], [2.0, -1.0], [0.3, 0.4]]],
        dtype=torch.float64,
    )
    try:
        out = fn(probe)
    except Exception as exc:
        raise LossatlasError(
            f"the function failed on a (2, 3, 2) batch: {type(exc).__name__}: {show(exc)}"
        ) from exc
    if not isinstance(out, Tensor) or tuple(out.shape) != (2, 3):
        got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise LossatlasError(
            f"the function must map a tensor of points (..., 2) to a tensor of values (...); "
            f"a (2, 3, 2) batch gave {got}"
        )


def register_function(
    name: str,
    fn_or_formula: Callable[[Tensor], Tensor] | str,
    *,
    box: Box,
    minima: Sequence[Point] = (),
    min_value: float | None = None,
    description: str = "",
    replace: bool = False,
) -> TestFunction:
    """Add a function to `FUNCTIONS` and return it.

    A formula is an expression in `x` and `y` with numbers, `pi`, `e`, `+ - * /`, powers written
    `**` or `^` (both mean power, so `-x^2` is `-(x^2)` and `2^3^2` is `2^9`), parentheses and the
    one-argument functions sin, cos, tan, exp, log, sqrt, abs, tanh, sinh, cosh, arctan (or atan)
    and sigmoid, e.g. `"sin(x) * cos(y) + 0.1 * x^2"`. It is parsed with `ast` against that
    whitelist, never evaluated as Python, and may be at most 1000 characters long.

    Args:
        name: the key; an existing one raises unless `replace=True`.
        fn_or_formula: a formula string, or a callable mapping a tensor `(..., 2)` to `(...)`
            (checked once on a small float64 batch).
        box: default plotting box `((xmin, xmax), (ymin, ymax))`.
        minima: known global minimisers `(x, y)`.
        min_value: the global minimum; defaults to the value at the first minimum, or NaN
            (unknown) without minima.
        description: one line.
        replace: allow replacing a registered function.
    """
    if not isinstance(name, str) or not name.strip():
        raise LossatlasError(f"the name must be a non-empty string, got {show(name)}")
    if name in FUNCTIONS and not replace:
        raise LossatlasError(
            f"a test function named {name!r} exists; pass replace=True to replace it"
        )
    if isinstance(fn_or_formula, str):
        fn, formula = compile_formula(fn_or_formula), fn_or_formula.strip()
    elif callable(fn_or_formula):
        _check_callable(fn_or_formula)
        fn, formula = fn_or_formula, "<python callable>"
    else:
        raise LossatlasError(
            f"expected a formula string or a callable, got {type(fn_or_formula).__name__}"
        )
    box, minima = check_box(box), _check_minima(minima)
    if min_value is None:
        min_value = (
            float(fn(torch.tensor(minima[:1], dtype=torch.float64))[0]) if minima else math.nan
        )
    entry = TestFunction(
        name, fn, formula, box, minima, float(min_value), " ".join(description.split())
    )
    FUNCTIONS[name] = entry
    return entry
