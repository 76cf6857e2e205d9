"""The `teacher-cnn` problem: a small CNN with BatchNorm learning a fixed random teacher CNN.

The images are Gaussian noise; their labels come from a fixed random teacher network, so the
task is learnable to any accuracy in principle, needs no download, and has a held-out split
drawn from the same distribution.
"""

from __future__ import annotations

import functools
from collections import OrderedDict

import torch
from torch import nn

from lossatlas.core.metrics import accuracy
from lossatlas.core.problem import Problem
from lossatlas.core.seeding import init_layers
from lossatlas.errors import check_seed
from lossatlas.problems.common import check_split, load_or_train, train_classifier

# Bump when the data, teacher, student or training recipe changes: old cache files are unused.
TEACHER_VERSION = 1
TEACHER_CLASSES = 4
TEACHER_SIZE = 12  # images are 1 x 12 x 12
TEACHER_TRAIN = 512
TEACHER_TEST = 256
_DATA_SEED = 0  # the images, independent of the problem's seed
_TEACHER_SEED = 1  # the teacher's weights, independent of both
_REFERENCE = 4096  # images on which the teacher's per-class mean logit is measured
_STEPS = 500
_BATCH = 64
_LR = 2e-2


def _teacher() -> nn.Sequential:
    """The fixed labelling network, with its mean logits on reference noise subtracted.

    Without the correction a random network favours one or two classes; subtracting each
    class's mean logit (on images outside the data) balances them.
    """
    conv = functools.partial(nn.utils.skip_init, nn.Conv2d)
    net = nn.Sequential(
        conv(1, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.utils.skip_init(nn.Linear, 6, TEACHER_CLASSES),
    )
    gen = torch.Generator().manual_seed(_TEACHER_SEED)
    init_layers(net, gen)
    reference = torch.randn(_REFERENCE, 1, TEACHER_SIZE, TEACHER_SIZE, generator=gen)
    with torch.no_grad():
        net[-1].bias -= net(reference).mean(0)
    return net.eval()


def teacher_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training and held-out images with their teacher labels: `x_train, y_train, x_test,
    y_test`, images `(n, 1, 12, 12)` float32 and labels `(n,)` int64."""
    gen = torch.Generator().manual_seed(_DATA_SEED)
    n = TEACHER_TRAIN + TEACHER_TEST
    x = torch.randn(n, 1, TEACHER_SIZE, TEACHER_SIZE, generator=gen)
    with torch.no_grad():
        y = _teacher()(x).argmax(1)
    return x[:TEACHER_TRAIN], y[:TEACHER_TRAIN], x[TEACHER_TRAIN:], y[TEACHER_TRAIN:]


def _student() -> nn.Sequential:
    """The untrained student; `skip_init` keeps construction off the global RNG (BatchNorm's
    own initialisation is deterministic)."""
    conv = functools.partial(nn.utils.skip_init, nn.Conv2d)
    layers = [
        ("conv1", conv(1, 8, 3, padding=1, bias=False)),  # BN makes a bias redundant
        ("bn1", nn.BatchNorm2d(8)),
        ("relu1", nn.ReLU()),
        ("pool", nn.AvgPool2d(2)),  # generalises better than max-pooling here
        ("conv2", conv(8, 16, 3, padding=1, bias=False)),
        ("bn2", nn.BatchNorm2d(16)),
        ("relu2", nn.ReLU()),
        ("gap", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.utils.skip_init(nn.Linear, 16, TEACHER_CLASSES)),
    ]
    return nn.Sequential(OrderedDict(layers))


def _train_student(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> None:
    """`common.train_classifier` with this problem's recipe (read at call time)."""
    train_classifier(model, x, y, seed, steps=_STEPS, batch=_BATCH, lr=_LR)


def teacher_cnn(*, seed: int = 0, split: str = "train", quiet: bool = True) -> Problem:
    """A small CNN with BatchNorm trained to imitate a fixed random teacher CNN on noise images.

    The data are 1x12x12 standard Gaussian images (512 training, 256 held-out, fixed and
    independent of `seed`) labelled by the argmax of a random teacher CNN's 4 logits; the
    teacher is drawn from its own fixed seed and its per-class mean logit is subtracted so the
    classes are balanced (no class under 20%). The student is conv(8) - BN - ReLU - 2x2 average
    pool - conv(16) - BN - ReLU - global average pool - linear(4) (convolutions without bias,
    1340 weights), trained for 500 steps of mini-batch Adam (batch 64, cosine decay), about 2 s
    on a CPU, to about 100% training and 80% held-out accuracy; its BatchNorm statistics are
    then those of the training set. The weights are cached (see `cache_dir`).
    Parameters: `conv1.weight`, `bn1.weight`, `bn1.bias`, `conv2.weight`, `bn2.weight`,
    `bn2.bias`, `fc.weight`, `fc.bias`.

    Args:
        seed: seeds the student's initialisation and the batch order (a private generator:
            the global torch RNG is neither used nor changed).
        split: evaluate on the `"train"` (default) or the held-out `"test"` images.
        quiet: do not report training or cache use on standard error.

    Returns:
        A problem with cross-entropy loss and an `"accuracy"` metric.
    """
    check_split(split)
    check_seed(seed)
    x_train, y_train, x_test, y_test = teacher_data()
    model = _student()
    load_or_train(
        model,
        lambda: _train_student(model, x_train, y_train, seed),
        name="teacher-cnn",
        version=TEACHER_VERSION,
        seed=seed,
        quiet=quiet,
    )
    data = (x_train, y_train) if split == "train" else (x_test, y_test)
    return Problem(model, nn.CrossEntropyLoss(), data, metrics={"accuracy": accuracy})
