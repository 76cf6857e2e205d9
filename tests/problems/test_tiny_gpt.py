"""The `tiny-gpt` problem: its text, vocabulary, causal transformer, training and cache."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jacrev

import lossatlas as la
from lossatlas.problems import gpt
from lossatlas.problems.registry import PROBLEMS, get_problem


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, la.Problem]:
    """Trained once with seed 0 in a fresh cache; both splits."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOSSATLAS_CACHE", str(cache))
        state = torch.random.get_rng_state()
        made = {split: get_problem("tiny-gpt", seed=0, split=split) for split in ("train", "test")}
        assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
        mp.setattr(gpt, "_train_gpt", _fail)
        again = get_problem("tiny-gpt", seed=0)  # from the cache
    for name, p in made["train"].params.items():
        assert torch.equal(p, again.params[name])
    return made


def _fail(*args, **kwargs):
    raise AssertionError("trained again instead of loading the cached weights")


def _reference_loss(problem: la.Problem) -> tuple[float, float]:
    """Cross-entropy per character and accuracy of a float64 deep copy on all windows at once."""
    model = copy.deepcopy(problem.model).double().eval()
    ids, targets = next(problem.batches())
    with torch.no_grad():
        logits = model(ids)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return float(loss), float((logits.argmax(-1) == targets).double().mean())


def test_text_and_vocabulary() -> None:
    train, test = gpt.gpt_text()
    n = len(gpt.GPT_MODULES)
    assert len(train) == n * (gpt.GPT_CHARS_PER_MODULE - gpt.GPT_HELD_OUT)
    assert len(test) == n * gpt.GPT_HELD_OUT
    assert "def " in train  # Python source
    ids = gpt.encode("a\n~\tb")
    assert ids.tolist() == [
        1 + gpt.VOCAB.index("a"),
        1,
        1 + gpt.VOCAB.index("~"),
        0,
        1 + gpt.VOCAB.index("b"),
    ]
    assert len(gpt.VOCAB) == 96 and gpt.TinyGPT().tok.num_embeddings == 97
    x, y = gpt.windows(torch.arange(1000), 5, length=8)
    assert x.shape == y.shape == (5, 8)
    assert torch.equal(y, x + 1)  # the targets are the next characters
    assert x[0, 0] == 0 and y[-1, -1] == 999  # evenly spaced over all of the ids


def test_the_loss_is_the_cross_entropy_per_character(trained) -> None:
    for split, n_windows in (("train", gpt.GPT_SEQUENCES), ("test", gpt.GPT_SEQUENCES)):
        problem = trained[split]
        assert problem.n_samples == n_windows
        loss, accuracy = _reference_loss(problem)
        values = la.surface(problem, la.random_directions(problem, n=1), steps=3, quiet=True)
        assert values.loss[1] == pytest.approx(loss, rel=1e-5)
        assert values.metrics["accuracy"][1] == pytest.approx(accuracy, abs=1e-6)


def test_training_learns_the_context(trained) -> None:
    """Far below the uniform guess and below the unigram entropy on held-out text."""
    unigram = gpt.unigram_entropy(gpt.encode(gpt.gpt_text()[0]))
    held_out, accuracy = _reference_loss(trained["test"])
    assert held_out < unigram - 0.5 < math.log(97) - 1.5, (held_out, unigram)
    assert accuracy > 0.35


def test_causal_and_tied() -> None:
    model = gpt.TinyGPT().eval()
    gpt._init(model, torch.Generator().manual_seed(3))
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(4))
    changed = ids.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 97
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])  # the past never sees the future
    assert not torch.allclose(a[:, 10:], b[:, 10:])
    assert model.head.weight is model.tok.weight
    problem = la.Problem(model, gpt.NextTokenLoss(), (ids, ids))
    assert "head.weight" not in problem.params  # tied weights are one parameter
    assert problem.n_params == 64_368
    with pytest.raises(la.LossatlasError, match="exceed the context"):
        model(torch.zeros(1, gpt.GPT_CONTEXT + 1, dtype=torch.long))


def test_lambda_max_of_the_final_norm_against_the_dense_hessian(trained) -> None:
    """λmax of the Hessian block of `ln_f` (96 weights) against a float64 dense block."""
    ids, targets = next(trained["train"].batches())
    problem = la.Problem(
        trained["train"].model, gpt.NextTokenLoss(), (ids, targets), dtype="float64"
    )
    eig = la.hessian_eigen(problem, k=1, params=["ln_f"], tol=1e-10)
    model = copy.deepcopy(problem.model).double().eval()
    names = ["ln_f.weight", "ln_f.bias"]
    rest = {k: v.detach() for k, v in model.named_parameters() if k not in names}  # tied: once

    def loss(flat: torch.Tensor) -> torch.Tensor:
        state = {**rest, names[0]: flat[:48], names[1]: flat[48:]}
        return gpt.NextTokenLoss()(functional_call(model, state, (ids,)), targets)

    flat = torch.cat([model.state_dict()[n] for n in names]).detach()
    dense = jacrev(grad(loss))(flat)
    assert eig.eigenvalues[0] == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-4)


def test_registered_seeds_and_split() -> None:
    assert PROBLEMS["tiny-gpt"] is gpt.tiny_gpt
    with pytest.raises(la.LossatlasError, match="split"):
        gpt.tiny_gpt(split="valid")
    with pytest.raises(la.LossatlasError):
        gpt.tiny_gpt(seed=-1)


def test_an_input_plane_of_token_ids_is_refused_in_one_line(trained) -> None:
    from lossatlas.landscape.inputs import input_surface

    with pytest.raises(la.LossatlasError, match="floating-point inputs") as caught:
        input_surface(trained["train"], steps=3, quiet=True)
    assert "\n" not in str(caught.value) and "int64" in str(caught.value)
