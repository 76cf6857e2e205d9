"""`Monitor` in a plain training loop, against independent references: the loss, gradient norm
and float64 dense Hessian of a deep copy at the recorded weights; bit-identical training with
and without it; the streamed file; resuming."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import lossatlas as la
from tests.oracles.hessian import dense_hessian

STEPS = 15


def setup(seed: int = 0, bn: bool = False) -> tuple[nn.Module, tuple, tuple]:
    """A small tanh network (with dropout, so training consumes the global RNG; BatchNorm if
    asked) and training and validation data."""
    g = torch.Generator().manual_seed(seed)
    X, y = torch.randn(48, 4, generator=g), torch.randint(0, 3, (48,), generator=g)
    Xv, yv = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    torch.manual_seed(seed)
    layers = [nn.Linear(4, 8), *([nn.BatchNorm1d(8)] if bn else []), nn.Tanh(), nn.Dropout(0.2)]
    return nn.Sequential(*layers, nn.Linear(8, 3)), (X, y), (Xv, yv)


def train(net, data, monitor=None, steps=STEPS, start=0, optimizer=None, snapshots=None):
    optimizer = optimizer or torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    X, y = data
    torch.manual_seed(100 + start)
    for step in range(start + 1, start + steps + 1):
        net.train()
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(X), y).backward()
        optimizer.step()
        if monitor is not None:
            monitor.step(step)
        if snapshots is not None:
            snapshots[step] = copy.deepcopy(net).eval()
    return optimizer


def test_records_equal_independent_references_at_the_recorded_weights(tmp_path):
    net, data, val = setup()
    problem = la.Problem(net, nn.CrossEntropyLoss(), data, dtype=torch.float64)
    val_problem = la.Problem(net, nn.CrossEntropyLoss(), val, dtype=torch.float64)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    monitor = la.Monitor(
        problem, every=5, optimizer=optimizer, out=tmp_path / "m.h5", data="all", tol=1e-8,
        max_hvps=80, val=val_problem, trace=3 * 67,  # Hutch++'s sketch spans all 67 weights: exact
    )  # fmt: skip
    snapshots: dict[int, nn.Module] = {}
    train(net, data, monitor, optimizer=optimizer, snapshots=snapshots)
    record = la.load(tmp_path / "m.h5")
    assert list(record.step) == [5, 10, 15]
    for i, step in enumerate(record.step):
        at = snapshots[int(step)].double()
        X, y = data
        loss = nn.functional.cross_entropy(at(X.double()), y)
        grads = torch.autograd.grad(loss, list(at.parameters()))
        assert record.loss[i] == pytest.approx(loss.item(), rel=1e-12)
        grad_norm = float(torch.cat([g.reshape(-1) for g in grads]).norm())
        assert record.grad_norm[i] == pytest.approx(grad_norm, rel=1e-10)
        H = dense_hessian(at, nn.CrossEntropyLoss(), X, y)
        top = float(torch.linalg.eigvalsh(H).max())
        assert record.lambda_max[i] == pytest.approx(top, rel=1e-7)
        assert record.trace[i] == pytest.approx(float(torch.trace(H)), rel=1e-9)
        val_loss = nn.functional.cross_entropy(at(val[0].double()), val[1]).item()
        assert record.val_loss[i] == pytest.approx(val_loss, rel=1e-12)
        assert record.gap[i] == pytest.approx(val_loss - loss.item(), rel=1e-10)
    np.testing.assert_allclose(record.threshold, (2 + 2 * 0.9) / 0.05)
    np.testing.assert_allclose(record.ratio, record.lambda_max / 76.0)
    weights = record.weights()
    assert weights.shape == (3, problem.n_params)
    last = torch.cat([p.detach().reshape(-1) for p in snapshots[15].parameters()]).float()
    np.testing.assert_array_equal(weights[-1], last.numpy())
    head = record.headline()
    assert head["records"] == 3 and head["last_step"] == 15
    assert head["lambda_max_last"] == record.lambda_max[-1]


def test_training_with_and_without_a_monitor_is_bit_identical(tmp_path):
    net_a, data, _ = setup()
    net_b = copy.deepcopy(net_a)
    train(net_a, data)
    monitor = la.Monitor(la.Problem(net_b, nn.CrossEntropyLoss(), data), every=4, trace=6)
    train(net_b, data, monitor)
    assert len(monitor.history) == 3
    for (name, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        assert torch.equal(a, b), name


def test_live_batchnorm_statistics_are_used(tmp_path):
    net, data, _ = setup(bn=True)
    problem = la.Problem(net, nn.CrossEntropyLoss(), data, dtype=torch.float64)
    monitor = la.Monitor(problem, every=5, data="all")
    snapshots: dict[int, nn.Module] = {}
    train(net, data, monitor, snapshots=snapshots)
    at = snapshots[15].double()
    loss = nn.functional.cross_entropy(at(data[0].double()), data[1]).item()
    assert monitor.history.loss[-1] == pytest.approx(loss, rel=1e-12)


def test_a_resumed_training_continues_the_record(tmp_path):
    out = tmp_path / "m.h5"

    def fresh(path=out) -> tuple[nn.Module, tuple, la.Monitor]:
        net, data, _ = setup()
        problem = la.Problem(net, nn.CrossEntropyLoss(), data)
        return net, data, la.Monitor(problem, every=5, out=path, data=32, max_hvps=12)

    net, data, whole = fresh(tmp_path / "whole.h5")  # the training that was never interrupted
    optimizer = train(net, data, whole, steps=10)
    train(net, data, whole, steps=10, start=10, optimizer=optimizer)  # reseeded as a restart is

    net, data, monitor = fresh()
    optimizer = train(net, data, monitor, steps=10)
    checkpoint = (copy.deepcopy(net.state_dict()), copy.deepcopy(optimizer.state_dict()))
    state = monitor.state_dict()
    train(net, data, monitor, steps=5, start=10, optimizer=optimizer)  # step 15, then a crash
    monitor.close()
    assert len(la.load(out)) == 3

    net, data, monitor = fresh()  # the restarted process
    net.load_state_dict(checkpoint[0])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    optimizer.load_state_dict(checkpoint[1])
    monitor.load_state_dict(state)
    assert len(la.load(out)) == 2  # the row after the checkpoint is gone
    train(net, data, monitor, steps=10, start=10, optimizer=optimizer)
    resumed, reference = la.load(out), whole.history
    assert list(resumed.step) == [5, 10, 15, 20]
    np.testing.assert_array_equal(resumed.loss, reference.loss)  # the same training, exactly
    np.testing.assert_array_equal(resumed.lambda_max, reference.lambda_max)


def test_mistakes_are_one_line(tmp_path):
    net, data, _ = setup()
    problem = la.Problem(net, nn.CrossEntropyLoss(), data)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(la.LossatlasError, match="not both"):
        la.Monitor(problem, optimizer=optimizer, lr=0.1)
    with pytest.raises(la.LossatlasError, match="every must be"):
        la.Monitor(problem, every=0)
    other = tmp_path / "other.h5"
    la.save(la.hessian_trace(problem, n_vectors=6, quiet=True), other)
    with pytest.raises(la.LossatlasError, match="is not a monitor file"):
        la.Monitor(problem, out=other)


def test_the_pca_plane_figure_report_and_cli(tmp_path):
    net, data, _ = setup()
    problem = la.Problem(net, nn.CrossEntropyLoss(), data)
    out = tmp_path / "m.h5"
    monitor = la.Monitor(problem, every=5, out=out, data=32, max_hvps=12)
    snapshots: dict[int, nn.Module] = {}
    train(net, data, monitor, steps=20, snapshots=snapshots)
    plane = monitor.plane(steps=7)
    monitor.close()
    assert plane.loss.shape == (7, 7) and len(plane.settings["off_plane"]) == 4
    (path,) = plane.paths.values()
    np.testing.assert_allclose(path[-1], 0.0, atol=1e-6)  # centred on the last record
    last = snapshots[20]  # the plane's origin: the last record's weights
    x, y = plane.coords[0][2], plane.coords[1][5]
    d1, d2 = plane.directions
    moved = {
        n: p.detach().double() + x * d1[n].double() + y * d2[n].double()
        for n, p in last.named_parameters()
    }
    with torch.no_grad():
        logits = torch.func.functional_call(last.double(), moved, (data[0].double(),))
    expected = nn.functional.cross_entropy(logits, data[1]).item()
    assert plane.loss[2, 5] == pytest.approx(expected, rel=1e-5)
    saved = la.load(tmp_path / "m.plane.h5")
    np.testing.assert_array_equal(saved.loss, plane.loss)
    assert set(saved.paths) == set(plane.paths)

    record = la.load(out)
    fig = la.figure_monitor(record)
    assert len(fig.axes) == 3
    # every lambda_max positive (no lr given here, so no threshold): a log axis
    assert fig.axes[0].get_yscale() == "log"
    negative = dataclasses.replace(record, lambda_max=-record.lambda_max)
    assert la.figure_monitor(negative).axes[0].get_yscale() == "linear"
    assert la.plot_monitor(record, tmp_path / "m.png").stat().st_size > 1000
    page = la.write_report([record, saved], tmp_path / "r.html")
    assert "Training, watched" in page.read_text()
    from tests.support.cli import run_cli

    proc = run_cli("report", "m.h5", "--out", "cli.html", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '"MonitorRecord", "Surface"' in proc.stdout.replace("\n", " ").replace("  ", "")
