"""The `digits-mlp` problem: an MLP trained on scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

import functools
from collections import OrderedDict

import torch
from torch import nn

from lossatlas.core.metrics import accuracy
from lossatlas.core.problem import Problem
from lossatlas.core.seeding import init_layers
from lossatlas.errors import check_seed
from lossatlas.problems.common import check_split, load_or_train

# Bump when the data split, model or training recipe changes: old cache files are then unused.
DIGITS_VERSION = 1
_DIGITS_TEST = 360  # held-out samples (20%); the split is fixed and independent of the seed
_DIGITS_STEPS = 300
_DIGITS_BATCH = 64
_DIGITS_LR = 2e-3


def digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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


def digits_model() -> nn.Sequential:
    """The untrained model; `skip_init` keeps construction off the global RNG."""
    linear = functools.partial(nn.utils.skip_init, nn.Linear)
    layers = [("fc1", linear(64, 128)), ("act1", nn.ReLU()), ("fc2", linear(128, 128))]
    layers += [("act2", nn.ReLU()), ("fc3", linear(128, 10))]
    return nn.Sequential(OrderedDict(layers))


def _train_digits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> None:
    """Mini-batch Adam with every random draw from one seeded generator."""
    gen = torch.Generator().manual_seed(int(seed))
    init_layers(model, gen)
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


def digits_mlp(*, seed: int = 0, split: str = "train", quiet: bool = True) -> Problem:
    """An MLP 64-128-128-10 (ReLU) trained on scikit-learn's 8x8 digits, as a `Problem`.

    The 1797 digits are split once (1437 training, 360 held-out samples, independent of `seed`)
    and standardised with the training mean and standard deviation. The model is trained for
    300 steps of mini-batch Adam (batch 64), about a second on a CPU, to over 99% training
    accuracy; the weights are cached (see `problems.common.cache_dir`). Parameters are named
    `fc1.weight`, `fc1.bias`, ..., `fc3.bias`.

    Args:
        seed: seeds the initialisation and the batch order (a private generator: the global
            torch RNG is neither used nor changed).
        split: evaluate on the `"train"` (default) or the held-out `"test"` samples.
        quiet: do not report training or cache use on standard error.

    Returns:
        A problem with cross-entropy loss and an `"accuracy"` metric.
    """
    check_split(split)
    check_seed(seed)
    x_train, y_train, x_test, y_test = digits_data()
    model = digits_model()
    load_or_train(
        model,
        lambda: _train_digits(model, x_train, y_train, seed),
        name="digits-mlp",
        version=DIGITS_VERSION,
        seed=seed,
        quiet=quiet,
    )
    data = (x_train, y_train) if split == "train" else (x_test, y_test)
    return Problem(model, nn.CrossEntropyLoss(), data, metrics={"accuracy": accuracy})
