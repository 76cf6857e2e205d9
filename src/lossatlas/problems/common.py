"""Helpers shared by the trained built-in problems: argument checks, the train-or-load weight
cache, and the training recipe of the CNN classifiers (`train_classifier`).

A leaf module (the problem modules import it, it imports none of them), so the problem modules
can be imported in any order. `problems.registry` re-exports `cache_dir` and `load_or_train`.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lossatlas.core.seeding import init_layers
from lossatlas.errors import LossatlasError, LossatlasWarning


def cache_dir() -> Path:
    """Where trained weights are cached: `$LOSSATLAS_CACHE`, else the user cache directory."""
    if os.environ.get("LOSSATLAS_CACHE"):
        return Path(os.environ["LOSSATLAS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lossatlas"


def check_split(split: str) -> str:
    """Raise `LossatlasError` unless `split` is `"train"` or `"test"`."""
    if split not in ("train", "test"):
        raise LossatlasError(f"split={split!r} is not 'train' or 'test'")
    return split


def _load_cached(path: Path, model: nn.Module) -> bool:
    """Load cached weights into `model`; False (with a warning) if the file is unusable."""
    if not path.exists():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"], strict=True)
    except Exception as exc:  # a torn, foreign or outdated file: train again
        warnings.warn(
            f"ignoring the unreadable cached weights {path} ({type(exc).__name__}); retraining",
            LossatlasWarning,
            stacklevel=4,
        )
        return False
    return True


def _save_cached(path: Path, model: nn.Module, version: int) -> None:
    """Write atomically; a cache that cannot be written only costs retraining next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save({"state_dict": model.state_dict(), "version": version}, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(
            f"cannot cache weights in {path.parent} ({exc.strerror or exc})",
            LossatlasWarning,
            stacklevel=4,
        )


def load_or_train(
    model: nn.Module,
    train: Callable[[], None],
    *,
    name: str,
    version: int,
    seed: int,
    quiet: bool = True,
) -> Path:
    """Fill `model` with cached weights, or train it with `train()` and cache the result.

    The cache file is `cache_dir() / f"{name}-v{version}-seed{seed}.pt"`; bump `version`
    whenever the data, model or recipe changes, so that stale files are left unused. An
    unreadable file is ignored with a `LossatlasWarning` and replaced.

    Args:
        model: the untrained model, filled in place and left in evaluation mode.
        train: trains `model` in place (its initialisation included), deterministically.
        name: the problem's name, as in `PROBLEMS`.
        version: the problem's recipe version.
        seed: the seed `train` uses (part of the file name).
        quiet: do not report training or cache use on standard error.

    Returns:
        The cache file.
    """
    path = cache_dir() / f"{name}-v{version}-seed{seed}.pt"
    if _load_cached(path, model):
        if not quiet:
            print(f"lossatlas: using cached weights {path}", file=sys.stderr)
    else:
        start, threads = time.perf_counter(), torch.get_num_threads()
        # One thread: as fast for these small products, immune to a busy machine, and the
        # weights then do not depend on the number of cores.
        torch.set_num_threads(1)
        try:
            train()
        finally:
            torch.set_num_threads(threads)
        _save_cached(path, model, version)
        if not quiet:
            print(
                f"lossatlas: trained {name} (seed {seed}) in "
                f"{time.perf_counter() - start:.1f} s; cached in {path}",
                file=sys.stderr,
            )
    model.eval()
    return path


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
    *,
    steps: int,
    batch: int,
    lr: float,
) -> None:
    """Mini-batch Adam (`lr`, cosine decay over `steps`, epochs of `batch`-sized slices of a
    seeded permutation) with every random draw from one generator seeded with `seed`, then
    exact BatchNorm statistics of the whole training set at the final weights."""
    gen = torch.Generator().manual_seed(int(seed))
    init_layers(model, gen)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)  # end in a minimum
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    order, pos = torch.randperm(len(x), generator=gen), 0
    for _ in range(steps):
        if pos + batch > len(x):
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = order[pos : pos + batch]
        pos += batch
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
        schedule.step()
    # The running averages lag behind the last steps; the problem is evaluated in eval mode,
    # so replace them by the statistics of the whole training set at the final weights.
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average: one full batch gives the exact statistics
    with torch.no_grad():
        model(x)
    for bn in bns:
        bn.momentum = 0.1
