"""Small, seeded models and data shared by the test modules.

Every case is built from scratch by `build_case(name)`, so tests never share mutable models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

N_SAMPLES = 58  # not a multiple of the batch sizes below, so last batches are smaller
N_CLASSES = 3


class CNN(nn.Module):
    """Two convolutions with BatchNorm2d and a linear head, for 1x6x6 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 3, 3)
        self.bn2 = nn.BatchNorm2d(3)
        self.head = nn.Linear(3 * 4 * 4, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.flatten(1))


class SharedLayer(nn.Module):
    """One `nn.Linear` applied twice in the forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.shared = nn.Linear(6, 6)
        self.head = nn.Linear(6, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        h = torch.tanh(self.shared(h))
        h = torch.tanh(self.shared(h))
        return self.head(h)


class SharedInputLayer(nn.Module):
    """The input layer itself is applied again, to its own (activated) output."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(16, 16)
        self.head = nn.Linear(16, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.layer(x))
        h = torch.tanh(self.layer(h))
        return self.head(h)


class Embedding(nn.Module):
    """Integer inputs, and a 0-d parameter (a temperature)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.head = nn.Linear(8, N_CLASSES)
        self.temperature = nn.Parameter(torch.tensor(0.7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(x).mean(1)) / self.temperature


class TiedWeights(nn.Module):
    """Two modules whose weight is one and the same parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 5)
        self.a = nn.Linear(5, 5)
        self.b = nn.Linear(5, 5)
        self.b.weight = self.a.weight
        self.head = nn.Linear(5, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        h = torch.tanh(self.a(h))
        h = torch.tanh(self.b(h))
        return self.head(h)


class TiedTranspose(nn.Module):
    """A tied autoencoder-style block: the input layer's weight, transposed, is used again."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(16, 6)
        self.head = nn.Linear(16, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.enc(x))
        back = torch.tanh(nn.functional.linear(h, self.enc.weight.t()))
        return self.head(back)


class GroupedCNN(nn.Module):
    """A grouped convolution as the input layer (each group sees its own input channel)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, groups=2)
        self.head = nn.Linear(4 * 6 * 6, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


class RGBCNN(nn.Module):
    """Three input channels (so channels-last layout is real), BatchNorm and max pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 4, 3)
        self.head = nn.Linear(4 * 2 * 2, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        return self.head(torch.relu(self.conv2(x)).flatten(1))


def mlp() -> nn.Sequential:
    """Parameters are named 0.weight, 0.bias, 2.weight, 2.bias."""
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, N_CLASSES))


@dataclass
class Case:
    model: nn.Module
    X: torch.Tensor
    y: torch.Tensor

    def batches(self, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.X[i : i + size], self.y[i : i + size]) for i in range(0, len(self.X), size)]


def build_case(name: str, seed: int = 0) -> Case:
    """A freshly built, seeded model (in eval mode) and classification data for it."""
    torch.manual_seed(seed)
    if name == "mlp":
        model, X = mlp(), torch.randn(N_SAMPLES, 4)
    elif name == "wide_mlp":  # wide enough for the engine's input-layer shortcut
        model = nn.Sequential(nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, N_CLASSES))
        X = torch.randn(N_SAMPLES, 16)
    elif name == "cnn_bn":
        model, X = CNN(), torch.randn(N_SAMPLES, 1, 6, 6)
        # Non-trivial running statistics: a few training-mode passes on shifted data.
        model.train()
        with torch.no_grad():
            for _ in range(4):
                model(1.5 * torch.randn(16, 1, 6, 6) + 0.7)
        assert model.bn1.running_mean.abs().min() > 1e-3
        assert (model.bn1.running_var - 1).abs().min() > 1e-3
    elif name == "shared":
        model, X = SharedLayer(), torch.randn(N_SAMPLES, 4)
    elif name == "shared_input":
        model, X = SharedInputLayer(), torch.randn(N_SAMPLES, 16)
    elif name == "embedding":
        model, X = Embedding(), torch.randint(0, 20, (N_SAMPLES, 5))
    elif name == "tied":
        model, X = TiedWeights(), torch.randn(N_SAMPLES, 4)
        assert model.a.weight is model.b.weight
    elif name == "tied_transpose":
        model, X = TiedTranspose(), torch.randn(N_SAMPLES, 16)
    elif name == "rgb_cnn":
        model, X = RGBCNN(), torch.randn(N_SAMPLES, 3, 8, 8)
        model.train()
        with torch.no_grad():  # non-trivial running statistics
            model(2.0 * torch.randn(16, 3, 8, 8) + 0.5)
    elif name == "grouped_cnn":
        model, X = GroupedCNN(), torch.randn(N_SAMPLES, 2, 6, 6)
    else:
        raise KeyError(name)
    y = torch.randint(0, N_CLASSES, (N_SAMPLES,))
    return Case(model.eval(), X, y)
