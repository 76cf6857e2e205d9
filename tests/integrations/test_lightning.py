"""`lossatlas.integrations.lightning.LossatlasCallback` in real Lightning training (CPU): the
record's steps, its last `lambda_max` against an independent `hessian_eigen` at the trained
weights, bit-identical training with and without it, a Problem on the LightningModule itself or
on a submodule, gradient accumulation, TensorBoard's event files and a resumed fit."""

from __future__ import annotations

import copy
import importlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("lightning")
pytest.importorskip("tensorboard")

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

import lossatlas as la
from lossatlas.integrations.lightning import LossatlasCallback

STEPS, EVERY = 30, 10
OPTIONS = {"data": "all", "tol": 1e-8, "max_hvps": 60}
SCALARS = ["lossatlas/lambda_max", "lossatlas/threshold", "lossatlas/grad_norm"]

g = torch.Generator().manual_seed(0)
X, Y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)


class Classifier(L.LightningModule):
    """A small MLP with dropout (training consumes the global RNG) and SGD with momentum."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        layers = [nn.Linear(4, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 3)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.9)


def module(dropout: float = 0.1) -> Classifier:
    L.seed_everything(0, verbose=False)
    return Classifier(dropout)


def problem_of(model: nn.Module) -> la.Problem:
    """The Problem a user writes: on the module being trained (or its `.net`), all the data."""
    return la.Problem(model, nn.CrossEntropyLoss(), (X, Y))


def fit(
    model: Classifier,
    callbacks: list,
    *,
    steps: int = STEPS,
    logger: TensorBoardLogger | bool = False,
    batch_size: int = 64,
    ckpt_path: Path | None = None,
    **trainer_options,
) -> L.Trainer:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=batch_size)
    L.seed_everything(1, verbose=False)
    options = dict(
        max_steps=steps, logger=logger, callbacks=callbacks, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
        log_every_n_steps=1,
    )  # fmt: skip
    trainer = L.Trainer(**{**options, **trainer_options})
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One training watched (Problem on `.net`, TensorBoard), the same training unwatched, and
    once more with the Problem on the LightningModule itself."""
    tmp = tmp_path_factory.mktemp("lightning")
    watched = module()
    callback = LossatlasCallback(
        problem_of(watched.net), every=EVERY, out=tmp / "monitor.h5", **OPTIONS
    )
    fit(watched, [callback], logger=TensorBoardLogger(tmp))
    plain = module()
    fit(plain, [])
    whole = module()
    fit(whole, [LossatlasCallback(problem_of(whole), every=EVERY, out=tmp / "whole.h5", **OPTIONS)])
    return {"tmp": tmp, "watched": watched, "callback": callback, "plain": plain, "whole": whole}


def test_records_every_ten_steps_and_the_last_lambda_max_is_exact(runs) -> None:
    record = la.load(runs["tmp"] / "monitor.h5")
    assert list(record.step) == [10, 20, 30]
    np.testing.assert_array_equal(record.epoch, [9, 19, 29])  # one batch per epoch
    np.testing.assert_allclose(record.threshold, (2 + 2 * 0.9) / 0.2)
    reference = la.hessian_eigen(problem_of(runs["watched"].net), tol=1e-10)
    assert record.lambda_max[-1] == pytest.approx(reference.eigenvalues[0], rel=1e-5)
    with torch.no_grad():
        loss = nn.functional.cross_entropy(copy.deepcopy(runs["watched"].net).eval()(X), Y)
    assert record.loss[-1] == pytest.approx(loss.item(), rel=1e-6)
    weights = record.weights()
    last = torch.cat([p.detach().reshape(-1) for p in runs["watched"].net.parameters()])
    np.testing.assert_array_equal(weights[-1], last.numpy())
    np.testing.assert_array_equal(runs["callback"].history.lambda_max, record.lambda_max)


def test_training_is_bit_identical_with_and_without_the_callback(runs) -> None:
    for model in ("watched", "whole"):
        for (name, a), b in zip(
            runs["plain"].state_dict().items(), runs[model].state_dict().values()
        ):
            assert torch.equal(a, b), (model, name)


def test_a_problem_on_the_lightning_module_itself_records_the_same(runs) -> None:
    whole, net = la.load(runs["tmp"] / "whole.h5"), la.load(runs["tmp"] / "monitor.h5")
    assert list(whole.step) == [10, 20, 30]
    np.testing.assert_allclose(whole.lambda_max, net.lambda_max, rtol=1e-6)
    np.testing.assert_array_equal(whole.loss, net.loss)
    reference = la.hessian_eigen(problem_of(runs["whole"]), tol=1e-10)
    assert whole.lambda_max[-1] == pytest.approx(reference.eigenvalues[0], rel=1e-5)


def test_tensorboard_holds_the_scalars_the_trajectory_and_the_mesh(runs) -> None:
    (folder,) = (runs["tmp"] / "lightning_logs").iterdir()
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert set(SCALARS) <= set(tags["scalars"])
    assert "lossatlas/trace" not in tags["scalars"]  # not measured, not logged
    record = la.load(runs["tmp"] / "monitor.h5")
    lam = events.Scalars("lossatlas/lambda_max")
    assert [e.step for e in lam] == [10, 20, 30]
    np.testing.assert_allclose([e.value for e in lam], record.lambda_max, rtol=1e-6)
    assert tags["images"] == ["lossatlas/trajectory"]
    (image,) = events.Images("lossatlas/trajectory")
    assert image.step == STEPS and image.width > 100 and image.height > 100
    vertices = make_ndarray(events.Tensors("lossatlas/surface_VERTEX")[0].tensor_proto)
    faces = make_ndarray(events.Tensors("lossatlas/surface_FACE")[0].tensor_proto)
    assert vertices.shape == (1, 121, 3) and faces.shape == (1, 200, 3)
    assert np.isfinite(vertices).all() and faces.max() == 120
    # A vertex's height is the loss at centre + x d1 + y d2 on the plane of the recorded path,
    # evaluated here independently by a copy of the network with those weights written in.
    net = runs["watched"].net
    shapes = [(name, tuple(p.shape)) for name, p in net.named_parameters()]
    pca = la.pca_directions(record.weights(), n=2, names_shapes=shapes)
    for x, y, z in vertices[0, [0, 60, 120]]:
        moved = copy.deepcopy(net).eval()
        with torch.no_grad():
            for name, p in moved.named_parameters():
                d1, d2 = pca.directions[0][name], pca.directions[1][name]
                p.copy_(pca.center[name] + float(x) * d1 + float(y) * d2)
            loss = nn.functional.cross_entropy(moved(X), Y).item()
        assert z == pytest.approx(loss, rel=1e-5)


def test_a_fit_resumed_from_a_checkpoint_continues_the_record(tmp_path) -> None:
    # No dropout: Lightning's checkpoints do not hold the global RNG, so only then is the
    # resumed training the same as the uninterrupted one, exactly.
    first = module(dropout=0.0)
    callback = LossatlasCallback(
        problem_of(first.net), every=EVERY, out=tmp_path / "a.h5", **OPTIONS
    )
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "a", every_n_train_steps=20, save_top_k=-1)
    fit(first, [callback, checkpoints], enable_checkpointing=True)  # to 30: a crash after it
    out = tmp_path / "resumed" / "a.h5"  # the run moved to another folder: the state still fits
    out.parent.mkdir()
    shutil.copy(tmp_path / "a.h5", out)
    (checkpoint,) = (tmp_path / "a").glob("*step=20*.ckpt")
    saved = torch.load(checkpoint, weights_only=True)["callbacks"]  # plain values only
    (state,) = [v for k, v in saved.items() if k.startswith("LossatlasCallback")]
    assert [row["step"] for row in state["rows"]] == [10, 20] and state["steps_seen"] == 20
    resumed = module(dropout=0.0)  # the restarted process: a fresh module, Problem, callback
    callback = LossatlasCallback(problem_of(resumed.net), every=EVERY, out=out, **OPTIONS)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "b", every_n_train_steps=20, save_top_k=-1)
    fit(resumed, [callback, checkpoints], enable_checkpointing=True, ckpt_path=checkpoint)
    record, reference = la.load(out), la.load(tmp_path / "a.h5")
    assert list(record.step) == [10, 20, 30]  # the row at 30 was dropped, then recorded again
    np.testing.assert_array_equal(record.loss, reference.loss)  # the same training, exactly
    np.testing.assert_array_equal(record.weights(), reference.weights())
    np.testing.assert_allclose(record.lambda_max, reference.lambda_max, rtol=1e-6)
    assert list(callback.history.step) == [10, 20, 30]


def test_gradient_accumulation_records_once_per_optimizer_step(tmp_path) -> None:
    model = module()
    callback = LossatlasCallback(problem_of(model.net), every=3, out=tmp_path / "m.h5", **OPTIONS)
    fit(model, [callback], steps=6, batch_size=16, accumulate_grad_batches=2)  # 2 steps an epoch
    record = la.load(tmp_path / "m.h5")
    assert list(record.step) == [3, 6]
    np.testing.assert_array_equal(record.epoch, [1, 2])
    reference = la.hessian_eigen(problem_of(model.net), tol=1e-10)
    assert record.lambda_max[-1] == pytest.approx(reference.eigenvalues[0], rel=1e-5)


def test_mistakes_are_one_line(tmp_path) -> None:
    model = module()
    with pytest.raises(la.LossatlasError, match="unexpected keyword argument 'bogus'"):
        LossatlasCallback(problem_of(model), bogus=1)
    with pytest.raises(la.LossatlasError, match="problem must be a lossatlas Problem"):
        LossatlasCallback(model)
    copied = LossatlasCallback(problem_of(copy.deepcopy(model.net)), every=2)
    with pytest.raises(la.LossatlasError, match="nor one of its submodules"):
        fit(model, [copied], steps=2)


def test_without_lightning_the_module_says_how_to_install_it(monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "lightning" or m.startswith("lightning.")]:
        monkeypatch.setitem(sys.modules, name, None)  # "import lightning..." fails as if absent
    monkeypatch.delitem(sys.modules, "lossatlas.integrations.lightning")
    with pytest.raises(la.LossatlasError, match=r"pip install 'lossatlas\[lightning\]'"):
        importlib.import_module("lossatlas.integrations.lightning")
