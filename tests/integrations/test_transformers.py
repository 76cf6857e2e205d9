"""`lossatlas.integrations.transformers.LossatlasCallback` in a real Hugging Face `Trainer` (CPU)
on a tiny GPT-2 built from a config (random weights, no download): the record's steps, its last
`lambda_max` against an independent `hessian_eigen` at the trained weights, bit-identical
training with and without it, TensorBoard's event files and a resumed training."""

from __future__ import annotations

import copy
import importlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="the Hugging Face Trainer needs accelerate")
pytest.importorskip("tensorboard")

import transformers as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lossatlas as la
from lossatlas.integrations.transformers import LossatlasCallback

STEPS, EVERY = 12, 4
OPTIONS = {"data": "all", "tol": 1e-8, "max_hvps": 80}
SCALARS = ["lossatlas/lambda_max", "lossatlas/threshold", "lossatlas/grad_norm"]

IDS = torch.randint(0, 50, (16, 8), generator=torch.Generator().manual_seed(0))
BATCH = {"input_ids": IDS, "labels": IDS}  # all 16 sequences in one batch (the references)
BATCHES = [{"input_ids": IDS[i : i + 4], "labels": IDS[i : i + 4]} for i in range(0, 16, 4)]


class Sequences(torch.utils.data.Dataset):
    """Fixed token sequences as the Trainer takes them: dicts of input_ids and labels."""

    def __len__(self) -> int:
        return len(IDS)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": IDS[i], "labels": IDS[i]}


def gpt2() -> torch.nn.Module:
    """A one-layer GPT-2 with dropout (training consumes the global RNG), seeded weights."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = tf.GPT2Config(
            n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=32, bos_token_id=1,
            eos_token_id=1,
        )  # fmt: skip
    return tf.GPT2LMHeadModel(config)


def problem_of(model: torch.nn.Module) -> la.Problem:
    """The model's own loss (`outputs.loss`) on dict batches, averaged over predicted tokens."""
    return la.Problem(model, None, BATCHES, weight=la.token_count())


def train(
    model: torch.nn.Module,
    callbacks: list,
    output_dir: Path,
    *,
    resume: Path | None = None,
    **options,
) -> tf.Trainer:
    # A constant learning rate: the default linear schedule ends at lr = 0, where Monitor's
    # threshold (2 + 2 momentum) / lr raises ZeroDivisionError (a Monitor issue, not ours).
    settings = dict(
        output_dir=str(output_dir), max_steps=STEPS, per_device_train_batch_size=4, report_to=[],
        use_cpu=True, logging_steps=100, save_strategy="no", seed=0, learning_rate=0.05,
        lr_scheduler_type="constant", disable_tqdm=True,
    )  # fmt: skip
    args = tf.TrainingArguments(**{**settings, **options})
    trainer = tf.Trainer(model=model, args=args, train_dataset=Sequences(), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=None if resume is None else str(resume))
    return trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One training watched (TensorBoard on, a checkpoint at step 8) and the same unwatched."""
    tmp = tmp_path_factory.mktemp("transformers")
    watched = gpt2()
    callback = LossatlasCallback(
        problem_of(watched), every=EVERY, out=tmp / "monitor.h5", **OPTIONS
    )
    train(
        watched, [callback], tmp / "watched", report_to=["tensorboard"], save_strategy="steps",
        save_steps=8,
    )  # fmt: skip
    plain = gpt2()
    train(plain, [], tmp / "plain")
    return {"tmp": tmp, "watched": watched, "callback": callback, "plain": plain}


def test_records_every_four_steps_and_the_last_lambda_max_is_exact(runs) -> None:
    record = la.load(runs["tmp"] / "monitor.h5")
    assert list(record.step) == [4, 8, 12]
    np.testing.assert_allclose(record.epoch, [1, 2, 3])  # 4 batches of 4 an epoch
    np.testing.assert_allclose(record.lr, 0.05)
    np.testing.assert_allclose(record.threshold, 2 / 0.05)  # AdamW: the 2 / lr line
    reference = la.hessian_eigen(problem_of(runs["watched"]), tol=1e-10)
    assert record.lambda_max[-1] == pytest.approx(reference.eigenvalues[0], rel=1e-5)
    model = copy.deepcopy(runs["watched"]).eval()
    with torch.no_grad():
        assert record.loss[-1] == pytest.approx(model(**BATCH).loss.item(), rel=1e-6)
    np.testing.assert_array_equal(runs["callback"].history.lambda_max, record.lambda_max)


def test_training_is_bit_identical_with_and_without_the_callback(runs) -> None:
    watched, plain = runs["watched"].state_dict(), runs["plain"].state_dict()
    assert watched.keys() == plain.keys()
    for name, tensor in plain.items():
        assert torch.equal(tensor, watched[name]), name


def test_tensorboard_holds_the_scalars_the_trajectory_and_the_mesh(runs) -> None:
    folder = runs["tmp"] / "watched" / "runs" / "lossatlas"  # beside the Trainer's own run
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert set(SCALARS) <= set(tags["scalars"])
    lam = events.Scalars("lossatlas/lambda_max")
    assert [e.step for e in lam] == [4, 8, 12]
    record = la.load(runs["tmp"] / "monitor.h5")
    np.testing.assert_allclose([e.value for e in lam], record.lambda_max, rtol=1e-6)
    assert tags["images"] == ["lossatlas/trajectory"]
    assert {"lossatlas/surface_VERTEX", "lossatlas/surface_FACE"} <= set(tags["tensors"])
    trainer_runs = [p for p in folder.parent.iterdir() if p.name != "lossatlas"]
    assert len(trainer_runs) == 1  # the Trainer's TensorBoardCallback wrote its own run


def test_a_resumed_training_continues_the_record(runs, tmp_path) -> None:
    out = tmp_path / "monitor.h5"
    shutil.copy(runs["tmp"] / "monitor.h5", out)  # rows 4, 8, 12: a crash after step 12
    resumed = gpt2()  # the restarted process: a fresh model, Problem and callback
    callback = LossatlasCallback(problem_of(resumed), every=EVERY, out=out, **OPTIONS)
    checkpoint = runs["tmp"] / "watched" / "checkpoint-8"
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]
    entry = saved["lossatlas:monitor.h5"]  # the monitor's state at the checkpoint
    assert [row["step"] for row in entry["rows"]] == [4, 8] and entry["steps_seen"] == 8
    json.dumps(entry, allow_nan=False)  # strict JSON: unmeasured values are null
    train(resumed, [callback], tmp_path / "resumed", resume=checkpoint)
    record, reference = la.load(out), la.load(runs["tmp"] / "monitor.h5")
    assert list(record.step) == [4, 8, 12]  # the row at 12 was dropped, then recorded again
    np.testing.assert_array_equal(record.loss, reference.loss)  # the same training, exactly
    np.testing.assert_array_equal(record.weights(), reference.weights())
    np.testing.assert_allclose(record.lambda_max, reference.lambda_max, rtol=1e-6)
    assert list(callback.history.step) == [4, 8, 12]


def test_mistakes_are_one_line(tmp_path) -> None:
    model = gpt2()
    with pytest.raises(la.LossatlasError, match="unexpected keyword argument 'bogus'"):
        LossatlasCallback(problem_of(model), bogus=1)
    copied = LossatlasCallback(problem_of(copy.deepcopy(model)), every=2)
    with pytest.raises(la.LossatlasError, match="nor one of its submodules"):
        train(model, [copied], tmp_path)


def test_without_transformers_the_module_says_how_to_install_it(monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "transformers" or m.startswith("transformers.")]:
        monkeypatch.setitem(sys.modules, name, None)  # "import transformers" fails as if absent
    monkeypatch.delitem(sys.modules, "lossatlas.integrations.transformers")
    with pytest.raises(la.LossatlasError, match="pip install transformers"):
        importlib.import_module("lossatlas.integrations.transformers")
