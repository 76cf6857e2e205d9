"""Built-in problems: small models on bundled or generated data, ready to map in seconds.

This module holds the registry `PROBLEMS` and the closed-form problems; the trained ones live
in `digits`, `toys`, `teacher`, `gpt` and `resnet` (their shared helpers in `common`) and are
re-exported here.
Nothing is downloaded. Trained weights are cached under the user cache directory
(`$LOSSATLAS_CACHE`, else `$XDG_CACHE_HOME/lossatlas`, else `~/.cache/lossatlas`), one file per
problem name, version and seed, so a problem is trained once per machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from lossatlas.core.problem import Problem
from lossatlas.errors import LossatlasError, check_count, check_seed
from lossatlas.problems.common import cache_dir as cache_dir  # re-exported
from lossatlas.problems.common import load_or_train as load_or_train
from lossatlas.problems.digits import DIGITS_VERSION as DIGITS_VERSION
from lossatlas.problems.digits import digits_mlp
from lossatlas.problems.gpt import tiny_gpt
from lossatlas.problems.resnet import resnet_digits
from lossatlas.problems.teacher import teacher_cnn
from lossatlas.problems.toys import tiny_7, xy_regression


def one_weight(*, x: float = 2.0, y: float = 4.0, w: float = 0.5) -> Problem:
    """One input, one weight, no bias, squared error: `L(w) = (w x - y)^2`, minimum at `y / x`.

    `dL/dw = 2 (w x - y) x`. The weight is the parameter `"weight"` (entry `"weight[0, 0]"`);
    float64, so closed forms can be checked to rounding.
    """
    if not all(math.isfinite(v) for v in (x, y, w)):
        raise LossatlasError(f"x, y and w must be finite, got {x}, {y}, {w}")
    model = nn.Linear(1, 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.fill_(w)
    data = (torch.tensor([[x]], dtype=torch.float64), torch.tensor([[y]], dtype=torch.float64))
    return Problem(model, nn.MSELoss(), data)


def linreg(*, n: int = 100, noise: float = 0.1, seed: int = 42) -> Problem:
    """Linear regression `y = 2 x + 1 + noise` on `n` points of [0, 1], fit by `nn.Linear(1, 1)`.

    The noise and the model's random initialisation come from a generator seeded with `seed`
    (the global RNG is untouched). MSE loss, float64. For plain gradient descent the Hessian is
    `2/n X^T X` with `X = [x, 1]`, so the largest stable learning rate is `2 / lambda_max`.
    """
    n = check_count("n", n, 2)
    gen = torch.Generator().manual_seed(check_seed(seed))
    x = torch.linspace(0, 1, n, dtype=torch.float64)[:, None]
    y = 2 * x + 1 + noise * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    model = nn.utils.skip_init(nn.Linear, 1, 1, dtype=torch.float64)
    with torch.no_grad():
        model.weight.normal_(generator=gen)
        model.bias.normal_(generator=gen)
    return Problem(model, nn.MSELoss(), (x, y))


# Built-in problems by command-line name; each is called with keyword arguments only.
PROBLEMS: dict[str, Callable[..., Problem]] = {
    "one-weight": one_weight,
    "linreg": linreg,
    "digits-mlp": digits_mlp,
    "tiny-7": tiny_7,
    "xy-regression": xy_regression,
    "teacher-cnn": teacher_cnn,
    "tiny-gpt": tiny_gpt,
    "resnet-digits": resnet_digits,
}


def get_problem(name: str, **kwargs) -> Problem:
    """Build the built-in problem `name` (see `PROBLEMS`)."""
    if name not in PROBLEMS:
        raise LossatlasError(f"no built-in problem {name!r}; choose one of {sorted(PROBLEMS)}")
    return PROBLEMS[name](**kwargs)
