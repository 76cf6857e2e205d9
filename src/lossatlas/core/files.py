"""Writing files safely: unique temporary names renamed into place, and a lock per output.

Results are written to a temporary file in the target's folder and renamed over it
(`os.replace` is atomic on POSIX), so a reader sees the old file or the new one, never half of
one. Each writer's temporary file has its own name (process id and a random part), so two
writers never write into one file, and it is removed on every failure path.

`OutputLock` is an advisory lock on `<out>.lock` held for a whole run: `fcntl.flock` is
released by the kernel when its process dies, so a lock left by a killed run is never stale;
the file holds the owner's process id and host for the message a second writer gets.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

from lossatlas.errors import LossatlasError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, runs are not protected from each other
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def temporary_path(path: str | Path) -> Iterator[Path]:
    """A unique temporary path beside `path`, renamed to `path` if the block succeeds.

    The temporary file is removed if the block raises (or is interrupted).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only there when writing failed


class OutputLock:
    """An exclusive advisory lock on `<path>.lock`, for one run writing `path`.

    Use as a context manager. A second run on the same output, in this process or another, is
    refused with a `LossatlasError` naming the process that holds the lock.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        if fcntl is None:
            return self
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = _read_owner(fd)
                os.close(fd)
                raise LossatlasError(
                    f"{self.path} is being written by another run ({owner}); wait for it to "
                    "finish or stop it, or choose another output file"
                ) from None
            try:  # the holder before us may have removed the file we locked: lock the new one
                if os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()  # while still holding it: no one else can be inside
        os.close(self._fd)
        self._fd = None


def _read_owner(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"
