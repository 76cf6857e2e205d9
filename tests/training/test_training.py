"""The built-in trainer (`training.trainer`), runs and checkpoints."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas.core.metrics import accuracy
from lossatlas.core.problem import Problem
from lossatlas.core.seeding import init_layers
from lossatlas.errors import LossatlasError, LossatlasWarning
from lossatlas.io import storage
from lossatlas.training.checkpoints import from_checkpoints
from lossatlas.training.loop import evaluate
from lossatlas.training.runs import train_runs
from lossatlas.training.trainer import TrainedModel, at, train
from tests.oracles.cases import build_case

N = 23  # not a multiple of the batch size: epochs leave samples over


def tiny_mlp() -> nn.Sequential:
    gen = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    init_layers(model, gen)
    return model


def regression(model: nn.Module | None = None, n: int = N, seed: int = 1) -> Problem:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return Problem(model or tiny_mlp(), nn.MSELoss(), (x, y))


def seeds(seed: int) -> list[int]:
    """The documented seed derivation of `train`: init, batch order, global RNG."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(3, np.uint64)]


def plain_sgd(model, x, y, *, seed, steps, batch, lr, fresh):
    """A hand-written loop: the batch order rebuilt from the documented generators."""
    model = copy.deepcopy(model)
    s_init, s_order, _ = seeds(seed)
    if fresh:
        init_layers(model, torch.Generator().manual_seed(s_init))
    gen = torch.Generator().manual_seed(s_order)
    n, pos, order = len(x), len(x), None
    params = list(model.parameters())
    for _ in range(steps):
        if batch == n:
            idx = torch.arange(n)
        else:
            if pos + batch > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx, pos = order[pos : pos + batch], pos + batch
        loss = ((model(x[idx]) - y[idx]) ** 2).mean()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.add_(g, alpha=-lr)
    return {k: p.detach() for k, p in model.named_parameters()}


@pytest.mark.parametrize(("init", "batch"), [("problem", 5), ("fresh", 5), ("fresh", None)])
def test_matches_a_plain_sgd_loop(init, batch):
    problem = regression()
    x, y = problem._pair
    got = train(problem, seed=7, steps=13, batch_size=batch, lr=0.05, init=init)
    ref = plain_sgd(
        problem.model, x, y, seed=7, steps=13, batch=batch or N, lr=0.05, fresh=init == "fresh"
    )
    assert list(got.params) == list(ref)
    for name, w in ref.items():
        assert torch.equal(got.params[name], w), name
    assert got.provenance["samples_seen"] == 13 * (batch or N)
    assert got.settings["sampling"] == ("full batch" if batch is None else got.settings["sampling"])


def test_batches_and_data_loaders_are_joined():
    problem = regression()
    x, y = problem._pair
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=6)
    runs = [
        train(Problem(problem.model, nn.MSELoss(), data), steps=9, batch_size=5, lr=0.1)
        for data in ((x, y), [(x[:10], y[:10]), (x[10:], y[10:])], loader)
    ]
    assert all(torch.equal(r.flat(), runs[0].flat()) for r in runs)


def test_history_settings_and_provenance():
    problem, val = regression(), regression(seed=2)
    run = train(problem, seed=0, steps=10, batch_size=4, lr=0.1, val=val, eval_every=4)
    h = run.history
    assert all(v.dtype == np.float64 for v in h.values())
    assert h["step"].tolist() == list(range(1, 11))
    assert h["loss"].shape == h["lr"].shape == (10,)
    assert h["eval_step"].tolist() == [0, 4, 8, 10]
    assert h["train_loss"].shape == h["val_loss"].shape == (4,)
    # The last full evaluations are those of the returned weights.
    assert h["train_loss"][-1] == pytest.approx(evaluate(at(problem, run))["loss"], rel=1e-12)
    assert h["val_loss"][-1] == pytest.approx(evaluate(run.problem(val))["loss"], rel=1e-12)
    s = run.settings
    assert (s["seed"], s["steps"], s["batch_size"], s["optimizer"], s["lr"]) == (
        0,
        10,
        4,
        "sgd",
        0.1,
    )
    assert s["schedule"] is None and s["init"] == "fresh" and s["val"]
    p = run.provenance
    assert p["steps"] == 10 and p["samples_seen"] == 40 and p["seconds"] > 0
    assert p["status"] == "finished" and "torch" in p["versions"]
    assert all(t.device.type == "cpu" for t in run.params.values())


def test_schedule_and_optimizer_options_are_used():
    problem = regression()
    options = {"optimizer": "momentum", "optimizer_kwargs": {"momentum": 0.5}}
    options |= {"schedule": "step", "schedule_kwargs": {"step_size": 2, "gamma": 0.5}}
    run = train(problem, steps=6, batch_size=5, lr=0.2, **options)
    assert run.history["lr"].tolist() == pytest.approx([0.2, 0.2, 0.1, 0.1, 0.05, 0.05])
    assert run.settings["optimizer_kwargs"] == {"momentum": 0.5}
    assert run.settings["schedule"] == "step"


def test_deterministic_and_seed_sensitive():
    problem = regression()
    a, b = (train(problem, seed=3, steps=8, batch_size=4) for _ in range(2))
    c = train(problem, seed=4, steps=8, batch_size=4)
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert np.array_equal(a.history["loss"], b.history["loss"])
    assert not torch.equal(a.flat(), c.flat())


def test_global_rng_and_the_users_model_are_untouched():
    model = nn.Sequential(nn.Linear(3, 6), nn.Dropout(0.5), nn.Linear(6, 2)).double()
    before = copy.deepcopy(model.state_dict())
    problem = regression(model)
    weights = {k: v.clone() for k, v in problem.params.items()}
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = train(problem, steps=5, batch_size=4)  # dropout draws inside the run
    assert torch.equal(torch.get_rng_state(), state)
    b = train(problem, steps=5, batch_size=4)
    assert torch.equal(a.flat(), b.flat())  # the dropout masks are seeded too
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training  # the user's mode is left alone
    assert all(torch.equal(weights[k], v) for k, v in problem.params.items())
    assert not problem.module.training


def test_threads_are_restored_and_divergence_stops_the_run():
    problem = regression()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(problem, steps=2, batch_size=4, threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.warns(LossatlasWarning, match="stopping"):
        run = train(problem, steps=50, batch_size=4, lr=1e6)
    assert run.provenance["status"].startswith("diverged at step")
    assert run.provenance["steps"] == len(run.history["loss"]) < 50
    assert run.history["eval_step"][-1] == run.history["step"][-1]


def test_batchnorm_statistics_are_learned():
    case = build_case("cnn_bn")
    problem = Problem(case.model, nn.CrossEntropyLoss(), (case.X, case.y))
    start = {k: v.clone() for k, v in problem.buffers.items()}
    run = train(problem, steps=4, batch_size=16, lr=0.05)
    fresh_bn = nn.BatchNorm2d(4)  # init="fresh" resets the statistics, training moves them
    assert not torch.allclose(run.buffers["bn1.running_mean"], fresh_bn.running_mean)
    assert not torch.allclose(run.buffers["bn1.running_var"], fresh_bn.running_var)
    assert not torch.allclose(run.buffers["bn1.running_mean"], start["bn1.running_mean"])
    assert int(run.buffers["bn1.num_batches_tracked"]) == 4
    assert all(torch.equal(start[k], v) for k, v in problem.buffers.items())
    trained = at(problem, run)
    assert torch.equal(trained.buffers["bn2.running_var"], run.buffers["bn2.running_var"])


def test_problem_init_keeps_the_problems_start():
    problem = regression()
    run = train(problem, steps=1, batch_size=None, lr=1e-9, init="problem")
    assert run.history["train_loss"][0] == pytest.approx(evaluate(problem)["loss"], rel=1e-12)


def test_from_checkpoints_round_trip(tmp_path):
    problem = regression()
    run = train(problem, steps=3, batch_size=5)
    other = copy.deepcopy(problem.model)
    other.load_state_dict(run.params)
    torch.save(other.state_dict(), tmp_path / "a.pt")
    torch.save({"state_dict": other.state_dict(), "epoch": 3}, tmp_path / "b.pt")
    got = from_checkpoints(problem, [tmp_path / "a.pt", str(tmp_path / "b.pt"), other, run.params])
    assert [m.name for m in got] == ["a", "b", "Sequential 2", "model 3"]
    for m in got:
        assert isinstance(m, TrainedModel) and m.history == {}
        assert all(torch.equal(m.params[k], run.params[k]) for k in run.params)
    named = from_checkpoints(problem, [run.params], names=["mine"])
    assert named[0].name == "mine"
    loaded = storage.load(storage.save(run, tmp_path / "run.h5"))
    assert torch.equal(loaded.flat(), run.flat()) and loaded.settings == run.settings
    assert np.array_equal(loaded.history["loss"], run.history["loss"])


def test_from_checkpoints_rejects_bad_sources(tmp_path):
    problem = regression()
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    state = dict(problem.model.state_dict())
    cases = [
        ([tmp_path / "missing.pt"], "no weights file"),
        ([tmp_path / "junk.pt"], "cannot load"),
        ([{k: v for k, v in state.items() if k != "0.bias"}], "checkpoint 0 .*missing"),
        ([{**state, "extra": torch.zeros(1)}], "unknown"),
        ([{**state, "0.bias": torch.zeros(5)}], "checkpoint 0 .*wrong shape"),
        ([42], "state dict, an nn.Module or a file path"),
    ]
    for sources, words in cases:
        with pytest.raises(LossatlasError, match=words) as info:
            from_checkpoints(problem, sources)
        assert "\n" not in str(info.value)


def test_train_runs_grid():
    problem = regression()
    runs = train_runs(problem, seeds=[0, 1], batch_sizes=[4, None], steps=3, lr=0.1, quiet=True)
    assert [r.name for r in runs] == [
        "batch 4, seed 0", "batch 4, seed 1", "batch full, seed 0", "batch full, seed 1"
    ]  # fmt: skip
    assert [r.settings["batch_size"] for r in runs] == [4, 4, N, N]
    again = train(problem, seed=1, steps=3, batch_size=4, lr=0.1)
    assert torch.equal(runs[1].flat(), again.flat())
    one = train_runs(problem, seeds=[5], steps=2, batch_size=4, quiet=True)
    assert len(one) == 1 and one[0].settings["seed"] == 5


def test_bad_arguments_raise_one_line_errors():
    problem = regression()
    other = Problem(nn.Linear(3, 2).double(), nn.MSELoss(), problem._pair)
    bad = [
        ({"steps": -1}, "steps"),
        ({"steps": 0}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": N + 1}, "exceeds"),
        ({"optimizer": "adma"}, "did you mean 'adam'"),
        ({"lr": -0.1}, "lr"),
        ({"init": "zeros"}, "init"),
        ({"val": other}, "other parameters"),
        ({"seed": -1}, "seed"),
        ({"eval_every": 0}, "eval_every"),
    ]
    for kwargs, words in bad:
        with pytest.raises(LossatlasError, match=words) as info:
            train(problem, **{"steps": 2, "batch_size": 4, **kwargs})
        assert "\n" not in str(info.value)
    for kwargs, words in [
        ({"batch_sizes": [0]}, "batch_size"),
        ({"batch_sizes": [4], "batch_size": 4}, "not both"),
        ({"lrs": []}, "empty"),
        ({"optimizers": ["nope"]}, "unknown optimizer"),
        ({"stepz": 3}, "unknown options"),
    ]:
        with pytest.raises(LossatlasError, match=words):
            train_runs(problem, quiet=True, **{"steps": 1, **kwargs})


def test_classification_metrics_and_fresh_init_of_other_layers():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=gen), torch.randint(0, 3, (40,), generator=gen)
    model = nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 3))
    problem = Problem(model, nn.CrossEntropyLoss(), (x, y), metrics={"accuracy": accuracy})
    run = train(problem, steps=5, batch_size=8, val=problem)
    assert "train_accuracy" in run.history and "val_accuracy" in run.history
    assert torch.equal(train(problem, steps=5, batch_size=8).flat(), run.flat())

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s = nn.Parameter(torch.ones(()))

        def forward(self, x):
            return self.s * x

    odd = Problem(nn.Sequential(nn.Linear(5, 3), Scale()), nn.CrossEntropyLoss(), (x, y))
    with pytest.raises(LossatlasError, match="init='problem'"):
        train(odd, steps=1, batch_size=8)
    assert train(odd, steps=1, batch_size=8, init="problem").params["1.s"].shape == ()
