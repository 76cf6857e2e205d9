"""`watch_checkpoints` and `lossatlas watch`: checkpoints saved during training give the rows a
live `Monitor` recorded at the same steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from tests.support.cli import run_cli

SPEC = """
import torch
from torch import nn
import lossatlas as la


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(48, 4, generator=g), torch.randint(0, 3, (48,), generator=g)


def make():
    return la.Problem(model(), nn.CrossEntropyLoss(), data())
"""


def train_and_save(tmp_path, every: int = 5, steps: int = 15) -> la.MonitorRecord:
    """Trains the spec's model, saving `step-N.pt` every `every` steps, watched live too."""
    import importlib.util

    loader = importlib.util.spec_from_file_location("watched_spec", tmp_path / "spec.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    net, (X, y) = module.model(), module.data()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    live = la.Monitor(la.Problem(net, nn.CrossEntropyLoss(), (X, y)), every=every,
                      optimizer=optimizer, data="all", tol=1e-6, max_hvps=60)  # fmt: skip
    (tmp_path / "ckpts").mkdir()
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(X), y).backward()
        optimizer.step()
        live.step(step)
        if step % every == 0:
            torch.save(net.state_dict(), tmp_path / "ckpts" / f"step-{step}.pt")
    return live.history


def test_checkpoints_give_the_live_monitors_rows(tmp_path):
    (tmp_path / "spec.py").write_text(SPEC)
    live = train_and_save(tmp_path)
    from lossatlas.cli.spec import load_problem

    problem = load_problem(f"{tmp_path}/spec.py:make")
    files = sorted((tmp_path / "ckpts").iterdir(), key=lambda p: p.name)[::-1]  # any order
    monitor = la.watch_checkpoints(
        problem, files, lr=0.05, momentum=0.9, data="all", tol=1e-6, max_hvps=60, quiet=True
    )
    after = monitor.history
    assert list(after.step) == [5, 10, 15]
    np.testing.assert_allclose(after.loss, live.loss, rtol=1e-6)
    np.testing.assert_allclose(after.grad_norm, live.grad_norm, rtol=1e-5)
    np.testing.assert_allclose(after.lambda_max, live.lambda_max, rtol=1e-4)
    np.testing.assert_allclose(after.threshold, live.threshold)
    before = {k: v.clone() for k, v in problem.model.state_dict().items()}
    la.watch_checkpoints(problem, files[:1], data=8, quiet=True)
    assert all(torch.equal(before[k], v) for k, v in problem.model.state_dict().items())


def test_the_cli_watches_a_folder_and_reports(tmp_path):
    (tmp_path / "spec.py").write_text(SPEC)
    live = train_and_save(tmp_path)
    args = ["watch", "spec.py:make", "ckpts", "--lr", "0.05", "--momentum", "0.9"]
    proc = run_cli(*args, "--data", "all", "--report", "r.html", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["records"] == 3 and summary["last_step"] == 15
    assert summary["lambda_max_last"] == pytest.approx(live.lambda_max[-1], rel=1e-2)
    assert set(summary["files"]) == {"monitor", "plane", "report"}
    assert "Training, watched" in (tmp_path / "r.html").read_text()
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    torch.save({"0.weight": torch.zeros(2, 2)}, tmp_path / "ckpts" / "step-99.pt")
    bad = run_cli(*args, "--overwrite", cwd=tmp_path)
    assert bad.returncode == 2 and "step-99.pt" in bad.stderr and "(2, 2)" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert la.load(tmp_path / "monitor.h5").step[-1] == 15  # the earlier record is kept
