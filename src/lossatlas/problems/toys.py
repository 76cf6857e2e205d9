"""Two toy regressions: `tiny-7` (a 1-2-1 network, 7 weights) and `xy-regression` (2 inputs).

Both are float64 and trained full-batch by Adam with a cosine learning-rate decay, so training
ends settled in a minimum rather than mid-oscillation; the seed only draws the initialisation.
The weights are cached like every trained built-in problem (`common.load_or_train`).
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict

import torch
from torch import nn

from lossatlas.core.problem import Problem
from lossatlas.core.seeding import init_layers
from lossatlas.errors import check_seed
from lossatlas.problems.common import load_or_train

# Bump when the data, model or training recipe changes: old cache files are then unused.
TINY_VERSION = 1
TINY_POINTS = 64
_TINY_STEPS = 2000
_TINY_LR = 0.1

XY_VERSION = 1
XY_BOX = ((-3.0, 3.0), (-3.0, 3.0))  # (low, high) of the inputs x and y
XY_POINTS = 400
XY_NOISE = 0.05  # standard deviation of the target noise
_XY_DATA_SEED = 0  # the points are fixed, independent of the problem's seed
_XY_WIDTH = 16
_XY_STEPS = 1500
_XY_LR = 0.01


def tiny_target(x: torch.Tensor) -> torch.Tensor:
    """The function `tiny-7` fits: `sin(pi x)` on [-1, 1]."""
    return torch.sin(math.pi * x)


def xy_target(inputs: torch.Tensor) -> torch.Tensor:
    """The function `xy-regression` fits: `f(x, y) = sin(x) cos(y)`, for inputs `(..., 2)`.

    Args:
        inputs: points `(x, y)` along the last dimension, any leading shape.

    Returns:
        The values, shape `(..., 1)`, in the dtype of `inputs`.
    """
    return (torch.sin(inputs[..., 0]) * torch.cos(inputs[..., 1])).unsqueeze(-1)


def _mlp(sizes: list[int]) -> nn.Sequential:
    """A float64 tanh MLP named `hidden`, `act` ... `out`, built off the global RNG."""
    layers: list[tuple[str, nn.Module]] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        linear = nn.utils.skip_init(nn.Linear, n_in, n_out, dtype=torch.float64)
        if i == len(sizes) - 2:
            layers.append(("out", linear))
        else:
            suffix = "" if len(sizes) == 3 else str(i + 1)  # `hidden` alone when there is one
            layers += [(f"hidden{suffix}", linear), (f"act{suffix}", nn.Tanh())]
    return nn.Sequential(OrderedDict(layers))


def _fit(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, steps: int, lr: float
) -> None:
    """Seeded default initialisation, then full-batch Adam on the MSE: no other random draw."""
    init_layers(model, torch.Generator().manual_seed(int(seed)))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # Without the decay, Adam at a constant rate can stop on a spike of the loss.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = nn.MSELoss()
    model.train()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        schedule.step()


def _tiny_data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-1.0, 1.0, TINY_POINTS, dtype=torch.float64)[:, None]
    return x, tiny_target(x)


def _train_tiny(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> None:
    _fit(model, x, y, seed, _TINY_STEPS, _TINY_LR)


def tiny_7(*, seed: int = 0, quiet: bool = True) -> Problem:
    """A 1-2-1 tanh network (7 weights) fit to `sin(pi x)` on 64 points of [-1, 1].

    Small enough to read weight by weight, for example the loss over the plane of two chosen
    weights (`la.axis_directions(problem, ["hidden.weight[0, 0]", "out.weight[0, 0]"])`). The
    points are evenly spaced, noiseless (`tiny_target`) and independent of `seed`. Trained by
    2000 steps of full-batch Adam (cosine decay), about 1 s on a CPU, from a loss of about
    0.5 to about 0.002; float64. The weights are cached (see `cache_dir`).
    The parameters are `hidden.weight` (2, 1), `hidden.bias` (2,), `out.weight` (1, 2) and
    `out.bias` (1,), so entries read `hidden.weight[0, 0]`, ..., `out.bias[0]`.

    Args:
        seed: seeds the initialisation (a private generator: the global torch RNG is neither
            used nor changed). Different seeds may end in different (symmetric) minima.
        quiet: do not report training or cache use on standard error.

    Returns:
        A problem with MSE loss.
    """
    check_seed(seed)
    x, y = _tiny_data()
    model = _mlp([1, 2, 1])
    load_or_train(
        model,
        lambda: _train_tiny(model, x, y, seed),
        name="tiny-7",
        version=TINY_VERSION,
        seed=seed,
        quiet=quiet,
    )
    return Problem(model, nn.MSELoss(), (x, y))


def _xy_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(_XY_DATA_SEED)
    low = torch.tensor([lo for lo, _ in XY_BOX], dtype=torch.float64)
    high = torch.tensor([hi for _, hi in XY_BOX], dtype=torch.float64)
    x = low + (high - low) * torch.rand(XY_POINTS, 2, generator=gen, dtype=torch.float64)
    noise = XY_NOISE * torch.randn(XY_POINTS, 1, generator=gen, dtype=torch.float64)
    return x, xy_target(x) + noise


def _train_xy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> None:
    _fit(model, x, y, seed, _XY_STEPS, _XY_LR)


def xy_regression(*, seed: int = 0, quiet: bool = True) -> Problem:
    """A 2-16-16-1 tanh MLP fit to `f(x, y) = sin(x) cos(y)` on 400 noisy points of [-3, 3]^2.

    The inputs are uniform in `XY_BOX` and the targets `xy_target` plus Gaussian noise of
    standard deviation `XY_NOISE`, drawn once from a fixed generator (independent of `seed`).
    Because the true function is known everywhere, the fit can be judged over the whole input
    plane as `(net(p) - xy_target(p))^2`, not only at the training points. Trained by 1500
    steps of full-batch Adam (cosine decay), about 1 s on a CPU, from a loss of about 0.3
    to about 0.002 (the noise variance is 0.0025); float64. The weights are cached (see
    `lossatlas.problems.registry.cache_dir`). Parameters: `hidden1.*`, `hidden2.*`, `out.*`.

    Args:
        seed: seeds the initialisation (a private generator: the global torch RNG is neither
            used nor changed).
        quiet: do not report training or cache use on standard error.

    Returns:
        A problem with MSE loss; inputs `(400, 2)`, targets `(400, 1)`.
    """
    check_seed(seed)
    x, y = _xy_data()
    model = _mlp([2, _XY_WIDTH, _XY_WIDTH, 1])
    load_or_train(
        model,
        lambda: _train_xy(model, x, y, seed),
        name="xy-regression",
        version=XY_VERSION,
        seed=seed,
        quiet=quiet,
    )
    return Problem(model, nn.MSELoss(), (x, y))
