"""Independent float64 references for models of any calling convention (not tests).

A reference never batches and never uses lossatlas: it deep-copies the model, casts it to
float64, writes the weights with `copy_` (or passes them through `functional_call`) and calls it
once on all the data. Derivatives come from plain autograd; the dense Hessian is reverse over
reverse (`jacrev(grad)`): `torch.func.hessian` (forward over reverse) returns a wrong, asymmetric
matrix for a `Linear -> LayerNorm -> Linear` stack in torch 2.13.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, jacrev

F64 = torch.float64


def cast(value: Any, dtype: torch.dtype = F64) -> Any:
    """`value` with every floating tensor (in tuples, lists and dicts too) cast to `dtype`."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, Mapping):
        return {k: cast(v, dtype) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(cast(v, dtype) for v in value)
    return value


def moved(
    model: nn.Module, params: Mapping[str, torch.Tensor] | None = None, *, dtype=F64
) -> nn.Module:
    """A deep copy of `model` in `dtype` and evaluation mode with `params` written by `copy_`
    (a tied weight is one tensor in the copy too, so writing it once moves every use)."""
    copied = copy.deepcopy(model).to(dtype).eval()
    if params is not None:
        with torch.no_grad():
            for name, p in copied.named_parameters():
                p.copy_(torch.as_tensor(params[name]).to(p.dtype))
    return copied


def loss_at(
    model: nn.Module,
    loss_of: Callable[[Any], torch.Tensor],
    args: tuple = (),
    kwargs: Mapping[str, Any] | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
) -> float:
    """`loss_of(model(*args, **kwargs))` in float64 at `params` (default the model's weights)."""
    with torch.no_grad():
        out = moved(model, params)(*cast(args), **cast(dict(kwargs or {})))
        return float(loss_of(out))


def flat_loss(
    model: nn.Module,
    loss_of: Callable[[Any], torch.Tensor],
    args: tuple = (),
    kwargs: Mapping[str, Any] | None = None,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, list[str]]:
    """The float64 loss on all data as a function of all parameters flattened.

    Returns:
        `(loss, theta0, names)`: `loss(flat)` evaluates `loss_of(model(*args, **kwargs))` at the
        flat weights, `theta0` are the model's weights flattened in `named_parameters` order (a
        tied weight once, under its first name) and `names` that order.
    """
    copied = moved(model)
    params = {k: p.detach() for k, p in copied.named_parameters()}
    buffers = dict(copied.named_buffers())
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    args, kwargs = cast(tuple(args)), cast(dict(kwargs or {}))

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        state = {k: p.reshape(s) for k, p, s in zip(names, parts, shapes)}
        return loss_of(functional_call(copied, (state, buffers), args, kwargs))

    return loss, torch.cat([params[k].reshape(-1) for k in names]), names


def dense_hessian(
    loss: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor
) -> torch.Tensor:
    """The dense Hessian of `loss` at `theta`, reverse over reverse, symmetrised (the two
    triangles agree to rounding; averaging them removes that rounding from comparisons)."""
    H = jacrev(grad(loss))(theta)
    return (H + H.T) / 2


def flat(params: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """`params` (a `{name: tensor}` dict) flattened in the order `names`, float64."""
    return torch.cat([torch.as_tensor(params[n]).reshape(-1).to(F64) for n in names])


def offsets(
    params: Mapping[str, torch.Tensor], directions: Sequence[Mapping], coeffs: Sequence[float]
) -> dict[str, torch.Tensor]:
    """`params + sum_j c_j d_j` as a new `{name: tensor}` dict."""
    return {
        n: w + sum(float(c) * d[n] for c, d in zip(coeffs, directions)) for n, w in params.items()
    }


def slopes(
    loss: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, directions: Sequence
) -> list[float]:
    """`dL/dc_j = grad L(theta) . d_j` for flat directions `d_j`, by autograd."""
    theta = theta.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(theta), theta)
    return [float(g @ d) for d in directions]
