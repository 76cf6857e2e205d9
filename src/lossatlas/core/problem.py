"""A landscape problem: a model, a loss, data and optional metrics.

The user's model is never modified: `Problem` keeps a private copy in evaluation mode on the
requested device and dtype, and every evaluation goes through `torch.func.functional_call` with
explicit parameter dictionaries.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lossatlas.core import batches as B
from lossatlas.errors import LossatlasError, one_line

Batch = tuple[B.Inputs, B.Targets]
LossFn = Callable[[Any, Any], torch.Tensor]
WeightFn = Callable[[B.Inputs, B.Targets], Any]

BN_MODES = ("eval", "recompute")


def batchnorm_layers(module: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of `module` (those update_bn resets), in module order."""
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


def batch_value(value: torch.Tensor) -> torch.Tensor:
    """A loss or metric of one batch as a float64 scalar (per-sample outputs are averaged)."""
    value = torch.as_tensor(value).to(torch.float64)
    return value.mean() if value.ndim > 0 else value


def _is_one_batch(data: Any) -> bool:
    """Whether `data` is one batch (a mapping of tensors, or an `(inputs, targets)` pair whose
    targets are a tensor) rather than a collection of batches."""
    if isinstance(data, Mapping):
        return any(isinstance(v, torch.Tensor) for v in data.values())
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and isinstance(data[1], torch.Tensor)
        and (isinstance(data[0], (torch.Tensor, Mapping)) or _tensors(data[0]))
    )


def _tensors(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in value)


class Problem:
    """A model, a loss function and data, evaluated without touching the model.

    Args:
        model: any `nn.Module`. It is copied once; the copy is put in evaluation mode.
        loss_fn: `loss_fn(outputs, targets)`. A mean-reduced loss (the default of every
            `torch.nn` loss) is averaged over batches weighted by their units (`weight`), so
            the result equals the loss over the whole data at once; a `reduction="sum"` loss is
            summed; a `reduction="none"` loss (or any per-sample output) is averaged. A
            `torch.nn` loss given structured outputs (a tuple, a dict, a Hugging Face
            `ModelOutput`) reads their logits; another callable gets the outputs as they are.
            `None` takes the model's own loss (`outputs.loss`), as Hugging Face models compute
            it when the batch holds `labels`.
        data: one batch, a sequence of batches, or any re-iterable of batches such as a
            `DataLoader` (iterated once here to count the samples, which exact weighted
            averages need). A batch is an `(inputs, targets)` pair, where the inputs are a
            tensor (`model(x)`), a tuple or list of tensors (`model(*x)`) or a mapping
            (`model(**x)`); or a mapping in the Hugging Face style (`model(**batch)`, its
            targets under `"labels"`). Integer tensors keep their dtype.
        metrics: named functions `metric(outputs, targets)` returning a per-batch mean (for
            example `lossatlas.accuracy`), averaged like the loss.
        weight: `weight(inputs, targets)`, the number of units a batch's mean loss averages
            over (default: its samples); e.g. `lossatlas.token_count()` for a language model
            whose loss averages over the tokens that are not padding.
        batch_size: split a single batch into batches of this size. The default lets the
            engine choose from its memory budget. Ignored for other data.
        device: where to evaluate; defaults to the device of the model's first parameter.
        dtype: floating dtype (or its name, e.g. "float64") for the model copy and the inputs;
            defaults to the model's.
        bn: how BatchNorm is treated; dropout is always off. `"eval"` uses the stored running
            statistics. `"recompute"` recomputes them at every evaluated point on this data,
            exactly as `torch.optim.swa_utils.update_bn` at the point's weights but with
            dropout off, then evaluates in eval mode: two passes over the data per point, one
            point at a time (see `lossatlas.core.batchnorm`). The Hessian, its estimators, `descend`
            and `input_surface` need stored statistics and refuse it on a model with BatchNorm.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn | None,
        data: Any,
        *,
        metrics: Mapping[str, LossFn] | None = None,
        weight: WeightFn | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        bn: str = "eval",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise LossatlasError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise LossatlasError("loss_fn must be callable as loss_fn(outputs, targets), or None")
        if weight is not None and not callable(weight):
            raise LossatlasError("weight must be callable as weight(inputs, targets)")
        if not isinstance(bn, str) or bn not in BN_MODES:
            raise LossatlasError(f"bn={bn!r} is not supported; choose one of {BN_MODES}")
        if batch_size is not None and batch_size < 1:
            raise LossatlasError(f"batch_size must be at least 1, got {batch_size}")
        for name, fn in (metrics or {}).items():
            if not isinstance(name, str) or not name:
                raise LossatlasError(f"metric names must be non-empty strings, got {name!r}")
            if not callable(fn):
                raise LossatlasError(f"metric {name!r} is not callable")
        first = next(model.parameters(), None)
        if first is None:
            raise LossatlasError("the model has no parameters to move along")
        if first.is_meta:
            raise LossatlasError(
                "the model's weights are on the meta device (not materialised): initialise or "
                "load them first (e.g. model.to_empty(device='cpu') and a state dict)"
            )
        self.model = model
        if loss_fn is None:
            loss_fn = B.own_loss
        elif isinstance(loss_fn, nn.modules.loss._Loss):
            loss_fn = B.on_logits(loss_fn)
        self.loss_fn = loss_fn
        self.weight = weight
        self.metrics: dict[str, LossFn] = dict(metrics or {})
        try:
            self.device = torch.device(device) if device is not None else first.device
        except (RuntimeError, TypeError) as exc:
            raise LossatlasError(f"cannot use device {device!r}: {exc}") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise LossatlasError(f"device {device!r} was asked for, but CUDA is not available")
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype.removeprefix("torch."), dtype)
        self.dtype = dtype if dtype is not None else first.dtype
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise LossatlasError(f"dtype must be a floating dtype, got {self.dtype!r}")
        self.bn = bn
        self.batch_size = batch_size
        self.reduction = getattr(loss_fn, "reduction", "mean")

        self.module = copy.deepcopy(model).to(device=self.device, dtype=self.dtype).eval()
        self.params: dict[str, torch.Tensor] = {
            name: p.detach() for name, p in self.module.named_parameters()
        }
        for name, p in self.params.items():
            p.requires_grad_(False)
            if not torch.isfinite(p).all():
                raise LossatlasError(
                    f"the model's weight {name!r} has non-finite entries (NaN or inf)"
                )
        self.buffers: dict[str, torch.Tensor] = dict(self.module.named_buffers())

        self._pair: Batch | None = None
        self._batches: list[Batch] | None = None
        self._loader: Iterable | None = None
        if _is_one_batch(data):
            self._pair = self._to_device(B.split(data, "data"))
            self.n_samples = B.size(self._pair[0])
            self.n_units = self._count_units([self._pair])
        elif isinstance(data, Sequence) and not isinstance(data, (str, bytes, torch.Tensor)):
            self._batches = [self._to_device(B.split(b, f"batch {i}")) for i, b in enumerate(data)]
            self.n_samples = sum(B.size(x) for x, _ in self._batches)
            self.n_units = self._count_units(self._batches)
        elif isinstance(data, Iterator):
            raise LossatlasError(
                "data is a one-shot iterator (a generator?); pass a list of batches or a "
                "DataLoader, which can be iterated again for every pass"
            )
        elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, torch.Tensor)):
            self._loader = data
            counted = [B.split(b, "a batch") for b in data]
            self.n_samples = sum(B.size(x) for x, _ in counted)
            self.n_units = self._count_units(counted)
        else:
            raise LossatlasError(
                "data must be a batch ((inputs, targets) or a mapping of tensors), a list of "
                "batches or a DataLoader"
            )
        if self.n_samples == 0:
            raise LossatlasError("the dataset is empty: there is nothing to evaluate the loss on")
        if self.n_units <= 0:
            raise LossatlasError("weight counts no units in the whole data (all padding?)")

    def units(self, inputs: B.Inputs, targets: B.Targets) -> float:
        """What a batch's mean loss averages over: `weight(inputs, targets)`, else its samples."""
        if self.weight is None:
            return float(B.size(inputs))
        try:
            value = self.weight(inputs, targets)
            value = float(value.item() if isinstance(value, torch.Tensor) else value)
        except LossatlasError:
            raise
        except Exception as exc:
            raise LossatlasError(f"weight fails on a batch: {one_line(exc)}") from exc
        if not value >= 0 or value == float("inf"):
            raise LossatlasError(f"weight must count units (>= 0), got {value!r}")
        return value

    def _count_units(self, batches: Iterable[Batch]) -> float:
        return sum(self.units(x, y) for x, y in batches)

    @property
    def n_params(self) -> int:
        """Number of scalar parameters (tied parameters counted once)."""
        return sum(p.numel() for p in self.params.values())

    def batch_weight(self, units: float) -> float:
        """Weight of a batch of `units` (see `units`) in the total loss: `units` for a mean
        loss, 1 for a sum.

        The total of weighted batch losses divided by `loss_divisor` equals the loss over the
        whole data at once.
        """
        return 1.0 if self.reduction == "sum" else float(units)

    def divisor_of(self, batches: Iterable[Batch]) -> float:
        """What the weighted losses of `batches` are divided by to give their joint loss: their
        units for a mean loss, 1 for a sum (`loss_divisor` is this over all the data)."""
        return 1.0 if self.reduction == "sum" else sum(self.units(x, y) for x, y in batches)

    @property
    def loss_divisor(self) -> float:
        """What the total of weighted batch losses is divided by (see `batch_weight`)."""
        return 1.0 if self.reduction == "sum" else float(self.n_units)

    @property
    def in_memory(self) -> bool:
        """Whether the data is held as tensors (so batches are the same objects every pass)."""
        return self._loader is None

    @property
    def splittable(self) -> bool:
        """Whether the engine may choose the batch size (an `(X, y)` pair without one set)."""
        return self._pair is not None and self.batch_size is None

    def _to_device(self, batch: Batch) -> Batch:
        def move(t: torch.Tensor) -> torch.Tensor:
            floating = t.is_floating_point()
            return t.to(self.device, dtype=self.dtype) if floating else t.to(self.device)

        return B.apply(batch[0], move), B.apply(batch[1], move)

    def call(self, state: Any, inputs: B.Inputs) -> Any:
        """The private model's outputs on `inputs` at `state` (parameter and buffer dicts)."""
        return B.call(self.module, state, inputs)

    def max_batch_size(self) -> int:
        """Largest batch the data will be served in, for memory planning."""
        if self._pair is not None:
            return min(self.n_samples, self.batch_size or self.n_samples)
        if self._batches is not None:
            return max(B.size(x) for x, _ in self._batches)
        return max(B.size(B.split(b, "a batch")[0]) for b in self._loader)  # type: ignore[union-attr]

    def batches(self, batch_size: int | None = None) -> Iterator[Batch]:
        """Yield the data as `(X, y)` batches on the problem's device.

        `batch_size` only applies to an `(X, y)` pair (the engine passes its choice here);
        `Problem(batch_size=...)` wins when set. A batch in which `weight` counts no units
        (say, text whose labels are all padding) is skipped: its share of the loss is zero,
        while its mean loss is 0/0 (NaN in Hugging Face's losses).
        """
        for batch in self._every_batch(batch_size):
            if self.weight is None or self.units(*batch) > 0:
                yield batch

    def _every_batch(self, batch_size: int | None) -> Iterator[Batch]:
        if self._pair is not None:
            size = self.batch_size or batch_size or self.n_samples
            x, y = self._pair
            if size >= self.n_samples:
                yield x, y
                return
            for start in range(0, self.n_samples, size):
                part = slice(start, start + size)
                yield B.take(x, part), None if y is None else y[part]
        elif self._batches is not None:
            yield from self._batches
        else:
            for batch in self._loader:  # type: ignore[union-attr]
                yield self._to_device(B.split(batch, "a batch"))

    def first_batch(self) -> Batch:
        """A small batch for probing the model."""
        x, y = next(self.batches())
        return B.take(x, slice(0, 2)), None if y is None else y[:2]

    def fingerprint(self) -> str:
        """A hash of the data (tensors in memory) or its size (other iterables)."""
        h = hashlib.blake2b(digest_size=12)
        h.update(f"{self.n_samples}".encode())
        if self._loader is None:
            for batch in self.batches():
                for t in B.leaves(batch):
                    h.update(str(tuple(t.shape)).encode())
                    h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
        return h.hexdigest()

    def with_bn(self, bn: str) -> Problem:
        """This problem with another `bn` mode (sharing the model copy and the data)."""
        if not isinstance(bn, str) or bn not in BN_MODES:
            raise LossatlasError(f"bn={bn!r} is not supported; choose one of {BN_MODES}")
        out = copy.copy(self)
        out.bn = bn
        return out

    def require_eval_bn(self, what: str) -> None:
        """Refuse, in one line, a `bn="recompute"` problem with BatchNorm for `what`.

        For tools that evaluate with the stored statistics (a model without BatchNorm passes:
        recomputing changes nothing there).
        """
        if self.bn != "eval" and batchnorm_layers(self.module):
            raise LossatlasError(
                f"{what} does not support bn={self.bn!r} (it uses the stored BatchNorm "
                "statistics); use a Problem with bn='eval'"
            )

    def check_params(self, params: Mapping[str, Any], what: str) -> None:
        """A one-line error naming `what` unless `params` has exactly this model's parameter
        names and shapes."""
        own = {k: tuple(v.shape) for k, v in self.params.items()}
        given = {
            str(k): tuple(getattr(v, "shape", None) or torch.as_tensor(v).shape)
            for k, v in params.items()
        }
        if given != own:
            shapes = [
                f"{k!r} is {given[k]}, the model's {own[k]}"
                for k in sorted(set(own) & set(given))
                if own[k] != given[k]
            ]
            problems = {
                "missing": [repr(k) for k in sorted(set(own) - set(given))],
                "unknown": [repr(k) for k in sorted(set(given) - set(own))],
                "wrong shape:": shapes,
            }
            text = "; ".join(
                f"{how} {', '.join(found[:3])}" + (f" (+{len(found) - 3} more)" * bool(found[3:]))
                for how, found in problems.items()
                if found
            )
            raise LossatlasError(f"{what} does not fit the problem's model: {text}")

    def with_weights(
        self,
        params: Mapping[str, torch.Tensor],
        buffers: Mapping[str, torch.Tensor] | None = None,
    ) -> Problem:
        """A copy of this problem at other weights (and buffers, e.g. BatchNorm statistics).

        The data, loss and metrics are shared; the copy's private module holds the new values,
        cast to the problem's device and dtype. Every parameter must be given, with its shape;
        buffers not given keep this problem's values.
        """
        self.check_params(params, "the state given")
        unknown = sorted(set(buffers or {}) - set(self.buffers))
        if unknown:
            raise LossatlasError(f"unknown buffers {unknown[:3]}")
        module = copy.deepcopy(self.module)
        state = {**{k: torch.as_tensor(v) for k, v in params.items()}, **dict(buffers or {})}
        with torch.no_grad():
            for name, value in module.state_dict(keep_vars=True).items():
                if name in state:
                    value.copy_(state[name].to(value.device, value.dtype))
        out = copy.copy(self)
        out.module = module.eval()
        out.params = {k: p.detach().requires_grad_(False) for k, p in module.named_parameters()}
        out.buffers = dict(module.named_buffers())
        return out

    def __repr__(self) -> str:
        return (
            f"Problem(model={type(self.model).__name__}, n_params={self.n_params}, "
            f"n_samples={self.n_samples}, metrics={list(self.metrics)}, device={self.device}, "
            f"dtype={self.dtype}, bn={self.bn!r})"
        )
