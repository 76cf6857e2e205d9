"""Batches of any structure: the inputs a model is called with, and what a loss reads from it.

A batch is an `(inputs, targets)` pair or a mapping in the Hugging Face style:

- `inputs` a tensor: `model(x)`; a tuple or list of tensors: `model(*x)`; a mapping of
  tensors: `model(**x)`; `targets` a tensor (or None when the model computes its own loss);
- a mapping batch `{"input_ids": ..., "attention_mask": ..., "labels": ...}`: `model(**batch)`,
  the targets being its `"labels"` (None without them).

The number of samples is the leading size of the first tensor in the inputs. Structured outputs
(tuples, dicts, Hugging Face `ModelOutput`s) are read by `logits_of` for the `torch.nn` losses
and the built-in metrics, and by `own_loss` when the model computes its loss itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch.func import functional_call

from lossatlas.core.losses import faster
from lossatlas.errors import LossatlasError

Inputs = Any  # a tensor, a tuple/list of tensors, or a mapping of name -> tensor
Targets = torch.Tensor | None
LABELS = "labels"


def leaves(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in a nested structure of tuples, lists and mappings, in order."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from leaves(v)


def apply(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`value` with `fn` applied to every tensor (the structure and other values kept)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, Mapping):
        return {k: apply(v, fn) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(apply(v, fn) for v in value)
    return value


def split(batch: Any, where: str) -> tuple[Inputs, Targets]:
    """A raw batch as `(inputs, targets)`, checked; a one-line error naming `where` otherwise."""
    if isinstance(batch, Mapping):
        inputs, targets = dict(batch), batch.get(LABELS)
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        inputs, targets = batch
    else:
        raise LossatlasError(
            f"{where} is neither an (inputs, targets) pair nor a mapping of tensors "
            f"(got {type(batch).__name__})"
        )
    if not _inputs_ok(inputs):
        raise LossatlasError(
            f"{where}: inputs must be a tensor, a tuple/list of tensors or a mapping of tensors "
            f"(got {type(inputs).__name__})"
        )
    if targets is not None and not isinstance(targets, torch.Tensor):
        raise LossatlasError(f"{where}: targets must be a tensor, got {type(targets).__name__}")
    n = size(inputs)
    if targets is not None and (targets.ndim == 0 or targets.shape[0] != n):
        raise LossatlasError(
            f"{where}: inputs and targets disagree on the number of samples "
            f"(inputs {tuple(next(leaves(inputs)).shape)}, targets {tuple(targets.shape)})"
        )
    for t in leaves(inputs):
        if t.ndim == 0 or t.shape[0] != n:
            raise LossatlasError(
                f"{where}: the input tensors disagree on the number of samples "
                f"({n} and {tuple(t.shape)})"
            )
    return inputs, targets


def _inputs_ok(inputs: Any) -> bool:
    if isinstance(inputs, torch.Tensor):
        return True
    if isinstance(inputs, Mapping):
        first = next(leaves(inputs), None)
        return all(isinstance(k, str) for k in inputs) and first is not None
    if isinstance(inputs, (tuple, list)):
        return bool(inputs) and all(isinstance(t, torch.Tensor) for t in inputs)
    return False


def size(inputs: Inputs) -> int:
    """Samples in a batch: the leading size of its first input tensor."""
    first = next(leaves(inputs))
    return int(first.shape[0]) if first.ndim else 1


def is_tensor(inputs: Inputs) -> bool:
    return isinstance(inputs, torch.Tensor)


def call(module: torch.nn.Module, state: Any, inputs: Inputs) -> Any:
    """`module(x)`, `module(*x)` or `module(**x)` through `functional_call` at `state`."""
    if isinstance(inputs, Mapping):
        return functional_call(module, state, (), dict(inputs))
    if isinstance(inputs, (tuple, list)):
        return functional_call(module, state, tuple(inputs))
    return functional_call(module, state, (inputs,))


def take(inputs: Inputs, index: Any) -> Inputs:
    """The samples `index` (a slice or an index tensor) of every tensor in the inputs."""
    return apply(inputs, lambda t: t[index])


def cat(parts: list[Any]) -> Any:
    """Batches' inputs (or targets) joined along the sample dimension."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, Mapping):
        return {k: cat([p[k] for p in parts]) for k in first}
    return type(first)(cat([p[i] for p in parts]) for i in range(len(first)))


class Samples:
    """Batches held in memory, addressed by sample: sample `i` is row `i` of the batches in
    order.

    When the batches' tensors can be joined (same shapes after the sample dimension), `take`
    returns one batch; otherwise, as for dynamically padded text of different widths, one batch
    per source batch holding its selected rows, each keeping its own width. Either way the
    rows, and so every per-sample or per-token loss term, are those of the selected samples.

    >>> import torch
    >>> s = Samples([(torch.zeros(2, 3), None), (torch.ones(3, 5), None)])
    >>> s.n, [tuple(x.shape) for x, _ in s.take(torch.tensor([1, 2, 4]))]
    (5, [(1, 3), (2, 5)])
    """

    def __init__(self, batches: Iterable[tuple[Inputs, Targets]]) -> None:
        self.batches = list(batches)
        sizes = [size(x) for x, _ in self.batches]
        self.starts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        self.n = self.starts[-1]
        try:
            xs, ys = zip(*self.batches)
            self.joined: tuple[Inputs, Targets] | None = (cat(list(xs)), cat(list(ys)))
        except (RuntimeError, TypeError, ValueError):
            self.joined = None

    def take(self, index: torch.Tensor | None = None) -> list[tuple[Inputs, Targets]]:
        """The samples `index` (a 1-D index tensor; None: all) as a list of batches."""
        if index is None:
            return [self.joined] if self.joined is not None else list(self.batches)
        if self.joined is not None:
            x, y = self.joined
            return [(take(x, index), None if y is None else y[index])]
        parts = []
        for (x, y), lo, hi in zip(self.batches, self.starts, self.starts[1:]):
            rows = index[(index >= lo) & (index < hi)] - lo
            if len(rows):
                rows = rows.to(next(leaves(x)).device)
                parts.append((take(x, rows), None if y is None else y[rows]))
        return parts


def logits_of(outputs: Any) -> torch.Tensor:
    """The prediction tensor in a model's outputs: the tensor itself, `.logits`,
    `["logits"]`, or the first tensor of a tuple (as the `torch.nn` losses expect)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    logits = getattr(outputs, "logits", None)
    if logits is None and isinstance(outputs, Mapping):
        logits = outputs.get("logits")
    if logits is None and isinstance(outputs, (tuple, list)) and outputs:
        logits = outputs[0]
    if not isinstance(logits, torch.Tensor):
        raise LossatlasError(
            f"cannot find the predictions in the model's {type(outputs).__name__} output: "
            "expected a tensor, .logits, ['logits'] or a tuple starting with one"
        )
    return logits


def own_loss(outputs: Any, targets: Targets = None) -> torch.Tensor:
    """The loss a model computed itself (`outputs.loss` or `outputs["loss"]`), as Hugging Face
    models do when called with `labels`; the loss function of `Problem(loss_fn=None)`."""
    loss = getattr(outputs, "loss", None)
    if loss is None and isinstance(outputs, Mapping):
        loss = outputs.get("loss")
    if not isinstance(loss, torch.Tensor):
        raise LossatlasError(
            "loss_fn=None takes the model's own loss, but its output has no .loss or ['loss'] "
            "(give the model its labels, e.g. a batch with a 'labels' entry)"
        )
    return loss


def unwrapped(loss_fn: Callable) -> Callable:
    """The `torch.nn` loss behind `on_logits`, or `loss_fn` itself."""
    return getattr(loss_fn, "__wrapped__", loss_fn)


def on_logits(loss_fn: Callable) -> Callable:
    """A `torch.nn` loss (or built-in metric) that reads the logits of structured outputs."""

    fast = faster(loss_fn)

    def wrapped(outputs: Any, targets: Targets) -> torch.Tensor:
        return fast(logits_of(outputs), targets)

    wrapped.reduction = getattr(loss_fn, "reduction", "mean")  # type: ignore[attr-defined]
    wrapped.__wrapped__ = loss_fn  # type: ignore[attr-defined]
    return wrapped


def token_count(*, ignore_index: int = -100, shifted: bool = True) -> Callable:
    """A `Problem(weight=...)` for token-averaged losses: the tokens a batch's loss averages over.

    A causal language model's loss (Hugging Face's, with `labels`) is the mean over every
    predicted token whose label is not `ignore_index`; the labels are shifted by one inside the
    model, so the first position of each sequence predicts nothing (`shifted=True`). For token
    classification nothing is shifted (`shifted=False`). Weighting each batch's mean loss by
    this count makes the combined value equal the loss over all tokens at once.

    >>> import torch
    >>> labels = torch.tensor([[5, 6, 7, -100], [8, 9, -100, -100]])
    >>> token_count()(None, labels), token_count(shifted=False)(None, labels)
    (3, 5)
    """

    def count(inputs: Inputs, targets: Targets) -> int:
        if targets is None:
            raise LossatlasError("token_count needs the batch's labels (its targets)")
        labels = targets[..., 1:] if shifted else targets
        return int((labels != ignore_index).sum())

    return count
