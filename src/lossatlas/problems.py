"""Built-in problems: small models trained on bundled data, ready to map in seconds.

Nothing is downloaded. Trained weights are cached under the user cache directory
(`$LOSSATLAS_CACHE`, else `$XDG_CACHE_HOME/lossatlas`, else `~/.cache/lossatlas`), one file per
problem name, version and seed, so a problem is trained once per machine.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lossatlas.engine import LossatlasWarning
from lossatlas.errors import LossatlasError
from lossatlas.metrics import accuracy
from lossatlas.problem import Problem

# Bump when the data split, model or training recipe changes: old cache files are then unused.
DIGITS_VERSION = 1
_DIGITS_TEST = 360  # held-out samples (20%); the split is fixed and independent of the seed
_DIGITS_STEPS = 300
_DIGITS_BATCH = 64
_DIGITS_LR = 2e-3


def cache_dir() -> Path:
    """Where trained weights are cached: `$LOSSATLAS_CACHE`, else the user cache directory."""
    if os.environ.get("LOSSATLAS_CACHE"):
        return Path(os.environ["LOSSATLAS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lossatlas"


def _init_linear(model: nn.Module, gen: torch.Generator) -> None:
    """PyTorch's default Linear initialisation, drawn from `gen` instead of the global RNG."""
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            bound = 1.0 / math.sqrt(layer.in_features)
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.uniform_(-bound, bound, generator=gen)


def _digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits, split and standardised with the training statistics."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    digits = load_digits()
    x = torch.as_tensor(digits.data, dtype=torch.float32)
    y = torch.as_tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = order[_DIGITS_TEST:], order[:_DIGITS_TEST]
    mean, std = x[train].mean(0), x[train].std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # some border pixels are always 0
    x = (x - mean) / std
    return x[train], y[train], x[test], y[test]


def _digits_model() -> nn.Sequential:
    """The untrained model; `skip_init` keeps construction off the global RNG."""
    linear = functools.partial(nn.utils.skip_init, nn.Linear)
    layers = [("fc1", linear(64, 128)), ("act1", nn.ReLU()), ("fc2", linear(128, 128))]
    layers += [("act2", nn.ReLU()), ("fc3", linear(128, 10))]
    return nn.Sequential(OrderedDict(layers))


def _train_digits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> None:
    """Mini-batch Adam with every random draw from one seeded generator."""
    gen = torch.Generator().manual_seed(int(seed))
    _init_linear(model, gen)
    opt = torch.optim.Adam(model.parameters(), lr=_DIGITS_LR)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    order, pos = torch.randperm(len(x), generator=gen), 0
    for _ in range(_DIGITS_STEPS):
        if pos + _DIGITS_BATCH > len(x):
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = order[pos : pos + _DIGITS_BATCH]
        pos += _DIGITS_BATCH
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()


def _load_cached(path: Path, model: nn.Module) -> bool:
    """Load cached weights into `model`; False (with a warning) if the file is unusable."""
    if not path.exists():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"], strict=True)
    except Exception as exc:  # a torn, foreign or outdated file: train again
        warnings.warn(
            f"ignoring the unreadable cached weights {path} ({type(exc).__name__}); retraining",
            LossatlasWarning,
            stacklevel=3,
        )
        return False
    return True


def _save_cached(path: Path, model: nn.Module) -> None:
    """Write atomically; a cache that cannot be written only costs retraining next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save({"state_dict": model.state_dict(), "version": DIGITS_VERSION}, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(
            f"cannot cache weights in {path.parent} ({exc.strerror or exc})",
            LossatlasWarning,
            stacklevel=3,
        )


def digits_mlp(*, seed: int = 0, split: str = "train", quiet: bool = True) -> Problem:
    """An MLP 64-128-128-10 (ReLU) trained on scikit-learn's 8x8 digits, as a `Problem`.

    The 1797 digits are split once (1437 training, 360 held-out samples, independent of `seed`)
    and standardised with the training mean and standard deviation. The model is trained for
    300 steps of mini-batch Adam (batch 64), about a second on a CPU, to over 99% training
    accuracy; the weights are cached (see `cache_dir`). Parameters are named `fc1.weight`,
    `fc1.bias`, ..., `fc3.bias`.

    Args:
        seed: seeds the initialisation and the batch order (a private generator: the global
            torch RNG is neither used nor changed).
        split: evaluate on the `"train"` (default) or the held-out `"test"` samples.
        quiet: do not report training or cache use on standard error.

    Returns:
        A problem with cross-entropy loss and an `"accuracy"` metric.
    """
    if split not in ("train", "test"):
        raise LossatlasError(f"split={split!r} is not 'train' or 'test'")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise LossatlasError(f"seed must be a non-negative integer, got {seed!r}")
    x_train, y_train, x_test, y_test = _digits_data()
    model = _digits_model()
    path = cache_dir() / f"digits-mlp-v{DIGITS_VERSION}-seed{seed}.pt"
    if _load_cached(path, model):
        if not quiet:
            print(f"lossatlas: using cached weights {path}", file=sys.stderr)
    else:
        start, threads = time.perf_counter(), torch.get_num_threads()
        # One thread: as fast for these small products, immune to a busy machine, and the
        # weights then do not depend on the number of cores.
        torch.set_num_threads(1)
        try:
            _train_digits(model, x_train, y_train, seed)
        finally:
            torch.set_num_threads(threads)
        _save_cached(path, model)
        if not quiet:
            print(
                f"lossatlas: trained digits-mlp (seed {seed}) in "
                f"{time.perf_counter() - start:.1f} s; cached in {path}",
                file=sys.stderr,
            )
    data = (x_train, y_train) if split == "train" else (x_test, y_test)
    return Problem(model, nn.CrossEntropyLoss(), data, metrics={"accuracy": accuracy})


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
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise LossatlasError(f"n must be an integer of at least 2, got {n!r}")
    gen = torch.Generator().manual_seed(int(seed))
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
}


def get_problem(name: str, **kwargs) -> Problem:
    """Build the built-in problem `name` (see `PROBLEMS`)."""
    if name not in PROBLEMS:
        raise LossatlasError(f"no built-in problem {name!r}; choose one of {sorted(PROBLEMS)}")
    return PROBLEMS[name](**kwargs)
