"""Linearity of the input layer: compute its products once per batch instead of once per point.

If the first layer is `nn.Linear` or `nn.Conv2d` applied to the raw input `x`, its
pre-activation at the point `W0 + sum_j c_j D_j` (bias likewise) is

    layer(x; W0, b0) + sum_j c_j * layer(x; D_j, db_j),

so the `m + 1` products are computed once per data batch (one call with the weights stacked
along the output dimension) and every point costs one `addmm` instead of a full layer. The
layer is replaced, in a private copy of the model, by a module that returns the combination.

Not applied to an `nn.Embedding` input layer: its output is linear in the weight too, but a
lookup is a gather that costs no more than the combination that would replace it. Models
called with several or named inputs (`model(*x)`, `model(**x)`, as Hugging Face models are)
run without the shortcut.
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
    """Stands in for the input layer: returns its `output` buffer, which every call passes in
    through `functional_call` (so the hand-off is a plain tensor input, vmap- and compile-safe)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("output", torch.empty(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output


def _find_input_layer(module: nn.Module, x: torch.Tensor, params) -> str | None:
    """Name of the layer that first receives the raw input, if it is supported and called once."""
    calls: list[tuple[str, bool]] = []

    def pre_hook(name):
        def hook(mod, args):
            calls.append((name, bool(args) and args[0] is x and type(mod) in SUPPORTED))

        return hook

    handles = [m.register_forward_pre_hook(pre_hook(n)) for n, m in module.named_modules() if n]
    try:
        with torch.no_grad():
            torch.func.functional_call(module, params, (x,))
    finally:
        for h in handles:
            h.remove()
    raw = [name for name, is_raw in calls if is_raw]
    if not raw or [name for name, _ in calls].count(raw[0]) != 1:
        return None
    return raw[0]


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
        self.output_name = f"{name}.output"  # where each call passes the pre-activation
        parent_name, _, child = name.rpartition(".")
        parent = self.module.get_submodule(parent_name) if parent_name else self.module
        setattr(parent, child, _Precomputed())
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
        self.nhwc = False  # layout of the latest products (channels-last image batches)

    @classmethod
    def detect(cls, module: nn.Module, x: torch.Tensor, center, buffers, stacks):
        """A shortcut for this model, or None when the input layer is not a plain one.

        The shortcut is kept only if the substituted model reproduces the original's outputs on
        the probe batch at a point off the centre, which also rules out forwards that read the
        layer's weights directly (a tied transpose, say).
        """
        name = _find_input_layer(module, x, (center, buffers))
        if name is None:
            return None
        layer = module.get_submodule(name)
        if x.ndim != (2 if isinstance(layer, nn.Linear) else 4) or getattr(layer, "groups", 1) != 1:
            return None
        m = len(next(iter(stacks.values())))
        shared = sum(p is layer.weight for _, p in module.named_parameters(remove_duplicate=False))
        if layer.weight[0].numel() < 4 * m or shared != 1:  # not worth it, or weight shared
            return None
        shortcut = cls(module, name, layer, center, stacks)
        return shortcut if shortcut._reproduces(module, x, center, buffers, stacks) else None

    def _reproduces(self, module, x, center, buffers, stacks) -> bool:
        coeffs = torch.full((1, self.m), 0.5, dtype=x.dtype, device=x.device)
        point = {
            **center,
            **{n: center[n] + torch.tensordot(coeffs[0], d, 1) for n, d in stacks.items()},
        }
        try:
            with torch.no_grad():
                expected = torch.func.functional_call(module, (point, buffers), (x,))
                pre = {self.output_name: self.combine(self.products(x, None), coeffs)[0]}
                rest = {n: t for n, t in point.items() if n not in self.owned}
                got = torch.func.functional_call(self.module, (rest, buffers, pre), (x,))
            return bool(
                torch.allclose(
                    got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()) + 1e-6
                )
            )
        except Exception:  # the forward reads the replaced layer in another way
            return False

    def products(self, x: torch.Tensor, batch_index: int | None) -> torch.Tensor:
        """The `m + 1` input-layer products for batch `x`: `(m + 1, N, *out)`.

        For a channels-last image batch they are stored as `(m + 1, N, H, W, C)` so that
        `combine` returns channels-last pre-activations without a copy.
        """
        if batch_index is not None and batch_index in self._cache:
            return self._cache[batch_index]
        if isinstance(self.layer, nn.Linear):
            out = F.linear(x, self.weights, self.bias)
        else:
            out = self.layer._conv_forward(x, self.weights, self.bias)
        if _channels_last(out):
            parts = out.permute(0, 2, 3, 1).unflatten(-1, (self.m + 1, -1)).movedim(3, 0)
        else:
            parts = out.unflatten(1, (self.m + 1, -1)).movedim(1, 0)
        parts = parts.contiguous()
        size = parts.numel() * parts.element_size()
        if batch_index is not None and self._cached_bytes + size <= CACHE_BYTES:
            self._cache[batch_index] = parts
            self._cached_bytes += size
        self.nhwc = _channels_last(out)
        return parts

    def combine(self, products: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        """Pre-activations `P0 + C @ P` for coefficient rows `coeffs` (K, m): `(K, N, *out)`."""
        flat = products.flatten(1)
        out = torch.addmm(flat[0], coeffs, flat[1:]).view(coeffs.shape[0], *products.shape[1:])
        return out.permute(0, 1, 4, 2, 3) if self.nhwc else out


def _channels_last(t: torch.Tensor) -> bool:
    return (
        t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    )
