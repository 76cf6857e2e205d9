"""`TrainedModel.headline()`, against the record's own history and weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lossatlas as la
from lossatlas.io import storage


def as_json(head: dict[str, Any]) -> dict[str, Any]:
    """The headline through JSON (NaN allowed): it must serialise, and keep its keys."""
    back = json.loads(json.dumps(head, allow_nan=True))
    assert list(back) == list(head)
    return back


def test_trained_model_headline(tmp_path: Path) -> None:
    problem = la.linreg()
    model = la.train(problem, val=la.linreg(seed=7), steps=12, batch_size=16, lr=0.05, eval_every=5)
    head = as_json(model.headline())
    h = model.history
    assert head["name"] == model.name
    assert head["n_params"] == sum(p.numel() for p in model.params.values()) == problem.n_params
    assert head["steps"] == len(h["step"]) == 12 and head["status"] == model.provenance["status"]
    assert head["final_batch_loss"] == h["loss"][-1]
    assert head["train_loss"] == h["train_loss"][-1] and head["val_loss"] == h["val_loss"][-1]
    assert h["eval_step"][-1] == 12  # the last evaluation is after the last step
    assert head["seconds"] == model.provenance["seconds"]
    loaded = storage.load(storage.save(model, tmp_path / "model.h5"))
    assert as_json(loaded.headline()) == head


def test_checkpoint_headline_has_no_losses() -> None:
    problem = la.linreg()
    (model,) = la.from_checkpoints(problem, [dict(problem.params)], names=["given"])
    head = as_json(model.headline())
    assert head["name"] == "given" and head["n_params"] == 2
    assert head["train_loss"] is head["val_loss"] is head["final_batch_loss"] is None
