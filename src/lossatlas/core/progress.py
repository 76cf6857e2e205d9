"""Progress bars on standard error, off in quiet mode or with LOSSATLAS_QUIET=1."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def is_quiet(quiet: bool | None) -> bool:
    """`quiet` if given, else the LOSSATLAS_QUIET environment variable."""
    if quiet is not None:
        return quiet
    return os.environ.get("LOSSATLAS_QUIET", "") not in ("", "0")


@contextmanager
def progress(description: str, total: int, *, quiet: bool | None = None) -> Iterator:
    """A context giving `advance(n)`; draws a bar unless quiet."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=is_quiet(quiet),
        transient=False,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
