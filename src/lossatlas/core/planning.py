"""How many points per pass and samples per batch: the engine's plan, from memory and caches.

On a GPU the plan fills a memory budget (half the free memory by default): more points per pass
means larger, more efficient kernels. On the CPU bigger is not better: once one activation
tensor outgrows the caches, every elementwise pass streams from memory, and glibc returns large
blocks to the kernel after every use, so each new one costs page faults. The CPU plan therefore
keeps the largest activation of one pass under `CPU_ACTIVATION_TARGET` and raises glibc's mmap
threshold to just above it (`tune_malloc`), which made the digits MLP 25-46% faster here. On the
sequential path (one point per forward) only the batch size matters; it is chosen so the largest
activation stays in cache, unless the model's weights outweigh a batch's activations: every
batch streams all the weights from memory once, so the batch is then grown until its
activations are `WEIGHT_REUSE` times the weights (ResNet-18 on CIFAR-size images: 256 images per
batch instead of 64, 93 instead of 127 ms per point for 256 images).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

import torch

from lossatlas.errors import LossatlasError

CPU_ACTIVATION_TARGET = 16 << 20
CPU_SEQUENTIAL_TARGET = 4 << 20  # one point per forward: keep its largest activation in cache
WEIGHT_REUSE = 4  # sequential CPU batches: activations at least this many times the weights
SEQUENTIAL_CHUNK = 32  # points per chunk on the sequential path: the unit of progress and resume
MIN_CHUNKS = 8  # a grid is cut into at least this many chunks, so progress and resume have steps
_GLIBC_MMAP_THRESHOLD_MAX = 32 << 20
_malloc_tuned = False


@dataclass(frozen=True)
class Plan:
    """How points are cut into chunks and data into batches; fixed for a run so resumes match.

    Attributes:
        chunk_size: points per chunk (one vmapped pass per batch).
        batch_size: samples per batch when the engine splits an `(X, y)` pair.
        path: `"vmap"` or `"sequential"`.
        shortcut: whether the input layer's products are precomputed (see `core.shortcut`).
        channels_last: feed image batches in channels-last memory format (faster convolutions
            and pooling on the CPU; the same values to float rounding).
        slopes: also compute the loss's derivatives in the coefficients (reverse mode).
    """

    chunk_size: int
    batch_size: int
    path: str
    shortcut: bool = False
    channels_last: bool = False
    slopes: bool = False


@dataclass(frozen=True)
class Footprint:
    """Activation sizes per sample measured by the probe, in elements."""

    total: int
    largest: int


def parse_bytes(value: int | str | None) -> int | None:
    """Read a memory size: an int in bytes or a string such as `"512MB"` or `"2GiB"`."""
    if value is None or (isinstance(value, int) and value > 0):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)i?b?\s*", str(value).lower())
    if not match or float(match.group(1)) <= 0:
        raise LossatlasError(f"cannot read memory size {value!r}; write e.g. 512MB or 2GiB")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " "))


def available_memory(device: torch.device | None = None) -> int:
    """Bytes free on `device`: CUDA's free memory, else the host's available memory
    (`MemAvailable` on Linux, else free pages; 4 GiB if neither can be read)."""
    if device is not None and device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def default_budget(device: torch.device) -> int:
    """Half the free GPU memory; on the CPU a quarter of the available memory, at most 2 GiB."""
    if device.type == "cuda":
        return available_memory(device) // 2
    return int(min(2 << 30, available_memory(device) // 4))


_blas: dict[str, Any] = {}


def one_blas_thread() -> Any:
    """A context in which NumPy's and SciPy's BLAS (OpenBLAS) run on one thread.

    lossatlas's NumPy work between Hessian-vector products is small or memory-bound (Ritz
    values, residuals, norms), so BLAS threads buy nothing there; but OpenBLAS threads keep
    spinning for a while after each call, on the cores torch's threads need next. On the
    digits MLP a `Monitor` record took 45 ms instead of 17, and the training steps after it
    ran twice as slowly. (threadpoolctl, a scikit-learn dependency, sets the limit.)
    """
    if "controller" not in _blas:
        from threadpoolctl import ThreadpoolController

        _blas["controller"] = ThreadpoolController()
    return _blas["controller"].limit(limits=1, user_api="blas")


def blas_on_one_thread(fn: Any) -> Any:
    """Decorator: `fn` runs inside `one_blas_thread()`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_blas_thread():
            return fn(*args, **kwargs)

    return wrapper


def tune_malloc() -> bool:
    """Keep freed activation-sized blocks in glibc's heap instead of unmapping them.

    Sets `M_MMAP_THRESHOLD` to 32 MiB (glibc's maximum) and `M_TRIM_THRESHOLD` to 1 GiB, once
    per process, on Linux with glibc. Disable with LOSSATLAS_TUNE_MALLOC=0. Returns whether the
    settings are in force.
    """
    global _malloc_tuned
    if _malloc_tuned or not sys.platform.startswith("linux"):
        return _malloc_tuned
    if os.environ.get("LOSSATLAS_TUNE_MALLOC", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _malloc_tuned = bool(
            libc.mallopt(-3, _GLIBC_MMAP_THRESHOLD_MAX) and libc.mallopt(-1, 1 << 30)
        )
    except (OSError, AttributeError):  # not glibc
        _malloc_tuned = False
    return _malloc_tuned


def make_plan(
    *,
    device: torch.device,
    itemsize: int,
    footprint: Footprint,
    moving_numel: int,
    n_samples: int,
    data_batch: int,
    splittable: bool,
    budget: int,
    path: str,
    shortcut: bool,
    channels_last: bool = False,
    chunk_size: int | None = None,
    batch_size: int | None = None,
    n_points: int | None = None,
) -> Plan:
    """Choose points per chunk and samples per batch.

    Args:
        data_batch: the largest batch the data comes in.
        splittable: the engine may choose the batch size (an `(X, y)` pair without one set).
        budget: bytes one pass may use (activations with temporaries, plus stacked weights).
        chunk_size, batch_size: user overrides.
        n_points: points in the whole run, if known; chunks are capped so there are at least
            `MIN_CHUNKS` of them.
    """
    per_sample_point = 3 * footprint.total * itemsize  # temporaries inside modules ~ outputs
    per_point = moving_numel * itemsize

    def fits(batch: int) -> int:  # points per pass that the budget (and caches) allow
        k = budget // (batch * per_sample_point + per_point)
        if device.type == "cpu":
            k = min(k, CPU_ACTIVATION_TARGET // (batch * footprint.largest * itemsize))
        if n_points is not None:
            k = min(k, -(-n_points // MIN_CHUNKS))
        return max(1, int(k))

    batch = batch_size or data_batch
    if path == "sequential":
        if batch_size is None and splittable and device.type == "cpu":
            in_cache = CPU_SEQUENTIAL_TARGET // (footprint.largest * itemsize)
            reuse = -(-WEIGHT_REUSE * moving_numel // footprint.total)
            within = max(1, budget // per_sample_point)  # one point's activations fit the budget
            batch = min(max(32, min(max(in_cache, reuse), within)), n_samples)
            if reuse > in_cache:  # equal batches, none below the reuse target
                batch = min(-(-n_samples // (n_samples // batch)), max(32, within))
        batch = min(batch, n_samples)
        chunk = chunk_size or max(1, min(SEQUENTIAL_CHUNK, budget // (per_point + 1)))
        return Plan(int(chunk), int(batch), path, shortcut, channels_last)
    if batch_size is None and splittable:
        # Several points per pass matter more than whole-data batches: halve until 8 fit.
        while batch > 64 and fits(batch) < 8:
            batch = (batch + 1) // 2
    batch = min(batch, n_samples)
    return Plan(int(chunk_size or fits(batch)), int(batch), path, shortcut, channels_last)
