"""Directions in parameter space: random (normalised as in Li et al. 2018), between models, axes.

A direction is a `{parameter name: tensor}` dict shaped like the model's parameters. Parameters
a direction leaves out do not move. `Directions` is an immutable sequence of such dicts that also
carries the settings that produced it, so results can say where their axes came from.

Reference: H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape of
Neural Nets", NeurIPS 2018, section 4 (filter normalisation).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lossatlas.core.problem import Problem
from lossatlas.errors import LossatlasError, check_count, check_seed

Direction = dict[str, torch.Tensor]
NORMS = ("filter", "layer", "model", "none")
IGNORES = (None, "biasbn")


@dataclass(frozen=True, eq=False)
class Directions(Sequence[Direction]):
    """An immutable sequence of directions plus the settings that made them.

    Attributes:
        vectors: one `{parameter name: tensor}` dict per direction.
        settings: how they were made (`kind`, `norm`, `ignore`, `seed`, ...), saved with results.
    """

    vectors: tuple[Direction, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, index):  # type: ignore[override]
        return self.vectors[index]

    def __len__(self) -> int:
        return len(self.vectors)

    def __iter__(self) -> Iterator[Direction]:
        return iter(self.vectors)

    def cosine(self) -> float | None:
        """Cosine of the angle between the first two directions (None for one direction)."""
        if len(self) < 2:
            return None
        a, b = (torch.cat([t.reshape(-1).double() for t in v.values()]) for v in self[:2])
        denom = float(a.norm() * b.norm())
        return float(a @ b) / denom if denom > 0 else 0.0


def _weights(source: Problem | nn.Module) -> dict[str, torch.Tensor]:
    if isinstance(source, Problem):
        return source.params
    if isinstance(source, nn.Module):
        return {k: p.detach() for k, p in source.named_parameters()}
    raise LossatlasError(f"expected a Problem or an nn.Module, got {type(source).__name__}")


def _gram_schmidt_rows(blocks: list[torch.Tensor]) -> None:
    """Make row r of every block orthogonal to row r of the blocks before it, in place."""
    for j in range(1, len(blocks)):
        for i in range(j):
            sq = (blocks[i] * blocks[i]).sum(1, keepdim=True)
            coef = (blocks[j] * blocks[i]).sum(1, keepdim=True) / sq.clamp_min(1e-30)
            blocks[j] -= coef * blocks[i]


def _normalize(
    raw: list[Direction], weights: Mapping[str, torch.Tensor], norm: str, orthogonal: bool
) -> None:
    """Scale (and optionally orthogonalise) raw directions block by block, in place.

    Blocks are filters (rows along dim 0) for `filter`, whole tensors for `layer` and the whole
    model for `model`/`none`. Orthogonalising within every block before scaling keeps the block
    norms exact and makes the directions orthogonal as a whole, since blocks are disjoint.
    """
    if norm in ("model", "none"):
        names = list(raw[0])
        flat = [torch.cat([d[k].reshape(1, -1) for k in names], 1) for d in raw]
        if orthogonal:
            _gram_schmidt_rows(flat)
        if norm == "model":
            w_norm = torch.cat([weights[k].reshape(-1) for k in names]).norm()
            flat = [f * (w_norm / (f.norm() + 1e-10)) for f in flat]
        for d, f in zip(raw, flat):
            for k, piece in zip(names, f.split([d[k].numel() for k in names], 1)):
                d[k] = piece.reshape(d[k].shape)
        return
    for name, w in weights.items():
        if name not in raw[0]:
            continue
        rows = w.shape[0] if norm == "filter" else 1
        blocks = [d[name].reshape(rows, -1) for d in raw]
        if orthogonal:
            _gram_schmidt_rows(blocks)
        w_norms = w.reshape(rows, -1).norm(dim=1, keepdim=True)
        for d, b in zip(raw, blocks):
            d[name] = (b * (w_norms / (b.norm(dim=1, keepdim=True) + 1e-10))).reshape(w.shape)


def random_directions(
    source: Problem | nn.Module,
    n: int = 2,
    *,
    norm: str = "filter",
    ignore: str | None = "biasbn",
    seed: int = 0,
    orthogonal: bool = False,
) -> Directions:
    """Gaussian random directions, normalised to the scale of the weights.

    For `norm="filter"` every filter `d_{i,j}` (slice `j` along dim 0 of parameter `i`: an
    output channel of a convolution, a row of a linear layer) is rescaled to
    `d_{i,j} <- d_{i,j} / ||d_{i,j}|| * ||theta_{i,j}||` (Li et al. 2018, eq. in section 4).
    `"layer"` does the same per parameter tensor, `"model"` once for the whole model, `"none"`
    keeps the raw Gaussian.

    1-D parameters (biases, normalisation scales and shifts) are zeroed with `ignore="biasbn"`.
    Without it, `filter` and `layer` set them equal to the weights themselves, exactly as the
    reference implementation does; `model` and `none` leave them random.

    Args:
        source: a `Problem` or a model; its weights set the scale.
        n: number of directions.
        norm: `"filter"`, `"layer"`, `"model"` or `"none"`.
        ignore: `"biasbn"` or None.
        seed: seeds a private CPU generator, so directions are identical on every device.
        orthogonal: make the directions mutually orthogonal (within every normalisation block,
            so the normalisation is kept exactly).
    """
    if norm not in NORMS:
        raise LossatlasError(f"norm={norm!r} is not one of {NORMS}")
    if ignore not in IGNORES:
        raise LossatlasError(f"ignore={ignore!r} is not one of {IGNORES}")
    n = check_count("the number of directions", n)
    weights = _weights(source)
    gen = torch.Generator().manual_seed(check_seed(seed))
    raw = [
        {k: torch.randn(w.shape, generator=gen, dtype=torch.float64) for k, w in weights.items()}
        for _ in range(n)
    ]
    w64 = {k: w.detach().to("cpu", torch.float64) for k, w in weights.items()}
    one_d = {k for k, w in weights.items() if w.dim() <= 1}
    for d in raw:
        for k in one_d:
            if ignore == "biasbn":
                d[k].zero_()
            elif norm in ("filter", "layer"):
                d[k] = w64[k].clone()
    multi = [{k: v for k, v in d.items() if k not in one_d} for d in raw]
    if norm in ("model", "none"):
        _normalize(raw, w64, norm, orthogonal)
    else:
        _normalize(multi, w64, norm, orthogonal)
        for d, m in zip(raw, multi):
            d.update(m)
    vectors = tuple({k: d[k].to(weights[k].device, weights[k].dtype) for k in weights} for d in raw)
    settings = {
        "kind": "random",
        "norm": norm,
        "ignore": ignore or "none",
        "seed": int(seed),
        "orthogonal": bool(orthogonal),
    }
    return Directions(vectors, settings)


def direction_between(
    source: Problem | nn.Module, target: nn.Module | Mapping[str, torch.Tensor]
) -> Directions:
    """The direction `theta_target - theta_source`: span `(0, 1)` interpolates between them.

    Only parameters move. Buffers, such as BatchNorm running statistics, stay those of the
    problem's model along the whole path, so for models with BatchNorm the point `t = 1` does not
    reproduce the target model's loss.
    """
    weights = _weights(source)
    other = (
        {k: p.detach() for k, p in target.named_parameters()}
        if isinstance(target, nn.Module)
        else dict(target)
    )
    missing = sorted(set(weights) - set(other))
    if missing:
        raise LossatlasError(f"the target model lacks parameter {missing[0]!r}")
    vec = {}
    for k, w in weights.items():
        if tuple(other[k].shape) != tuple(w.shape):
            raise LossatlasError(
                f"parameter {k!r} has shape {tuple(other[k].shape)} in the target model "
                f"but {tuple(w.shape)} in the problem's model"
            )
        vec[k] = other[k].detach().to(w.device, w.dtype) - w
    return Directions((vec,), {"kind": "between"})


_ENTRY = re.compile(r"^\s*([\w.]+)\s*(?:\[([\d,\s-]*)\])?\s*$")


def parse_entry(entry: str, weights: Mapping[str, torch.Tensor]) -> tuple[str, tuple[int, ...]]:
    """Parse `"fc1.weight[0, 1]"` into a parameter name and an index checked against it."""
    match = _ENTRY.match(entry)
    if not match:
        raise LossatlasError(
            f"cannot read {entry!r}; write a parameter entry as 'fc1.weight[0, 1]'"
        )
    name, idx_text = match.group(1), match.group(2)
    if name not in weights:
        close = difflib.get_close_matches(name, list(weights), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise LossatlasError(f"the model has no parameter {name!r}{hint}")
    shape = tuple(weights[name].shape)
    try:
        index = tuple(int(i) for i in idx_text.split(",") if i.strip()) if idx_text else ()
    except ValueError:
        raise LossatlasError(
            f"cannot read the index in {entry!r}; write e.g. 'fc1.weight[0, 1]'"
        ) from None
    if len(index) != len(shape) or any(not -s <= i < s for i, s in zip(index, shape)):
        raise LossatlasError(f"{entry!r} is not an entry of {name!r}, whose shape is {shape}")
    return name, index


def axis_directions(source: Problem | nn.Module, entries: Sequence[str]) -> Directions:
    """Unit directions along chosen weights, e.g. `["fc1.weight[0, 1]", "fc2.bias[3]"]`.

    Coordinates of a surface along these directions are offsets of those weights from their
    current values, which are kept in `settings["origin_values"]`.
    """
    if isinstance(entries, str):
        entries = [entries]
    weights = _weights(source)
    vectors, origin = [], []
    for entry in entries:
        name, index = parse_entry(entry, weights)
        vec = torch.zeros_like(weights[name])
        vec[index] = 1.0
        vectors.append({name: vec})
        origin.append(float(weights[name][index]))
    settings = {"kind": "axis", "entries": list(entries), "origin_values": origin}
    return Directions(tuple(vectors), settings)


def as_directions(problem: Problem, directions: Any) -> Directions:
    """Check directions against the problem's parameters and move them to its device and dtype."""
    if isinstance(directions, Mapping):
        directions = [directions]
    if not isinstance(directions, Sequence) or len(directions) == 0:
        raise LossatlasError("directions must be a non-empty sequence of {name: tensor} dicts")
    vectors = []
    for i, d in enumerate(directions):
        if not isinstance(d, Mapping):
            raise LossatlasError(
                f"direction {i} is a {type(d).__name__}, not a {{name: tensor}} dict"
            )
        vec = {}
        for name, t in d.items():
            if name not in problem.params:
                close = difflib.get_close_matches(str(name), list(problem.params), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise LossatlasError(
                    f"direction {i} names {name!r}, not a parameter of the model{hint}"
                )
            shape = tuple(problem.params[name].shape)
            t = torch.as_tensor(t)
            if tuple(t.shape) != shape:
                raise LossatlasError(
                    f"direction {i} has shape {tuple(t.shape)} for {name!r}, the model has {shape}"
                )
            if not torch.isfinite(t).all():
                raise LossatlasError(f"direction {i} has non-finite entries in {name!r}")
            vec[name] = t.to(problem.device, problem.dtype)
        vectors.append(vec)
    settings = directions.settings if isinstance(directions, Directions) else {"kind": "user"}
    return Directions(tuple(vectors), dict(settings))


def as_center(problem: Problem, center: Any, *, what: str = "center") -> dict[str, torch.Tensor]:
    """A point in the problem's parameter space: its weights (None), another model or a dict.

    `what` names the argument in error messages.
    """
    if center is None:
        return problem.params
    if isinstance(center, nn.Module):
        center = {k: p.detach() for k, p in center.named_parameters()}
    if not isinstance(center, Mapping):
        raise LossatlasError(f"{what} must be a model or a {{name: tensor}} dict of its parameters")
    out = {}
    for name, w in problem.params.items():
        if name not in center:
            raise LossatlasError(f"{what} lacks parameter {name!r}")
        t = torch.as_tensor(center[name])
        if tuple(t.shape) != tuple(w.shape):
            raise LossatlasError(
                f"{what} has shape {tuple(t.shape)} for {name!r}, the model has {tuple(w.shape)}"
            )
        if not torch.isfinite(t).all():
            raise LossatlasError(f"{what} has non-finite entries in {name!r}")
        out[name] = t.detach().to(problem.device, problem.dtype)
    return out
