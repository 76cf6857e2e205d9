"""Model structures users bring: tied weights, several inputs, keyword inputs, structured outputs.

`tests/core/test_batches.py` checks the batch plumbing on small float64 models; here every
capability that matters for each structure (surface with slopes, Hessian, descent, training) is
checked against a float64 reference that calls a deep copy once on all the data
(`tests.models.reference`), or, for tied weights, against the model written out by hand.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import lossatlas as la
from tests.models import reference as R

CLASSES = 3
F64 = torch.float64


# -- a language model whose output layer is its embedding --------------------------------------
VOCAB, WIDTH, LENGTH = 9, 4, 5


class TiedLM(nn.Module):
    """Embed, mix, project back onto the vocabulary with the embedding matrix itself.

    Returns `(N, VOCAB, LENGTH)` logits, the layout `nn.CrossEntropyLoss` takes for sequences.
    """

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.mix = nn.Linear(WIDTH, WIDTH)
        self.out = nn.Linear(WIDTH, VOCAB)
        self.out.weight = self.embed.weight  # tied: one parameter, two uses

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.mix(self.embed(tokens)))).transpose(1, 2)


def tied_by_hand(tokens: torch.Tensor, targets: torch.Tensor) -> Callable:
    """The tied LM's loss written out as a function of its four distinct parameters, flat in
    the order `embed.weight, mix.weight, mix.bias, out.bias`: no module, no weight tying."""
    sizes = [VOCAB * WIDTH, WIDTH * WIDTH, WIDTH, VOCAB]

    def loss(theta: torch.Tensor) -> torch.Tensor:
        E, Wm, bm, bo = torch.split(theta, sizes)
        E, Wm = E.reshape(VOCAB, WIDTH), Wm.reshape(WIDTH, WIDTH)
        h = torch.tanh(E[tokens] @ Wm.T + bm)
        logits = h @ E.T + bo  # the embedding again, as the output layer
        return F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))

    return loss


def tied_case() -> tuple[nn.Module, list[tuple], torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = TiedLM().eval()
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, VOCAB, (17, LENGTH), generator=gen)
    targets = torch.randint(0, VOCAB, (17, LENGTH), generator=gen)
    batches = [(tokens[i:j], targets[i:j]) for i, j in [(0, 6), (6, 7), (7, 17)]]
    return model, batches, tokens, targets


def test_a_tied_weight_is_one_parameter_everywhere() -> None:
    model, batches, tokens, targets = tied_case()
    assert model.out.weight is model.embed.weight
    problem = la.Problem(model, nn.CrossEntropyLoss(), batches, dtype=F64)
    assert list(problem.params) == ["embed.weight", "mix.weight", "mix.bias", "out.bias"]
    dim = VOCAB * WIDTH + WIDTH * WIDTH + WIDTH + VOCAB
    assert problem.n_params == dim  # not VOCAB * WIDTH more
    loss = tied_by_hand(tokens, targets)
    theta0 = R.flat(problem.params, list(problem.params))

    # the whole Hessian, as the written-out function's (both uses of E in every entry)
    op = la.HessianOperator(problem)
    assert op.dim == dim
    expected = R.dense_hessian(loss, theta0)
    torch.testing.assert_close(op.dense(), expected, rtol=1e-9, atol=1e-12)
    top = la.hessian_eigen(problem, k=1, tol=1e-10)
    assert top.eigenvalues[0] == pytest.approx(float(torch.linalg.eigvalsh(expected)[-1]), rel=1e-9)

    # the landscape: moving embed.weight moves the output layer too
    dirs = la.random_directions(problem, n=2, seed=1)
    assert all(set(d) == set(problem.params) for d in dirs)
    land = la.surface(problem, dirs, steps=3, slopes=True, quiet=True)
    flat_dirs = [R.flat(d, list(problem.params)) for d in dirs]
    for i, c1 in enumerate(land.coords[0]):
        for j, c2 in enumerate(land.coords[1]):
            theta = theta0 + c1 * flat_dirs[0] + c2 * flat_dirs[1]
            assert land.loss[i, j] == pytest.approx(float(loss(theta)), rel=1e-12)
            np.testing.assert_allclose(
                land.slopes[i, j], R.slopes(loss, theta, flat_dirs), rtol=1e-9, atol=1e-13
            )

    # descent: the shared weight takes one step with the sum of both uses' gradients
    run = la.descend(problem, optimizer="sgd", lr=0.3, steps=2)
    theta = theta0.clone()
    for _ in range(2):
        x = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(x), x)
        theta = theta - 0.3 * g
    np.testing.assert_allclose(run.final_position, theta.numpy(), rtol=1e-10, atol=1e-13)
    assert run.final_loss == pytest.approx(float(loss(theta)), rel=1e-12)


def test_training_keeps_the_weights_tied() -> None:
    model, batches, tokens, targets = tied_case()
    problem = la.Problem(model, nn.CrossEntropyLoss(), batches, dtype=F64)
    trained = la.train(problem, steps=3, batch_size=None, lr=0.3, init="problem", seed=0)
    assert set(trained.params) == set(problem.params)
    by_hand = R.moved(model)  # plain SGD on a float64 copy: the tie is kept by torch itself
    opt = torch.optim.SGD(by_hand.parameters(), lr=0.3)
    for _ in range(3):
        opt.zero_grad()
        nn.CrossEntropyLoss()(by_hand(tokens), targets).backward()
        opt.step()
    assert by_hand.out.weight is by_hand.embed.weight
    for name, p in by_hand.named_parameters():
        torch.testing.assert_close(trained.params[name], p.detach(), rtol=1e-10, atol=1e-13)


# -- several inputs, positional or by keyword ------------------------------------------------------
class FeaturesAndTokens(nn.Module):
    """`model(x, tokens)`: float features and integer tokens (which must stay integers)."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(3, 6)
        self.embed = nn.Embedding(10, 6)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.dense(x) + self.embed(tokens).mean(1)))


def inputs_case(style: str) -> tuple[nn.Module, list[tuple], tuple, torch.Tensor]:
    """The model, batches `((x, tokens), y)` or `({"x", "tokens"}, y)` and all inputs."""
    torch.manual_seed(0)
    model = FeaturesAndTokens().eval()
    gen = torch.Generator().manual_seed(4)
    x, tokens = torch.randn(19, 3, generator=gen), torch.randint(0, 10, (19, 4), generator=gen)
    y = torch.randint(0, CLASSES, (19,), generator=gen)

    def part(i: int, j: int):
        if style == "mapping":
            return {"x": x[i:j], "tokens": tokens[i:j]}
        return (x[i:j], tokens[i:j])

    batches = [(part(i, j), y[i:j]) for i, j in [(0, 8), (8, 11), (11, 19)]]
    return model, batches, (x, tokens), y


@pytest.mark.parametrize("style", ["tuple", "mapping"])
def test_several_inputs_surface_hessian_descent_and_training(style: str) -> None:
    model, batches, (x, tokens), y = inputs_case(style)
    problem = la.Problem(model, nn.CrossEntropyLoss(), batches, dtype=F64)
    loss, theta0, names = R.flat_loss(model, lambda out: F.cross_entropy(out, y), (x, tokens))

    dirs = la.random_directions(problem, n=2, seed=2)
    land = la.surface(problem, dirs, steps=(3, 2), slopes=True, quiet=True)
    flat_dirs = [R.flat(d, names) for d in dirs]
    for i, c1 in enumerate(land.coords[0]):
        for j, c2 in enumerate(land.coords[1]):
            theta = theta0 + c1 * flat_dirs[0] + c2 * flat_dirs[1]
            assert land.loss[i, j] == pytest.approx(float(loss(theta)), rel=1e-12)
            np.testing.assert_allclose(
                land.slopes[i, j], R.slopes(loss, theta, flat_dirs), rtol=1e-9, atol=1e-13
            )

    dense = R.dense_hessian(loss, theta0)
    top = la.hessian_eigen(problem, k=2, tol=1e-10)
    np.testing.assert_allclose(top.eigenvalues, torch.linalg.eigvalsh(dense).flip(0)[:2], rtol=1e-9)

    run = la.descend(problem, optimizer="sgd", lr=0.5, steps=2)
    trained = la.train(problem, steps=2, batch_size=None, lr=0.5, init="problem")
    theta = theta0.clone()
    for _ in range(2):
        leaf = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(leaf), leaf)
        theta = theta - 0.5 * g
    np.testing.assert_allclose(run.final_position, theta.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(R.flat(trained.params, names), theta, rtol=1e-10, atol=1e-13)


# -- structured outputs --------------------------------------------------------------------------
class Outputs(nn.Module):
    """One network whose forward returns its logits as a tensor, in a tuple (first), in a dict
    or in a Hugging Face `ModelOutput`, next to a hidden state."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.hidden = nn.Linear(4, 6)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x: torch.Tensor):
        h = torch.tanh(self.hidden(x))
        logits = self.head(h)
        if self.style == "tuple":
            return logits, h
        if self.style == "dict":
            return {"hidden": h, "logits": logits}  # logits not first: read by name
        if self.style == "model_output":
            from transformers.modeling_outputs import SequenceClassifierOutput

            return SequenceClassifierOutput(logits=logits, hidden_states=(h,))
        return logits


def logits_in(style: str, out) -> torch.Tensor:
    """Where each style keeps its logits, read by hand."""
    return {"tuple": lambda: out[0], "dict": lambda: out["logits"]}.get(
        style, lambda: out if style == "tensor" else out.logits
    )()


@pytest.mark.parametrize("style", ["tensor", "tuple", "dict", "model_output"])
def test_structured_outputs_give_the_loss_and_accuracy_of_their_logits(style: str) -> None:
    if style == "model_output":
        pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = Outputs(style).eval()
    gen = torch.Generator().manual_seed(5)
    X, y = torch.randn(21, 4, generator=gen), torch.randint(0, CLASSES, (21,), generator=gen)
    batches = [(X[i:j], y[i:j]) for i, j in [(0, 5), (5, 16), (16, 21)]]
    problem = la.Problem(
        model, nn.CrossEntropyLoss(), batches, metrics={"accuracy": la.accuracy}, dtype=F64
    )
    dirs = la.random_directions(problem, n=2, seed=3)
    land = la.surface(problem, dirs, steps=3, span=(-2.0, 2.0), quiet=True)
    accuracies = set()
    for i, c1 in enumerate(land.coords[0]):
        for j, c2 in enumerate(land.coords[1]):
            moved = R.moved(model, R.offsets(problem.params, dirs, (c1, c2)))
            with torch.no_grad():
                logits = logits_in(style, moved(X.double()))
            assert land.loss[i, j] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-12)
            accuracy = float((logits.argmax(1) == y).double().mean())
            assert land.metrics["accuracy"][i, j] == pytest.approx(accuracy, abs=1e-12)
            accuracies.add(accuracy)
    assert len(accuracies) > 1  # the accuracy does change over the grid: the check bites

    loss, theta0, _ = R.flat_loss(
        model, lambda out: F.cross_entropy(logits_in(style, out), y), (X,)
    )
    top = la.hessian_eigen(problem, k=1, tol=1e-10)
    expected = torch.linalg.eigvalsh(R.dense_hessian(loss, theta0))[-1]
    assert top.eigenvalues[0] == pytest.approx(float(expected), rel=1e-9)


def test_the_users_structured_model_is_untouched() -> None:
    model, batches, _, _ = tied_case()
    model.train()
    before = copy.deepcopy(model.state_dict())
    problem = la.Problem(model, nn.CrossEntropyLoss(), batches)
    la.surface(problem, la.random_directions(problem, n=1), steps=3, quiet=True)
    la.hessian_eigen(problem, k=1, tol=1e-3)
    la.descend(problem, steps=1)
    la.train(problem, steps=1, batch_size=4, init="problem")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and model.out.weight is model.embed.weight
    assert all(p.grad is None for p in model.parameters())
