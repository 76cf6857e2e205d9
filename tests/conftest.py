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


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory) -> str:
    """A local two-node Ray cluster (head + one node, one CPU each) for the whole session,
    started only by the tests that ask for it; this process disconnects before it stops."""
    pytest.importorskip("ray")
    import ray

    from tests.support.ray_cluster import local_cluster

    with local_cluster(tmp_path_factory.mktemp("ray")) as address:
        yield address
        ray.shutdown()
