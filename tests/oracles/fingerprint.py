"""Numeric fingerprints of result records, to compare a record across lossatlas versions.

`fingerprint(record)` walks a record recursively (dataclasses, mappings, lists, tuples) and
describes every leaf by its path, e.g. `"entries.0.trajectory.loss"` or `"metrics.accuracy"`:

- numbers (numpy arrays and scalars, torch tensors, Python int and float; bools inside arrays
  count as numbers): shape, dtype, the exact (`math.fsum`) float64 sum and sum of squares of the
  finite entries, and the counts of NaN, +inf and -inf;
- strings, bools and None: the value itself;
- every container: its length.

Dataclass fields with `init=False` (derived) or `metadata={"store": False}` (never written to
a file) are left out. Sums are exact, so they do not depend on memory layout or summation order;
`compare(expected, actual)` still allows a relative tolerance. Only numpy and torch are needed,
not lossatlas, so the fingerprint of a record written by one version can be checked against the
record another version loads. The result is plain JSON (no NaN or inf).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["compare", "fingerprint"]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _numeric(value: np.ndarray | np.generic | torch.Tensor | int | float) -> dict[str, Any]:
    """Shape, dtype, exact sums and non-finite counts of a numeric leaf."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype)
        t = value.detach().cpu()
        if t.is_complex():
            t = torch.view_as_real(t.to(torch.complex128))
        array = t.to(torch.float64).numpy()
        shape = list(value.shape)
    elif isinstance(value, (np.ndarray, np.generic)):
        dtype = str(value.dtype)
        array = np.asarray(value)
        shape = list(array.shape)
        if array.dtype.kind == "c":
            array = np.stack([array.real, array.imag], axis=-1)
        array = array.astype(np.float64)
    else:
        dtype = type(value).__name__
        array = np.asarray(float(value), dtype=np.float64)
        shape = []
    flat = array.ravel()
    finite = flat[np.isfinite(flat)]
    return {
        "shape": shape,
        "dtype": dtype,
        "sum": math.fsum(finite.tolist()),
        "sumsq": math.fsum((finite * finite).tolist()),
        "nan": int(np.isnan(flat).sum()),
        "posinf": int(np.isposinf(flat).sum()),
        "neginf": int(np.isneginf(flat).sum()),
    }


def fingerprint(record: Any) -> dict[str, dict[str, Any]]:
    """The fingerprint of `record`: `{"numbers", "values", "sizes"}`, each `{path: ...}`.

    Args:
        record: a result record (a dataclass) or any nesting of dataclasses, mappings, lists,
            tuples, numpy arrays and scalars, torch tensors, numbers, strings, bools and None.

    Returns:
        `numbers`: `{path: {shape, dtype, sum, sumsq, nan, posinf, neginf}}`; `values`:
        `{path: str | bool | None}`; `sizes`: `{path: length}` of every container.

    Raises:
        TypeError: a leaf of another type (a function, a module, ...).
        ValueError: two leaves with the same path (mapping keys that contain dots).
    """
    out: dict[str, dict[str, Any]] = {"numbers": {}, "values": {}, "sizes": {}}

    def put(table: str, path: str, item: Any) -> None:
        if any(path in t for t in out.values()):
            raise ValueError(f"two leaves have the path {path!r}")
        out[table][path] = item

    def walk(value: Any, path: str) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                if f.init and f.metadata.get("store", True):
                    walk(getattr(value, f.name), _join(path, f.name))
        elif isinstance(value, Mapping):
            out["sizes"][path] = len(value)
            for key, item in value.items():
                walk(item, _join(path, str(key)))
        elif isinstance(value, (list, tuple)):
            out["sizes"][path] = len(value)
            for i, item in enumerate(value):
                walk(item, _join(path, str(i)))
        elif isinstance(value, str) or value is None or type(value) is bool:
            put("values", path, str(value) if isinstance(value, str) else value)
        elif isinstance(value, (np.ndarray, np.generic, torch.Tensor, int, float)):
            if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind not in "biufc":
                raise TypeError(f"{path}: cannot fingerprint a {value.dtype} array")
            put("numbers", path, _numeric(value))
        else:
            raise TypeError(f"{path or 'the record'}: cannot fingerprint a {type(value)!r}")

    walk(record, "")
    return out


def _close(a: float, b: float, scale: float, rtol: float) -> bool:
    return a == b or abs(a - b) <= rtol * max(abs(a), abs(b), scale)


def compare(
    expected: Mapping[str, Any],
    actual: Mapping[str, Any],
    *,
    rtol: float = 1e-12,
    check_dtype: bool = True,
) -> list[str]:
    """The differences between two fingerprints, one line each; empty when they agree.

    Sums agree when equal or within `rtol` relative (to the larger sum, or to the root of the
    sum of squares where a sum is near zero); everything else must be equal. With
    `check_dtype=False`, dtypes are not compared.
    """
    problems: list[str] = []
    for table in ("numbers", "values", "sizes"):
        want, got = expected.get(table, {}), actual.get(table, {})
        for path in sorted(set(want) - set(got)):
            problems.append(f"{table}: {path!r} is missing")
        for path in sorted(set(got) - set(want)):
            problems.append(f"{table}: {path!r} is unexpected")
        for path in sorted(set(want) & set(got)):
            a, b = want[path], got[path]
            if table != "numbers":
                if a != b:
                    problems.append(f"{path}: {a!r} != {b!r}")
                continue
            for key in ("shape", "nan", "posinf", "neginf") + (("dtype",) if check_dtype else ()):
                if a[key] != b[key]:
                    problems.append(f"{path}: {key} {a[key]!r} != {b[key]!r}")
            scale = math.sqrt(a["sumsq"])
            for key in ("sum", "sumsq"):
                if not _close(a[key], b[key], scale if key == "sum" else 0.0, rtol):
                    problems.append(f"{path}: {key} {a[key]!r} != {b[key]!r}")
    return problems
