"""The fast cross-entropy for few classes against PyTorch's own `F.cross_entropy`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossatlas.core.losses import SMALL, cross_entropy, faster


def logits_and_targets(n: int, classes: int, *, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(n, classes, generator=gen, dtype=dtype)
    return z, torch.randint(0, classes, (n,), generator=gen)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("classes", [2, 10, SMALL - 1])
def test_equals_pytorchs_cross_entropy_with_its_derivatives(reduction, classes):
    z, y = logits_and_targets(257, classes)
    y[::7] = -100  # ignored samples
    loss = nn.CrossEntropyLoss(reduction=reduction)
    fast = faster(loss)
    assert fast is not loss
    torch.testing.assert_close(fast(z, y), loss(z, y), rtol=1e-14, atol=1e-14)
    # first and second derivatives (Hessian-vector products go through both)
    z = z.requires_grad_()
    v = torch.randn_like(z)

    def derivatives(fn):
        (g,) = torch.autograd.grad(fn(z, y).sum(), z, create_graph=True)
        (hv,) = torch.autograd.grad(g, z, grad_outputs=v)
        return g.detach(), hv

    for mine, theirs in zip(derivatives(fast), derivatives(loss)):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-14)


def test_float32_within_rounding_and_other_ignore_index():
    z, y = logits_and_targets(1797, 10, dtype=torch.float32)
    y[:5] = 3
    loss = nn.CrossEntropyLoss(ignore_index=3)
    expected = F.cross_entropy(z.double(), y, ignore_index=3)
    assert abs(float(faster(loss)(z, y)) - float(expected)) < 1e-6 * float(expected)


def test_an_ignored_sample_with_non_finite_logits_is_left_out_as_in_pytorch():
    z, y = logits_and_targets(6, 4)
    z[2, 1] = float("nan")
    y[2] = -100
    fast = faster(nn.CrossEntropyLoss())
    torch.testing.assert_close(fast(z, y), F.cross_entropy(z, y), rtol=1e-14, atol=1e-14)
    assert torch.isfinite(fast(z, y))


def test_all_ignored_is_nan_as_in_pytorch():
    z, y = logits_and_targets(4, 3)
    y[:] = -100
    assert torch.isnan(faster(nn.CrossEntropyLoss())(z, y))
    assert torch.isnan(F.cross_entropy(z, y))


def test_under_vmap_over_points():
    z, y = logits_and_targets(64, 10)
    stacked = torch.stack([z, 2 * z, z - 1])
    fast = faster(nn.CrossEntropyLoss())
    got = torch.vmap(fast, in_dims=(0, None))(stacked, y)
    expected = torch.stack([F.cross_entropy(s, y) for s in stacked])
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14)


def test_pytorch_computes_what_the_fast_path_does_not_cover():
    z, y = logits_and_targets(32, SMALL)
    many = faster(nn.CrossEntropyLoss())
    assert torch.equal(many(z, y), F.cross_entropy(z, y))  # 16 classes: PyTorch's own
    probs = torch.softmax(torch.randn(32, 4, dtype=torch.float64), 1)
    assert torch.equal(many(z[:, :4], probs), F.cross_entropy(z[:, :4], probs))
    images = torch.randn(2, 4, 3, 3, dtype=torch.float64)  # (N, C, d1, d2) logits
    labels = torch.randint(0, 4, (2, 3, 3))
    assert torch.equal(many(images, labels), F.cross_entropy(images, labels))
    weighted = nn.CrossEntropyLoss(weight=torch.ones(4, dtype=torch.float64))
    smoothed = nn.CrossEntropyLoss(label_smoothing=0.1)
    assert faster(weighted) is weighted and faster(smoothed) is smoothed
    mse = nn.MSELoss()
    assert faster(mse) is mse


def test_cross_entropy_direct_call():
    z, y = logits_and_targets(100, 5)
    got = cross_entropy(z, y, ignore_index=-100, reduction="mean")
    torch.testing.assert_close(got, F.cross_entropy(z, y), rtol=1e-14, atol=1e-14)
