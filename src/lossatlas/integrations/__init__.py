"""Training-framework callbacks driving a `lossatlas.Monitor`, with TensorBoard logging.

`lossatlas.integrations.lightning.LossatlasCallback` (Lightning) and
`lossatlas.integrations.transformers.LossatlasCallback` (the Hugging Face Trainer) are imported
from their modules, so that neither framework is imported unless asked for;
`lossatlas.integrations.tensorboard` holds what both write to TensorBoard. This module holds
the checks both callbacks share.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from lossatlas.core.problem import Problem
from lossatlas.errors import LossatlasError, check_count
from lossatlas.watch.monitor import Monitor

__all__: list[str] = []


def check_options(problem: Problem, every: int, out: Any, options: dict[str, Any]) -> None:
    """Fail at a callback's construction on a wrong Problem or an option `Monitor` lacks."""
    if not isinstance(problem, Problem):
        raise LossatlasError(f"problem must be a lossatlas Problem, got {type(problem).__name__}")
    check_count("every", every)
    try:
        inspect.signature(Monitor).bind(problem, every=every, out=out, **options)
    except TypeError as exc:
        raise LossatlasError(f"LossatlasCallback: {exc} (see lossatlas.Monitor)") from None


def check_trained(problem: Problem, model: nn.Module | None, trained: nn.Module) -> None:
    """The watched model (`model=`, else the Problem's) must be the trained module or one of its
    submodules: a copy would never move."""
    watched = problem.model if model is None else model
    if not any(m is watched for m in trained.modules()):
        raise LossatlasError(
            f"the Problem watches a {type(watched).__name__} that is neither the "
            f"{type(trained).__name__} being trained nor one of its submodules: build the "
            "Problem on the trained model itself"
        )
