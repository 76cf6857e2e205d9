"""Independent float64 references for curvature tests: dense Hessians by `jacrev(grad)`.

Not `torch.func.hessian` (forward over reverse): in torch 2.13 it returns a wrong, asymmetric
Hessian for Linear -> LayerNorm -> Linear (max error 0.9 on a 3-4-2 network), while reverse
over reverse agrees with finite differences.

The reference never batches: it evaluates the loss on all (selected) samples at once, so it
also checks that the operator's per-batch sample weights add up to the whole-data loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, jacrev


def dense_hessian(
    model: nn.Module,
    loss_fn: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    names: Sequence[str] | None = None,
) -> torch.Tensor:
    """The float64 Hessian of `loss_fn(model(X), y)` w.r.t. `names` (all), flattened in order."""
    model = _float64_eval_copy(model)
    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    names = list(params) if names is None else list(names)
    fixed = {k: v for k, v in params.items() if k not in names}
    sizes = [params[k].numel() for k in names]
    shapes = [params[k].shape for k in names]
    X = X.double() if X.is_floating_point() else X
    y = y.double() if y.is_floating_point() else y

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        chosen = {k: p.reshape(s) for k, p, s in zip(names, parts, shapes)}
        out = functional_call(model, ({**fixed, **chosen}, buffers), (X,))
        return loss_fn(out, y)

    flat = torch.cat([params[k].reshape(-1) for k in names])
    return jacrev(grad(loss))(flat)


def _float64_eval_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).double().eval()


class PlantedLoss(nn.Module):
    """`0.5 sum_i y_i (x_i . w)^2`; rows `x_i = q_i`, `y_i = lambda_i`: H = Q diag(lambda) Q^T."""

    reduction = "sum"

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * (y * out.squeeze(-1) ** 2).sum()


def planted_quadratic(
    eigenvalues: Sequence[float], seed: int = 0
) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor], nn.Module, torch.Tensor]:
    """A linear model whose loss is a quadratic with exactly the given Hessian spectrum.

    Returns the model (float64, random weights), data `(Q^T, lambda)`, the loss and `Q` (the
    eigenvectors as columns, random orthogonal). Negative eigenvalues make it indefinite.
    """
    lam = torch.tensor(eigenvalues, dtype=torch.float64)
    d = len(lam)
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    return model, (Q.T.contiguous(), lam), PlantedLoss(), Q


def dense_hessian_call(
    model: nn.Module, loss_of: Callable[[Any], torch.Tensor], args: tuple = (), kwargs: Any = None
) -> torch.Tensor:
    """The float64 Hessian of `loss_of(model(*args, **kwargs))` over all parameters, flattened
    in order: one call on all the data, whatever structure the model takes and returns."""
    model = _float64_eval_copy(model)
    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    sizes, shapes = [p.numel() for p in params.values()], [p.shape for p in params.values()]

    def double(t: Any) -> Any:
        return t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    args = tuple(double(a) for a in args)
    kwargs = {k: double(v) for k, v in (kwargs or {}).items()}

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        chosen = {k: p.reshape(s) for k, p, s in zip(params, parts, shapes)}
        return loss_of(functional_call(model, (chosen, buffers), args, kwargs))

    return jacrev(grad(loss))(torch.cat([p.reshape(-1) for p in params.values()]))
