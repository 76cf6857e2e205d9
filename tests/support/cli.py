"""Shared test helpers: the command line in a subprocess, and PNG sizes."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path


def run_cli(
    *args: str, cwd: Path | None = None, cache: Path | None = None, **env: str
) -> subprocess.CompletedProcess:
    """`python -m lossatlas ARGS` as a user would run it (LOSSATLAS_QUIET unset unless
    given); `cache` is the weights cache (default: `cwd/cache` when `cwd` is given)."""
    environ = {k: v for k, v in os.environ.items() if k != "LOSSATLAS_QUIET"}
    cache = cache or (cwd / "cache" if cwd is not None else None)
    if cache is not None:
        environ["LOSSATLAS_CACHE"] = str(cache)
    return subprocess.run(
        [sys.executable, "-m", "lossatlas", *args],
        capture_output=True,
        text=True,
        env={**environ, **env},
        cwd=cwd,
        timeout=300,
    )


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (which is checked)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])
