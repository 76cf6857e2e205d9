"""Ready-made metrics against hand-computed values."""

from __future__ import annotations

import pytest
import torch

import lossatlas as la

OUTPUTS = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.2, 0.1], [0.3, 0.3, 0.7], [2.0, -1.0, 1.9]])
TARGETS = torch.tensor([1, 1, 2, 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_accuracy_and_error(dtype):
    outputs = OUTPUTS.to(dtype)
    acc = la.accuracy(outputs, TARGETS)
    assert acc.dtype == dtype
    assert float(acc) == pytest.approx(3 / 4)
    assert float(la.error(outputs, TARGETS)) == pytest.approx(1 / 4)


def test_accuracy_extremes():
    assert float(la.accuracy(OUTPUTS, OUTPUTS.argmax(1))) == 1.0
    assert float(la.error(OUTPUTS, (OUTPUTS.argmax(1) + 1) % 3)) == 1.0
