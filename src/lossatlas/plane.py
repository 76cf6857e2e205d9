"""Linearity of the input layer: compute its products once per batch instead of once per point.

If the first layer is `nn.Linear` or `nn.Conv2d` applied to the raw input `x`, its
pre-activation at the point `W0 + sum_j c_j D_j` (bias likewise) is

    layer(x; W0, b0) + sum_j c_j * layer(x; D_j, db_j),

so the `m + 1` products are computed once per data batch (one call with the weights stacked
along the output dimension) and every point costs one `addmm` instead of a full layer. The
layer is replaced, in a private copy of the model, by a module that returns the combination.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

SUPPORTED = (nn.Linear, nn.Conv2d)
CACHE_BYTES = 256 << 20  # products kept across chunks for data held in memory


class _Precomputed(nn.Module):
    """Stands in for the input layer and returns the pre-activation set just before the call."""

    def __init__(self) -> None:
        super().__init__()
        self.output: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.output is not None
        return self.output


def _find_input_layer(module: nn.Module, x: torch.Tensor, params) -> str | None:
    """Name of the supported layer that receives the raw input, if exactly one call does."""
    calls: list[str] = []

    def pre_hook(name):
        def hook(mod, args):
            if args and args[0] is x and type(mod) in SUPPORTED:
                calls.append(name)
            elif type(mod) in SUPPORTED:
                calls.append("")

        return hook

    handles = [m.register_forward_pre_hook(pre_hook(n)) for n, m in module.named_modules()]
    try:
        with torch.no_grad():
            torch.func.functional_call(module, params, (x,))
    finally:
        for h in handles:
            h.remove()
    if not calls or not calls[0] or calls.count(calls[0]) != 1:
        return None
    return calls[0]


class InputLayerShortcut:
    """Precomputes the input layer's products and combines them for a chunk of points."""

    def __init__(
        self,
        module: nn.Module,
        name: str,
        layer: nn.Module,
        center: Mapping[str, torch.Tensor],
        stacks: Mapping[str, torch.Tensor],
    ) -> None:
        self.name = name
        self.layer = layer
        self.module = copy.deepcopy(module)
        self.substitute = _Precomputed()
        parent_name, _, child = name.rpartition(".")
        parent = self.module.get_submodule(parent_name) if parent_name else self.module
        setattr(parent, child, self.substitute)
        self.owned = {f"{name}.weight", f"{name}.bias"}
        weight, bias = center[f"{name}.weight"], center.get(f"{name}.bias")
        m = len(next(iter(stacks.values())))
        dws = stacks.get(
            f"{name}.weight",
            torch.zeros((m, *weight.shape), dtype=weight.dtype, device=weight.device),
        )
        self.weights = torch.cat([weight[None], dws]).flatten(0, 1)
        self.bias = None
        if bias is not None:
            dbs = stacks.get(
                f"{name}.bias", torch.zeros((m, *bias.shape), dtype=bias.dtype, device=bias.device)
            )
            self.bias = torch.cat([bias[None], dbs]).flatten()
        self.m = m
        self._cache: dict[int, torch.Tensor] = {}
        self._cached_bytes = 0

    @classmethod
    def detect(cls, module: nn.Module, x: torch.Tensor, center, buffers, stacks):
        """A shortcut for this model, or None when the input layer is not a plain one."""
        name = _find_input_layer(module, x, (center, buffers))
        if name is None:
            return None
        layer = module.get_submodule(name)
        if x.ndim != (2 if isinstance(layer, nn.Linear) else 4):
            return None
        m = len(next(iter(stacks.values())))
        fan_in = layer.weight[0].numel()
        shared = sum(p is layer.weight for _, p in module.named_parameters(remove_duplicate=False))
        if fan_in < 4 * m or shared != 1:  # not worth it, or the weight is used elsewhere
            return None
        return cls(module, name, layer, center, stacks)

    def products(self, x: torch.Tensor, batch_index: int | None) -> torch.Tensor:
        """The `m + 1` input-layer products for batch `x`, shape `(m + 1, N, *out)`."""
        if batch_index is not None and batch_index in self._cache:
            return self._cache[batch_index]
        if isinstance(self.layer, nn.Linear):
            out = F.linear(x, self.weights, self.bias)
        else:
            out = self.layer._conv_forward(x, self.weights, self.bias)
        parts = out.unflatten(1, (self.m + 1, -1)).movedim(1, 0).contiguous()
        size = parts.numel() * parts.element_size()
        if batch_index is not None and self._cached_bytes + size <= CACHE_BYTES:
            self._cache[batch_index] = parts
            self._cached_bytes += size
        return parts

    def combine(self, products: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        """Pre-activations `P0 + C @ P` for coefficient rows `coeffs` (K, m): `(K, N, *out)`."""
        flat = products.flatten(1)
        out = torch.addmm(flat[0], coeffs, flat[1:])
        return out.view(coeffs.shape[0], *products.shape[1:])
