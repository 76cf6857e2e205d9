"""BatchNorm statistics recomputed at every evaluated point: `Problem(bn="recompute")`.

A BatchNorm layer's running statistics belong to the weights they were collected at. Away from
those weights (along a random direction, an interpolation, a curve between minima) they are
stale, and the loss in eval mode with them can be much higher than the network deserves. The
standard fix (Garipov et al. 2018 for curves, Izmailov et al. 2018 for SWA) is to recompute them
at every point, as `torch.optim.swa_utils.update_bn` does. With `bn="recompute"` every point
gets exactly update_bn's statistics at its weights:

1. every BatchNorm layer (`torch.nn.modules.batchnorm._BatchNorm`) is reset: `running_mean`
   0, `running_var` 1, `num_batches_tracked` 0, and `momentum=None`, so the statistics become
   the plain average over batches of each batch's mean and unbiased variance;
2. one forward pass runs over every batch of the problem's data with the point's parameters,
   BatchNorm layers in train mode and every other module in eval mode: dropout stays off (the
   one difference from update_bn, which puts the whole model in train mode);
3. the loss and metrics are then evaluated in eval mode with those statistics.

The statistics pass sees the problem's own batches: a list of batches or a DataLoader as given
(a shuffling loader gives slightly different statistics every pass), an `(X, y)` pair in
batches of `Problem(batch_size=...)` or, without one, of `STATS_BATCH` samples. Batches count
equally, so the statistics depend on the batching (the loss pass does not).

Cost: two passes over the data per point, one point at a time (the engine's sequential path:
no vmap, no input-layer shortcut). Slopes are not supported: the statistics depend on the
point, and the derivative would have to run through the whole statistics pass. Layers that do
not track running statistics use batch statistics in both modes and are left as they are; a
model without BatchNorm gives the same values as `bn="eval"`.

The work happens on a private copy of the problem's module that shares its parameters (never
read: the point's parameters are passed to `functional_call`) and owns its buffers, so neither
the user's model nor the problem's copy is changed.

References:
    T. Garipov, P. Izmailov, D. Podoprikhin, D. Vetrov, A. G. Wilson, "Loss Surfaces, Mode
    Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018.
    P. Izmailov, D. Podoprikhin, T. Garipov, D. Vetrov, A. G. Wilson, "Averaging Weights Leads
    to Wider Optima and Better Generalization", UAI 2018.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from lossatlas.core import batches as B
from lossatlas.core.problem import batchnorm_layers
from lossatlas.errors import LossatlasError

if TYPE_CHECKING:
    from lossatlas.core.problem import Problem

STATS_BATCH = 1024  # samples per statistics batch for an (X, y) pair without a batch size


class RecomputedStats:
    """`params -> buffers`: every buffer of the problem's model, BatchNorm statistics recomputed.

    Attributes:
        forwards: forward passes of the statistics pass so far (one per batch and point).
    """

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        shared = {id(p): p for p in problem.module.parameters()}  # copy the buffers only
        self.module = copy.deepcopy(problem.module, shared).eval()
        self.layers = batchnorm_layers(self.module)
        self.forwards = 0

    def __call__(self, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The buffers at `params` (all parameters, by name), as fresh tensors."""
        for layer in self.layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average, as in update_bn
            layer.train()
        try:
            with torch.no_grad():
                for x, _ in self.problem.batches(STATS_BATCH):
                    B.call(self.module, dict(params), x)
                    self.forwards += 1
        except LossatlasError:
            raise
        except Exception as exc:  # e.g. BatchNorm1d in train mode on a batch of one sample
            first = (str(exc).strip().splitlines() or [""])[0]
            raise LossatlasError(
                f"the BatchNorm statistics pass (bn='recompute') fails on the data: "
                f"{type(exc).__name__}: {first}"
            ) from exc
        finally:
            for layer in self.layers:
                layer.eval()
        return {name: b.clone() for name, b in self.module.named_buffers()}


def recomputed_stats(problem: Problem, *, path: str, slopes: bool) -> RecomputedStats | None:
    """The engine's statistics pass for `problem`: None unless bn="recompute" has work to do.

    Raises a one-line `LossatlasError` for what recomputing cannot go with: `slopes` and
    `path="vmap"`.
    """
    if problem.bn != "recompute" or not batchnorm_layers(problem.module):
        return None
    if slopes:
        raise LossatlasError(
            "slopes are not supported with bn='recompute' (the BatchNorm statistics depend on "
            "the point); use bn='eval' or slopes=False"
        )
    if path == "vmap":
        raise LossatlasError(
            "bn='recompute' evaluates one point at a time; use path='sequential' or 'auto'"
        )
    return RecomputedStats(problem)
