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

from lossatlas.errors import LossatlasError

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

BN_MODES = ("eval", "recompute")


def batchnorm_layers(module: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of `module` (those update_bn resets), in module order."""
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


def batch_value(value: torch.Tensor) -> torch.Tensor:
    """A loss or metric of one batch as a float64 scalar (per-sample outputs are averaged)."""
    value = torch.as_tensor(value).to(torch.float64)
    return value.mean() if value.ndim > 0 else value


def _is_pair(data: Any) -> bool:
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    )


def _check_batch(batch: Any, where: str) -> Batch:
    if not _is_pair(batch):
        raise LossatlasError(
            f"{where} is not an (inputs, targets) pair of tensors (got {type(batch).__name__})"
        )
    x, y = batch
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise LossatlasError(
            f"{where}: inputs and targets disagree on the number of samples "
            f"(inputs {tuple(x.shape)}, targets {tuple(y.shape)})"
        )
    return x, y


class Problem:
    """A model, a loss function and data, evaluated without touching the model.

    Args:
        model: any `nn.Module`. It is copied once; the copy is put in evaluation mode.
        loss_fn: `loss_fn(outputs, targets)`. A mean-reduced loss (the default of every
            `torch.nn` loss) is averaged over batches weighted by sample count, so the result
            equals the loss over the whole data at once; a `reduction="sum"` loss is summed; a
            `reduction="none"` loss (or any per-sample output) is averaged.
        data: an `(X, y)` pair of tensors, a sequence of `(X, y)` batches, or any re-iterable of
            batches such as a `DataLoader` (iterated once here to count the samples, which exact
            sample-weighted averages need).
        metrics: named functions `metric(outputs, targets)` returning a per-batch mean (for
            example `lossatlas.accuracy`), averaged like the loss.
        batch_size: split an `(X, y)` pair into batches of this size. The default lets the
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
        loss_fn: LossFn,
        data: Any,
        *,
        metrics: Mapping[str, LossFn] | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        bn: str = "eval",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise LossatlasError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise LossatlasError("loss_fn must be callable as loss_fn(outputs, targets)")
        if not isinstance(bn, str) or bn not in BN_MODES:
            raise LossatlasError(f"bn={bn!r} is not supported; choose one of {BN_MODES}")
        if batch_size is not None and batch_size < 1:
            raise LossatlasError(f"batch_size must be at least 1, got {batch_size}")
        for name, fn in (metrics or {}).items():
            if not callable(fn):
                raise LossatlasError(f"metric {name!r} is not callable")
        first = next(model.parameters(), None)
        if first is None:
            raise LossatlasError("the model has no parameters to move along")
        self.model = model
        self.loss_fn = loss_fn
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
        for p in self.params.values():
            p.requires_grad_(False)
        self.buffers: dict[str, torch.Tensor] = dict(self.module.named_buffers())

        self._pair: Batch | None = None
        self._batches: list[Batch] | None = None
        self._loader: Iterable | None = None
        if _is_pair(data):
            self._pair = self._to_device(_check_batch(data, "data"))
            self.n_samples = int(self._pair[0].shape[0])
        elif isinstance(data, Sequence) and not isinstance(data, (str, bytes, torch.Tensor)):
            self._batches = [
                self._to_device(_check_batch(b, f"batch {i}")) for i, b in enumerate(data)
            ]
            self.n_samples = sum(int(x.shape[0]) for x, _ in self._batches)
        elif isinstance(data, Iterator):
            raise LossatlasError(
                "data is a one-shot iterator (a generator?); pass a list of batches or a "
                "DataLoader, which can be iterated again for every pass"
            )
        elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, torch.Tensor)):
            self._loader = data
            self.n_samples = sum(int(_check_batch(b, "a batch")[0].shape[0]) for b in data)
        else:
            raise LossatlasError(
                "data must be an (X, y) pair of tensors, a list of (X, y) batches or a DataLoader"
            )
        if self.n_samples == 0:
            raise LossatlasError("the dataset is empty: there is nothing to evaluate the loss on")

    @property
    def n_params(self) -> int:
        """Number of scalar parameters (tied parameters counted once)."""
        return sum(p.numel() for p in self.params.values())

    def batch_weight(self, n: int) -> float:
        """Weight of a batch of `n` samples in the total loss: `n` for a mean loss, 1 for a sum.

        The total of weighted batch losses divided by `loss_divisor` equals the loss over the
        whole data at once.
        """
        return 1.0 if self.reduction == "sum" else float(n)

    @property
    def loss_divisor(self) -> float:
        """What the total of weighted batch losses is divided by (see `batch_weight`)."""
        return 1.0 if self.reduction == "sum" else float(self.n_samples)

    @property
    def in_memory(self) -> bool:
        """Whether the data is held as tensors (so batches are the same objects every pass)."""
        return self._loader is None

    @property
    def splittable(self) -> bool:
        """Whether the engine may choose the batch size (an `(X, y)` pair without one set)."""
        return self._pair is not None and self.batch_size is None

    def _to_device(self, batch: Batch) -> Batch:
        x, y = batch
        x = x.to(self.device, dtype=self.dtype) if x.is_floating_point() else x.to(self.device)
        y = y.to(self.device, dtype=self.dtype) if y.is_floating_point() else y.to(self.device)
        return x, y

    def max_batch_size(self) -> int:
        """Largest batch the data will be served in, for memory planning."""
        if self._pair is not None:
            return min(self.n_samples, self.batch_size or self.n_samples)
        if self._batches is not None:
            return max(int(x.shape[0]) for x, _ in self._batches)
        return max(int(b[0].shape[0]) for b in self._loader)  # type: ignore[union-attr]

    def batches(self, batch_size: int | None = None) -> Iterator[Batch]:
        """Yield the data as `(X, y)` batches on the problem's device.

        `batch_size` only applies to an `(X, y)` pair (the engine passes its choice here);
        `Problem(batch_size=...)` wins when set.
        """
        if self._pair is not None:
            size = self.batch_size or batch_size or self.n_samples
            x, y = self._pair
            for start in range(0, self.n_samples, size):
                yield x[start : start + size], y[start : start + size]
        elif self._batches is not None:
            yield from self._batches
        else:
            for batch in self._loader:  # type: ignore[union-attr]
                yield self._to_device(_check_batch(batch, "a batch"))

    def first_batch(self) -> Batch:
        """A small batch for probing the model."""
        x, y = next(self.batches())
        return x[:2], y[:2]

    def fingerprint(self) -> str:
        """A hash of the data (tensors in memory) or its size (other iterables)."""
        h = hashlib.blake2b(digest_size=12)
        h.update(f"{self.n_samples}".encode())
        if self._loader is None:
            for x, y in self.batches():
                for t in (x, y):
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
            problems = {
                "missing": sorted(set(own) - set(given)),
                "unknown": sorted(set(given) - set(own)),
                "wrong shape": sorted(k for k in set(own) & set(given) if own[k] != given[k]),
            }
            text = "; ".join(f"{how} {names[:3]}" for how, names in problems.items() if names)
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
