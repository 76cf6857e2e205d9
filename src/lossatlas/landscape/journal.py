"""An append-only progress journal that survives SIGKILL.

A long run appends one record per finished chunk to `<out>.partial`. Every record carries a
CRC32, so a record torn by a kill is detected and dropped on resume; the final HDF5 file is only
written, atomically, once every chunk is done. HDF5 itself is not safe to kill mid-write, which
is why progress does not live in it.

Layout: a magic line, one header line (the run's key and plan as JSON, a space, and the CRC32
of the JSON in 8 hex digits), then records of
`<chunk index: u32><count: u32><count float64 values><crc32 of the preceding bytes: u32>`.
A damaged header, or records that do not fit the run's chunks (`check`), make the journal an
error, which `overwrite=True` turns into starting over.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from lossatlas.errors import LossatlasError

MAGIC = b"LOSSATLAS-JOURNAL 2\n"  # 2: the header carries a checksum
_HEAD = struct.Struct("<II")
START_OVER = "remove it, or pass overwrite=True (--overwrite in the CLI) to start over"
_CRC = struct.Struct("<I")


class Journal:
    """Completed chunks of one run, read back from and appended to a `.partial` file."""

    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.header = header
        self.done: dict[int, np.ndarray] = {}
        self._file = None

    @classmethod
    def resume(cls, path: str | Path, key: str) -> Journal | None:
        """The journal at `path` if there is one; an error if it belongs to another run.

        A journal whose key differs (other directions, grid, data or model) is an error, not
        something to overwrite silently.
        """
        if not Path(path).exists():
            return None
        journal = cls(path, {"key": key})
        journal._read()
        journal._file = open(journal.path, "ab")  # noqa: SIM115 (kept open to append)
        return journal

    @classmethod
    def create(cls, path: str | Path, header: dict[str, Any]) -> Journal:
        """A new, empty journal whose header (with the run's `key`) is on disk on return."""
        journal = cls(path, header)
        journal.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(header, sort_keys=True).encode()
        with open(journal.path, "wb") as f:
            f.write(MAGIC + body + f" {zlib.crc32(body):08x}\n".encode())
            f.flush()
            os.fsync(f.fileno())
        journal._file = open(journal.path, "ab")  # noqa: SIM115 (kept open to append)
        return journal

    def _read(self) -> None:
        data = self.path.read_bytes()
        end = data.find(b"\n", len(MAGIC))
        if not data.startswith(MAGIC) or end < 0:
            raise LossatlasError(
                f"{self.path} is not a progress file of this lossatlas version; {START_OVER}"
            )
        body, _, crc = data[len(MAGIC) : end].rpartition(b" ")
        try:
            if crc != f"{zlib.crc32(body):08x}".encode():
                raise ValueError("checksum mismatch")
            stored = json.loads(body)
            if not isinstance(stored, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            raise LossatlasError(f"{self.path} has a damaged header; {START_OVER}") from None
        if stored.get("key") != self.header["key"]:
            raise LossatlasError(
                f"{self.path} holds progress of a different run (other directions, grid, data or "
                f"model); {START_OVER}"
            )
        self.header = stored
        pos = good = end + 1
        while pos + _HEAD.size <= len(data):
            index, count = _HEAD.unpack_from(data, pos)
            stop = pos + _HEAD.size + 8 * count
            if stop + _CRC.size > len(data):
                break
            (crc,) = _CRC.unpack_from(data, stop)
            if crc != zlib.crc32(data[pos:stop]):
                break
            self.done[index] = np.frombuffer(data[pos + _HEAD.size : stop], dtype="<f8").copy()
            pos = good = stop + _CRC.size
        if good < len(data):  # drop a record torn by a kill, so appends start clean
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def check(self, sizes: list[int]) -> None:
        """Every record is a chunk of the run, `sizes[i]` values long, or the file is damaged."""
        for index, values in self.done.items():
            if index >= len(sizes) or len(values) != sizes[index]:
                self.close()
                raise LossatlasError(
                    f"{self.path} holds chunks that do not fit this run; {START_OVER}"
                )

    def append(self, index: int, values: np.ndarray) -> None:
        """Record chunk `index` as done with its values (flushed to disk before returning)."""
        values = np.ascontiguousarray(values, dtype="<f8")
        body = _HEAD.pack(index, values.size) + values.tobytes()
        assert self._file is not None
        self._file.write(body + _CRC.pack(zlib.crc32(body)))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done[index] = values

    def close(self, *, remove: bool = False) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if remove:
            self.path.unlink(missing_ok=True)
