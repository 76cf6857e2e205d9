"""The engine's plan: points per chunk and samples per batch from memory, caches and weights."""

from __future__ import annotations

import pytest
import torch

from lossatlas.core.planning import (
    CPU_SEQUENTIAL_TARGET,
    WEIGHT_REUSE,
    Footprint,
    make_plan,
)

CPU = torch.device("cpu")


def _sequential(n: int, footprint: Footprint, weights: int, budget: int = 2 << 30) -> int:
    plan = make_plan(
        device=CPU,
        itemsize=4,
        footprint=footprint,
        moving_numel=weights,
        n_samples=n,
        data_batch=n,
        splittable=True,
        budget=budget,
        path="sequential",
        shortcut=False,
    )
    return plan.batch_size


def test_small_models_keep_the_largest_activation_in_cache() -> None:
    """The teacher CNN's footprint: weights far below a batch's activations."""
    footprint = Footprint(total=5656, largest=1152)
    assert _sequential(10_000, footprint, 1340) == CPU_SEQUENTIAL_TARGET // (1152 * 4)


@pytest.mark.parametrize("n", [256, 1000, 4096])
def test_large_models_amortise_their_weights_over_equal_batches(n) -> None:
    """ResNet-18 on CIFAR-size images: 11.2M weights, 183k activation elements per image."""
    footprint, weights = Footprint(total=182_804, largest=16_384), 11_181_642
    batch = _sequential(n, footprint, weights)
    assert batch * footprint.total >= WEIGHT_REUSE * weights or batch == n
    assert -(-n // batch) * batch - n < -(-n // batch)  # the batches differ by at most one
    assert batch > CPU_SEQUENTIAL_TARGET // (footprint.largest * 4)  # the weights rule won


def test_the_budget_caps_the_batch() -> None:
    footprint, weights = Footprint(total=182_804, largest=16_384), 11_181_642
    per_sample = 3 * footprint.total * 4
    assert _sequential(4096, footprint, weights, budget=100 * per_sample) <= 100


@pytest.mark.parametrize("text", [".", "..", "x", "-1MB", "0", ""])
def test_unreadable_memory_sizes_are_one_line_errors(text) -> None:
    from lossatlas.core.planning import parse_bytes
    from lossatlas.errors import LossatlasError

    with pytest.raises(LossatlasError, match="cannot read memory size"):
        parse_bytes(text)


def test_memory_sizes() -> None:
    from lossatlas.core.planning import parse_bytes

    assert parse_bytes("512MB") == 512 << 20 and parse_bytes(".5GiB") == 512 << 20
    assert parse_bytes("2g") == 2 << 30 and parse_bytes(1000) == 1000
