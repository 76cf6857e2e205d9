"""Checkpoints: state dicts read weights-only, and models trained elsewhere as `TrainedModel`s."""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lossatlas.core.problem import Problem
from lossatlas.core.provenance import versions
from lossatlas.errors import LossatlasError, one_line
from lossatlas.training.trainer import TrainedModel

CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")  # common checkpoint layouts


def read_state_dict(weights: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a file, read with `torch.load(weights_only=True)` (never unpickling
    arbitrary objects); a checkpoint dict holding it under a common key is unwrapped."""
    path = Path(weights)
    if not path.is_file():
        raise LossatlasError(f"no weights file {str(path)!r}")
    try:
        with warnings.catch_warnings():  # e.g. torch's note on the pickle protocol
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:  # not a file torch.save wrote
            raise LossatlasError(
                f"cannot load {path} as a state dict: not a file written by torch.save"
            ) from None
        raise LossatlasError(
            f"{path} holds a pickled {found.group(1)}, and lossatlas never unpickles objects "
            "other than tensors (torch.load weights only); save model.state_dict() instead"
        ) from None
    except Exception as exc:
        raise LossatlasError(
            f"cannot load {path} as a state dict (weights only): {one_line(exc)}"
        ) from exc
    for key in CHECKPOINT_KEYS if isinstance(state, dict) else ():
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise LossatlasError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def _state_of(source: Any, i: int) -> tuple[Mapping[str, Any], str, dict[str, Any]]:
    """A source's state dict, default name and origin."""
    if isinstance(source, nn.Module):
        return source.state_dict(), f"{type(source).__name__} {i}", {"source": "module"}
    if isinstance(source, (str, Path)):
        path = Path(source)
        source, name, origin = (
            read_state_dict(path),
            path.stem,
            {"source": "file", "path": str(path)},
        )
    else:
        name, origin = f"model {i}", {"source": "state dict"}
    if not isinstance(source, Mapping):
        raise LossatlasError(
            f"checkpoint {i} must be a state dict, an nn.Module or a file path, "
            f"got {type(source).__name__}"
        )
    return source, name, origin


def check_state(
    problem: Problem, state: Mapping[str, Any], what: str, known: set[str] | None = None
) -> None:
    """A one-line error naming `what` unless `state` fits the problem's model: every parameter
    with its shape (missing, unknown and misshapen entries named, with shapes); buffers may be
    absent."""
    known = set(problem.module.state_dict()) if known is None else known
    unknown = sorted(set(state) - known)
    if unknown:
        more = f" (+{len(unknown) - 3} more)" if unknown[3:] else ""
        names = ", ".join(map(repr, unknown[:3]))
        raise LossatlasError(f"{what} does not fit the model: unknown {names}{more}")
    problem.check_params(
        {k: v for k, v in state.items() if k in problem.params or k not in problem.buffers}, what
    )


def from_checkpoints(
    problem: Problem, sources: Sequence[Any], *, names: Sequence[str] | None = None
) -> list[TrainedModel]:
    """Models trained elsewhere as `TrainedModel`s (empty history), for `compare_minima`.

    Args:
        problem: a problem of the same architecture.
        sources: state dicts, `nn.Module`s or files written by `torch.save` (a state dict, or a
            dict holding one under `"state_dict"`, `"model_state_dict"` or `"model"`), read with
            `torch.load(weights_only=True)`: no code is unpickled.
        names: one label per source (default the file stem, or `"model i"`).

    Every parameter must be present with its shape; buffers absent from a source keep the
    problem's values. Values are cast to the problem's dtype and held on the CPU.
    """
    if isinstance(sources, (str, Path, Mapping, nn.Module)) or not isinstance(sources, Sequence):
        sources = [sources]
    if names is not None and len(names) != len(sources):
        raise LossatlasError(f"names has {len(names)} entries for {len(sources)} checkpoints")
    known = set(problem.module.state_dict())
    out = []
    for i, source in enumerate(sources):
        state, name, origin = _state_of(source, i)
        check_state(problem, state, f"checkpoint {i}", known)
        if not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise LossatlasError(f"checkpoint {i} holds values that are not tensors")

        def cast(t: torch.Tensor) -> torch.Tensor:
            t = t.detach().to("cpu")
            return (t.to(problem.dtype) if t.is_floating_point() else t).clone()

        params = {k: cast(state[k]) for k in problem.params}
        buffers = {k: cast(state.get(k, b)) for k, b in problem.buffers.items()}
        label = str(names[i]) if names is not None else name
        prov = {"versions": versions(), "dtype": str(problem.dtype)}
        out.append(TrainedModel(label, params, buffers, {}, origin, prov))
    return out
