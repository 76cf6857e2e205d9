"""Models the benchmarks share: a ResNet-18 for CIFAR-size images, written here (PyPI's
torchvision is a CUDA build that does not import beside the CPU torch), and its data.

ResNet-18 (He et al. 2016) as torchvision builds it, with 11,181,642 weights for 10 classes:
a 7x7 stride-2 stem with max pooling, four stages of two basic blocks (64, 128, 256, 512
channels), BatchNorm after every convolution, global average pooling and a linear head.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm; identity shortcut, or 1x1 projection when the
    shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, layers, c_in = (64, 128, 256, 512), [], 64
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(c_in, c, stride), BasicBlock(c, c, 1)))
            c_in = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18_case(n: int = 256, *, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A ResNet-18 in evaluation mode with non-trivial BatchNorm statistics (a few training-
    mode passes on the data), and `n` CIFAR-size images `(n, 3, 32, 32)` with labels."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNet18()
    model.train()
    with torch.no_grad():
        for start in range(0, n, 64):
            model(x[start : start + 64])
    return model.eval(), (x, y)


class LSTMClassifier(nn.Module):
    """Embedding, a 2-layer LSTM and a linear head on the last hidden state: ids -> classes."""

    def __init__(self, vocab: int = 256, width: int = 128, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.lstm = nn.LSTM(width, width, num_layers=2, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(ids))
        return self.head(out[:, -1])


def lstm_case(n: int = 256, length: int = 32, *, seed: int = 0):
    """An LSTM classifier (about 280k weights) and `n` random sequences of `length` ids."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, length), generator=gen)
    y = torch.randint(0, 4, (n,), generator=gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LSTMClassifier()
    return model.eval(), (x, y)
