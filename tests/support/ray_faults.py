"""Faults for the Ray tests: a loss that names the process evaluating it, and a thread that
kills one Ray worker with SIGKILL once it has started working."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


def marking_mse(folder: Path, delay: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean squared error that leaves the evaluating process's id in `folder` and sleeps
    `delay` seconds, so a run lasts long enough to be interrupted."""

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        (folder / str(os.getpid())).touch()
        time.sleep(delay)
        return torch.nn.functional.mse_loss(out, y)

    return loss


def worker_pids(folder: Path) -> list[int]:
    """The ids of the processes, other than this one, that evaluated a `marking_mse`."""
    pids = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    return [pid for pid in pids if pid != os.getpid()]


@contextmanager
def one_worker_killed(folder: Path, *, after: float = 0.5) -> Iterator[list[int]]:
    """Within the block, SIGKILL the first worker that marks `folder`, `after` seconds after
    it starts (so it holds tasks in flight); yields the list of killed ids."""
    killed: list[int] = []

    def kill() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            workers = worker_pids(folder) if folder.exists() else []
            if workers:
                time.sleep(after)
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        yield killed
    finally:
        killer.join()
