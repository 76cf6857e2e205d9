"""A real local Ray cluster for the tests: a head and a second node, one CPU each.

Started with `ray start --block` in new process groups and stopped by signalling exactly those
groups (never `ray stop`, which would stop any Ray on the machine). No dashboard, no usage
statistics.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
# No usage statistics; no token authentication, which a test cluster on one machine does not
# need and which every client (the CLI and driver subprocesses) would otherwise have to find.
ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


NODE_GROUPS: list[int] = []  # the process groups of the running cluster's nodes


def _stat(pid: str) -> tuple[int, int]:
    """`(parent id, process group)` of a process, from /proc (after its name's parenthesis)."""
    fields = (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[2])


def actor_pids(name: str) -> list[int]:
    """This cluster's processes that run an actor of class `name` (Ray titles them
    `ray::<name>...`; they have sessions of their own, and a parent, the raylet, in one of the
    nodes' process groups), found in /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes()
            if title.startswith(f"ray::{name}".encode()):
                parent, _ = _stat(entry.name)
                if _stat(str(parent))[1] in NODE_GROUPS:
                    pids.append(int(entry.name))
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    return sorted(pids)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, **ENVIRONMENT}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [RAY, "start", "--block", "--num-cpus", "1", "--disable-usage-stats", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, stopped as one below
        )


def _nodes(address: str) -> int:
    code = (
        f"import ray, logging; ray.init(address={address!r}, logging_level=logging.ERROR); "
        "print(sum(n['Alive'] for n in ray.nodes()))"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return 0
    return int(proc.stdout.strip() or 0)


@contextmanager
def local_cluster(folder: Path) -> Iterator[str]:
    """`address` of a running two-node cluster, stopped on exit. Sets `ENVIRONMENT` in this
    process (and so in the processes it starts) while the cluster runs."""
    saved = {key: os.environ.get(key) for key in ENVIRONMENT}
    os.environ.update(ENVIRONMENT)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must stay short
    head_args = ["--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", temp]
    head = _start(head_args, folder / "h.log")
    nodes = [head]
    try:
        deadline = time.monotonic() + 120
        while _nodes(address) < 1:
            assert time.monotonic() < deadline, (folder / "h.log").read_text()
            time.sleep(0.5)
        nodes.append(_start(["--address", address], folder / "n.log"))
        while _nodes(address) < 2:
            assert time.monotonic() < deadline, (folder / "n.log").read_text()
            time.sleep(0.5)
        NODE_GROUPS[:] = [proc.pid for proc in nodes]
        yield address
    finally:
        NODE_GROUPS.clear()
        for proc in reversed(nodes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the node and its workers
        for proc in reversed(nodes):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(temp, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
