"""Fixtures: fresh, seeded models and data (built in `cases.py`)."""

from __future__ import annotations

import pytest
import torch

from tests.oracles.cases import Case, build_case

# The models are tiny: one thread is fastest and is immune to OpenMP spinning on a busy machine.
torch.set_num_threads(1)


@pytest.fixture
def make_case():
    """Factory fixture: `make_case("mlp")` builds a fresh seeded case."""
    return build_case


@pytest.fixture
def mlp_case() -> Case:
    return build_case("mlp")


@pytest.fixture
def cnn_case() -> Case:
    return build_case("cnn_bn")
