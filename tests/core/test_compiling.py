"""`compile=`: compiled surfaces against brute force and the eager engine, and when "auto" compiles.

Compiling takes seconds per model on this CPU, so each case compiles one small grid.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import lossatlas as la
from lossatlas.core import compiling
from lossatlas.core.compiling import Compilation
from lossatlas.errors import LossatlasError, LossatlasWarning
from tests.models import hf
from tests.models.reference import offsets
from tests.oracles.cases import build_case
from tests.oracles.landscape import evaluate, moved_copy

CE = nn.CrossEntropyLoss()


@pytest.mark.parametrize(("name", "path"), [("wide_mlp", "vmap"), ("mlp", "sequential")])
def test_compiled_surface_matches_brute_force_and_eager(name, path) -> None:
    case = build_case(name)
    problem = la.Problem(case.model, CE, (case.X, case.y), metrics={"accuracy": la.accuracy})
    dirs = la.random_directions(problem, 2, seed=3)
    grid = dict(steps=(4, 3), span=(-1.0, 1.0), path=path, quiet=True)
    compiled = la.surface(problem, dirs, compile=True, **grid)
    eager = la.surface(problem, dirs, compile=False, **grid)
    assert compiled.provenance["compiled_points"] == 12
    assert eager.provenance["compiled_points"] == 0
    np.testing.assert_allclose(compiled.loss, eager.loss, rtol=1e-5)
    np.testing.assert_array_equal(compiled.metrics["accuracy"], eager.metrics["accuracy"])
    for i, a in enumerate(compiled.coords[0]):
        for j, b in enumerate(compiled.coords[1]):
            moved = moved_copy(case.model, [(a, dirs[0]), (b, dirs[1])])
            loss, _ = evaluate(moved, CE, [(case.X, case.y)])
            assert compiled.loss[i, j] == pytest.approx(loss, rel=1e-5)


def test_compiled_hugging_face_model_has_no_graph_breaks_and_matches_its_own_loss() -> None:
    # GPT-2's forward logs through `logger.warning_once`; traced as a graph break, it would
    # leave the whole forward eager and the compiled run no faster.
    model, data = hf.build("gpt2", dropout=0.0), hf.batches("gpt2")
    problem = la.Problem(model, None, data, weight=la.token_count())
    dirs = la.random_directions(problem, 2, seed=1)
    counters.clear()
    land = la.surface(problem, dirs, steps=2, compile=True, path="sequential", quiet=True)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert land.provenance["compiled_points"] == 4
    for i, a in enumerate(land.coords[0]):
        for j, b in enumerate(land.coords[1]):
            expected = hf.hf_loss(model, data, offsets(problem.params, dirs, (a, b)))
            assert land.loss[i, j] == pytest.approx(expected, rel=2e-5)


def test_auto_compiles_only_a_run_long_enough_to_repay_it(monkeypatch) -> None:
    case = build_case("mlp")
    problem = la.Problem(case.model, CE, (case.X, case.y))
    dirs = la.random_directions(problem, 2, seed=0)
    grid = dict(steps=6, path="sequential", chunk_size=4, quiet=True)
    short = la.surface(problem, dirs, **grid)
    assert short.provenance["compiled_points"] == 0  # milliseconds of work: never pays
    monkeypatch.setattr(compiling, "PAYS_AFTER_SECONDS", 0.0)
    long = la.surface(problem, dirs, **grid)
    # two chunks run eager (the second is timed); the next two compiled; then only if faster
    assert 8 <= long.provenance["compiled_points"] <= 28
    np.testing.assert_allclose(long.loss, short.loss, rtol=1e-5)


def test_a_resumed_run_counts_only_the_points_left() -> None:
    run = Compilation("auto", 10_000)
    run.expect(8)
    for _ in range(2):
        run.start_chunk()
        run.end_chunk(4)
    assert not run.active  # nothing is left to repay a compile


def test_a_failed_compile_is_an_error_when_asked_for_and_a_warning_under_auto() -> None:
    with pytest.raises(LossatlasError, match=r"torch\.compile failed on this model: RuntimeError"):
        Compilation(True, 10).failed(RuntimeError("no C++ compiler"))
    auto = Compilation("auto", 10)
    auto.active = True
    with pytest.warns(LossatlasWarning, match="evaluating without it"):
        auto.failed(RuntimeError("no C++ compiler"))
    assert not auto.active


@pytest.mark.parametrize("choice", ["yes", 1, None, "True"])
def test_compile_takes_auto_true_or_false(choice) -> None:
    case = build_case("mlp")
    problem = la.Problem(case.model, CE, (case.X, case.y))
    dirs = la.random_directions(problem, 1, seed=0)
    with pytest.raises(LossatlasError, match=r"compile=.* is not one of 'auto', True, False"):
        la.surface(problem, dirs, steps=3, compile=choice, quiet=True)


def test_a_compiled_float64_problem_agrees_with_eager_to_float64_rounding() -> None:
    case = build_case("mlp")
    problem = la.Problem(case.model, CE, (case.X, case.y), dtype=torch.float64)
    dirs = la.random_directions(problem, 1, seed=0)
    compiled = la.surface(problem, dirs, steps=5, compile=True, quiet=True)
    eager = la.surface(problem, dirs, steps=5, compile=False, quiet=True)
    np.testing.assert_allclose(compiled.loss, eager.loss, rtol=1e-12)
