"""Save and load any lossatlas result record (a dataclass) to and from HDF5, field by field.

Every node carries a `kind` attribute saying how it was written:

- `record`: a group for a dataclass, `class` its stable public name (`"lossatlas.Sweep"`; files
  of lossatlas 0.1.0 say `"lossatlas.sweep:Sweep"`, see `records.py`), one child per field;
- `ndarray` / `tensor`: a dataset (a tensor also keeps its torch `dtype`; it comes back on the
  CPU); `scalar`: a numpy scalar as a 0-d dataset;
- `json`: a string dataset for plain values (None, bool, int, float incl. NaN/inf, str, and
  lists, tuples and str-keyed dicts of them; tuples as `{"__tuple__": [...]}`);
- `list` / `tuple` / `dict`: a group of children "0", "1", ... (a dict child keeps its key, as
  JSON, in the attribute `key`), for containers that hold arrays, tensors or records.

The root is the top record, with `format = "lossatlas.record"` and `format_version`. Loading
instantiates only the record classes listed in `records.py`, and nothing is unpickled.
A `Surface` keeps its own format (`Surface.save`, `landscape.record.load`): resumable runs rely on
it, so `save` and `load` hand Surfaces and surface files over to those.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from lossatlas.core.files import temporary_path
from lossatlas.errors import LossatlasError, one_line
from lossatlas.io.records import record_class, record_name
from lossatlas.landscape.record import FORMAT as SURFACE_FORMAT
from lossatlas.landscape.record import Surface, check_seal, open_h5, seal
from lossatlas.landscape.record import load as load_surface
from lossatlas.watch.record import FORMAT as MONITOR_FORMAT
from lossatlas.watch.record import load_monitor

FORMAT = "lossatlas.record"
FORMAT_VERSION = 1
_TUPLE = "__tuple__"  # JSON marker that keeps tuples apart from lists


def _plain(value: Any) -> bool:
    """Whether `value` survives the JSON encoding (exact types, so numpy scalars stay numpy).

    Subclasses of str (torch's `TorchVersion` in provenance) are let in and come back as str.
    """
    if value is None or type(value) in (bool, int, float) or isinstance(value, str):
        return True
    if type(value) in (list, tuple):
        return all(_plain(v) for v in value)
    if type(value) is dict:
        keys_ok = all(isinstance(k, str) for k in value)
        return keys_ok and _TUPLE not in value and all(_plain(v) for v in value.values())
    return False


def _to_json(value: Any) -> str:
    def mark(v: Any) -> Any:
        if type(v) is tuple:
            return {_TUPLE: [mark(x) for x in v]}
        if type(v) is list:
            return [mark(x) for x in v]
        if type(v) is dict:
            return {k: mark(x) for k, x in v.items()}
        return v

    return json.dumps(mark(value))  # ASCII escapes keep any str (lone surrogates too) exact


def _from_json(text: str) -> Any:
    def hook(d: dict) -> Any:
        return tuple(d[_TUPLE]) if list(d) == [_TUPLE] else d

    return json.loads(text, object_hook=hook)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _put(parent: h5py.Group, name: str, value: Any, where: str) -> None:
    """Write `value` as the child `name` of `parent`; `where` names it in errors."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        node = parent.create_group(name) if name else parent
        node.attrs["kind"] = "record"
        name = record_name(type(value))
        if name is None:
            raise LossatlasError(
                f"{where or 'the result'}: a {type(value).__qualname__} is not a lossatlas record"
            )
        node.attrs["class"] = name
        for f in dataclasses.fields(value):
            # Unstorable fields (marked) come back as their default; init=False ones are derived.
            if f.init and f.metadata.get("store", True):
                _put(node, f.name, getattr(value, f.name), _join(where, f.name))
    elif _plain(value):
        parent.create_dataset(name, data=_to_json(value)).attrs["kind"] = "json"
    elif isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        try:
            try:
                data = t.numpy()
            except TypeError:  # bfloat16 and the like: numpy lacks them, float32 holds them
                data = t.to(torch.complex64 if t.is_complex() else torch.float32).numpy()
        except (TypeError, RuntimeError) as exc:
            raise LossatlasError(f"{where}: cannot store this tensor ({exc})") from None
        ds = parent.create_dataset(name, data=data)
        ds.attrs["kind"] = "tensor"
        ds.attrs["dtype"] = str(t.dtype).removeprefix("torch.")
    elif isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind not in "OUMm":
        kind = "ndarray" if isinstance(value, np.ndarray) else "scalar"
        parent.create_dataset(name, data=value).attrs["kind"] = kind
    elif type(value) in (list, tuple, dict):
        node = parent.create_group(name)
        node.attrs["kind"] = type(value).__name__
        items = value.items() if type(value) is dict else enumerate(value)
        for i, (key, v) in enumerate(items):
            if type(value) is dict and not _plain(key):
                raise LossatlasError(f"{where}: cannot store the dict key {key!r}")
            _put(node, str(i), v, f"{where}[{key!r}]")
            if type(value) is dict:
                node[str(i)].attrs["key"] = _to_json(key)
    else:
        raise LossatlasError(f"{where}: cannot store a {type(value).__qualname__}")


def _get(node: h5py.Group | h5py.Dataset, where: str) -> Any:
    """Rebuild the value written by `_put` at `node`."""
    kind = node.attrs.get("kind")
    if kind == "json":
        return _from_json(node.asstr()[()])
    if kind in ("ndarray", "scalar"):
        return np.asarray(node[()]) if kind == "ndarray" else node[()]
    if kind == "tensor":
        dtype = getattr(torch, str(node.attrs["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise LossatlasError(f"{where}: unknown tensor dtype {node.attrs['dtype']!r}")
        return torch.from_numpy(np.asarray(node[()])).to(dtype)
    if kind in ("list", "tuple"):
        items = [_get(node[str(i)], f"{where}[{i}]") for i in range(len(node))]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        out = {}
        for i in range(len(node)):
            key = _from_json(node[str(i)].attrs["key"])
            out[key] = _get(node[str(i)], f"{where}[{key!r}]")
        return out
    if kind == "record":
        cls = record_class(str(node.attrs["class"]))
        kwargs = {name: _get(child, _join(where, name)) for name, child in node.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:  # fields renamed since, or __post_init__ refused
            raise LossatlasError(
                f"{where or 'the record'}: cannot rebuild {cls.__qualname__} ({exc})"
            ) from None
    raise LossatlasError(f"{where or 'the root'}: unknown node kind {kind!r}")


def save(result: Any, path: str | Path) -> Path:
    """Write a lossatlas result record to HDF5 atomically (a temporary file renamed into place).

    Args:
        result: any lossatlas result dataclass (`Trajectory`, `Sweep`, `SharpnessReport`, ...);
            a `Surface` is written by `Surface.save`, in its own format.
        path: the file to write; its folder is created if needed.

    Returns:
        The path written.

    Raises:
        LossatlasError: the result is not a lossatlas dataclass, or a field holds a value that
            cannot be stored (the message names the field, e.g. `entries[3].trajectory.settings`).
    """
    if isinstance(result, Surface):
        return result.save(path)
    if not dataclasses.is_dataclass(result) or isinstance(result, type):
        raise LossatlasError(f"expected a lossatlas result record, got {type(result).__name__}")
    path = Path(path)
    with temporary_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        _put(f, "", result, "")
        seal(f)
    return path


def load(path: str | Path) -> Any:
    """Read a record written by `save` (or a surface file, via `lossatlas.landscape.record.load`).

    Raises:
        LossatlasError: a missing or unreadable file, a file that is not lossatlas's, one written
            by a newer lossatlas, or one that names a class outside lossatlas.
    """
    path = Path(path)
    with open_h5(path) as f:
        try:
            kind = f.attrs.get("format")
            if kind == FORMAT:
                if int(f.attrs.get("format_version", 0)) > FORMAT_VERSION:
                    raise LossatlasError(f"{path} was written by a newer lossatlas; please upgrade")
                check_seal(f, path)
                return _get(f, "")
        except LossatlasError as exc:
            message = str(exc)
            raise LossatlasError(
                message if message.startswith(str(path)) else f"{path}: {message}"
            ) from None
        except Exception as exc:  # h5py and json raise many kinds for damaged bytes
            damaged = f"{path} is a damaged lossatlas record ({one_line(exc)})"
            raise LossatlasError(damaged) from None
    if kind == SURFACE_FORMAT:
        return load_surface(path)  # after closing: the surface loader opens it again
    if kind == MONITOR_FORMAT:
        return load_monitor(path)
    raise LossatlasError(f"{path} is not a lossatlas file")
