"""Batches of any structure (several inputs, mappings, Hugging Face style dict batches), models
that return structured outputs or their own loss, and token-weighted losses.

Every value is checked against one call of a deep copy on all the data at once, with the loss
the model or `torch.nn` computes there (float64), never against lossatlas' own batching.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import lossatlas as la
from tests.oracles.hessian import dense_hessian_call

IGNORE = -100


class TwoInputs(nn.Module):
    """`model(a, b)` (or `model(a=..., b=...)`) -> `(logits, features)`."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 5), nn.Linear(2, 5)
        self.head = nn.Linear(5, 4)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.a(a) + self.b(b))
        return self.head(h), h


class TinyLM(nn.Module):
    """A causal character model in the Hugging Face calling convention: `model(input_ids,
    attention_mask=None, labels=None)` -> `{"logits", "loss"}`, the loss the mean over the
    shifted labels that are not -100."""

    def __init__(self, vocab: int = 7, width: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(2 * width, width)
        self.out = nn.Linear(width, vocab)

    def forward(self, input_ids, attention_mask=None, labels=None) -> dict[str, torch.Tensor]:
        e = self.embed(input_ids)
        previous = torch.cat([torch.zeros_like(e[:, :1]), e[:, :-1]], 1)  # causal: looks back
        logits = self.out(torch.tanh(self.mix(torch.cat([e, previous], -1))))
        result = {"logits": logits}
        if labels is not None:
            result["loss"] = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                labels[:, 1:].reshape(-1),
                ignore_index=IGNORE,
            )
        return result


def seeded(module: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return module().double()


def two_input_data(n: int = 23) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return a, b, torch.randint(0, 4, (n,), generator=gen)


def padded_text(sizes=(5, 3, 4, 2), width: int = 6, seed: int = 2) -> list[dict]:
    """Dict batches of sequences of different lengths, padded with 0 and labels -100."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for rows in sizes:
        lengths = torch.randint(2, width + 1, (rows,), generator=gen)
        ids = torch.randint(1, 7, (rows, width), generator=gen)
        mask = (torch.arange(width)[None] < lengths[:, None]).long()
        ids = ids * mask
        labels = torch.where(mask.bool(), ids, torch.full_like(ids, IGNORE))
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def joined(batches: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def at(model: nn.Module, point: dict[str, torch.Tensor]) -> nn.Module:
    """A deep copy of `model` with `point` written into its parameters."""
    moved = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p.copy_(point[name])
    return moved


def grid_points(problem, dirs, coords):
    return [
        {n: problem.params[n] + c1 * dirs[0][n] + c2 * dirs[1][n] for n in problem.params}
        for c1 in coords[0]
        for c2 in coords[1]
    ]


# -- several inputs ----------------------------------------------------------------------------
@pytest.mark.parametrize("as_mapping", [False, True], ids=["tuple", "mapping"])
def test_several_inputs_give_the_loss_over_all_data_at_once(as_mapping: bool) -> None:
    model = seeded(TwoInputs)
    a, b, y = two_input_data()
    cuts = [(0, 7), (7, 8), (8, 23)]  # unequal batches
    batches = [
        (({"a": a[i:j], "b": b[i:j]} if as_mapping else (a[i:j], b[i:j])), y[i:j]) for i, j in cuts
    ]
    problem = la.Problem(model, nn.CrossEntropyLoss(), batches, metrics={"acc": la.accuracy})
    dirs = la.random_directions(problem, 2, seed=3)
    land = la.surface(problem, dirs, steps=3, span=(-1, 1), quiet=True)
    for point, loss, acc in zip(
        grid_points(problem, dirs, land.coords),
        land.loss.reshape(-1),
        land.metrics["acc"].reshape(-1),
    ):
        with torch.no_grad():
            logits, _ = at(model, point)(a, b)
        assert loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-12)
        assert acc == pytest.approx(float((logits.argmax(1) == y).double().mean()), rel=1e-12)


def test_several_inputs_hessian_matches_the_dense_one() -> None:
    model = seeded(TwoInputs)
    a, b, y = two_input_data()
    problem = la.Problem(model, nn.CrossEntropyLoss(), ((a, b), y), batch_size=5)
    dense = dense_hessian_call(model, lambda out: F.cross_entropy(out[0], y), (a, b))
    top = float(torch.linalg.eigvalsh(dense)[-1])
    eig = la.hessian_eigen(problem, k=1, tol=1e-10)
    assert eig.eigenvalues[0] == pytest.approx(top, rel=1e-8)


def test_a_single_structured_batch_is_split_without_changing_the_function() -> None:
    model = seeded(TwoInputs)
    a, b, y = two_input_data()
    whole = la.Problem(model, nn.CrossEntropyLoss(), ({"a": a, "b": b}, y))
    split = la.Problem(model, nn.CrossEntropyLoss(), ({"a": a, "b": b}, y), batch_size=4)
    assert len(list(split.batches())) == 6 and whole.n_samples == split.n_samples == 23
    dirs = la.random_directions(whole, 1, seed=0)
    one = la.surface(whole, dirs, steps=5, quiet=True).loss
    np.testing.assert_allclose(la.surface(split, dirs, steps=5, quiet=True).loss, one, rtol=1e-12)


# -- a model's own loss, dict batches, tokens --------------------------------------------------
def whole_text_loss(model: nn.Module, data: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        return float(model.eval()(**data)["loss"])


def test_token_weighting_equals_the_models_loss_over_all_tokens_at_once() -> None:
    model, batches = seeded(TinyLM), padded_text()
    weighted = la.Problem(model, None, batches, weight=la.token_count())
    dirs = la.random_directions(weighted, 2, seed=5)
    land = la.surface(weighted, dirs, steps=3, span=(-0.5, 0.5), quiet=True)
    everything = joined(batches)
    for point, loss in zip(grid_points(weighted, dirs, land.coords), land.loss.reshape(-1)):
        assert loss == pytest.approx(whole_text_loss(at(model, point), everything), rel=1e-12)
    # Weighted by sequences instead, the same batches give another number: the test can fail.
    by_sequence = la.Problem(model, None, batches)
    centre = la.surface(by_sequence, dirs, steps=3, span=(-0.5, 0.5), quiet=True).loss[1, 1]
    assert abs(centre - land.loss[1, 1]) > 1e-4 * land.loss[1, 1]


def test_token_weighted_hessian_and_descent_match_the_whole_data_loss() -> None:
    model, batches = seeded(TinyLM), padded_text()
    problem = la.Problem(model, None, batches, weight=la.token_count())
    everything = joined(batches)
    dense = dense_hessian_call(model, lambda out: out["loss"], kwargs=everything)
    values = torch.linalg.eigvalsh(dense)
    eig = la.hessian_eigen(problem, k=1, tol=1e-10)
    assert eig.eigenvalues[0] == pytest.approx(float(values[-1]), rel=1e-7)
    run = la.descend(problem, optimizer="sgd", lr=0.1, steps=2)
    manual = copy.deepcopy(model)
    opt = torch.optim.SGD(manual.parameters(), lr=0.1)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = manual(**everything)["loss"]
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
    np.testing.assert_allclose(run.loss, losses, rtol=1e-10)


def test_a_dataloader_with_a_dict_collate_is_the_same_as_the_list() -> None:
    model, batches = seeded(TinyLM), padded_text()
    rows = [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(b["labels"]))]

    def collate(items: list[dict]) -> dict[str, torch.Tensor]:
        return {k: torch.stack([item[k] for item in items]) for k in items[0]}

    loader = torch.utils.data.DataLoader(rows, batch_size=5, collate_fn=collate)
    from_loader = la.Problem(model, None, loader, weight=la.token_count())
    from_list = la.Problem(model, None, batches, weight=la.token_count())
    assert from_loader.n_units == from_list.n_units
    dirs = la.random_directions(from_list, 1, seed=0)
    np.testing.assert_allclose(
        la.surface(from_loader, dirs, steps=3, quiet=True).loss,
        la.surface(from_list, dirs, steps=3, quiet=True).loss,
        rtol=1e-12,
    )


def test_nn_losses_and_metrics_read_the_logits_of_structured_outputs() -> None:
    model, batches = seeded(TinyLM), padded_text()

    def flat_ce(outputs, labels):  # a custom callable gets the outputs as they are
        logits = outputs["logits"][:, :-1]
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE
        )

    custom = la.Problem(model, flat_ce, batches, weight=la.token_count())
    own = la.Problem(model, None, batches, weight=la.token_count())
    dirs = la.random_directions(own, 1, seed=1)
    np.testing.assert_allclose(
        la.surface(custom, dirs, steps=3, quiet=True).loss,
        la.surface(own, dirs, steps=3, quiet=True).loss,
        rtol=1e-12,
    )
    a, b, y = two_input_data()
    tuple_out = la.Problem(seeded(TwoInputs), nn.CrossEntropyLoss(), ((a, b), y))
    assert (
        la.surface(tuple_out, la.random_directions(tuple_out, 1), steps=3, quiet=True).nonfinite
        == 0
    )


# -- what cannot apply says so in one line --------------------------------------------------------
def test_a_model_without_its_own_loss_is_one_line() -> None:
    a, b, y = two_input_data()
    problem = la.Problem(seeded(TwoInputs), None, ((a, b), y))
    with pytest.raises(la.LossatlasError, match=r"no \.loss") as info:
        la.surface(problem, la.random_directions(problem, 1), steps=3, quiet=True)
    assert "\n" not in str(info.value)


def test_input_space_needs_one_floating_input() -> None:
    problem = la.Problem(seeded(TinyLM), None, padded_text(), weight=la.token_count())
    with pytest.raises(la.LossatlasError, match="one input tensor against its targets"):
        la.input_surface(problem, plane="random", anchors=0)


@pytest.mark.parametrize(
    ("weight", "match"),
    [(lambda x, y: -1, "must count units"), (lambda x, y: 1 / 0, "weight fails")],
)
def test_bad_weights_are_one_line(weight, match) -> None:
    with pytest.raises(la.LossatlasError, match=match):
        la.Problem(seeded(TinyLM), None, padded_text(), weight=weight)


def test_token_count_needs_labels() -> None:
    batches = [{k: v for k, v in b.items() if k != "labels"} for b in padded_text()]
    with pytest.raises(la.LossatlasError, match="needs the batch's labels"):
        la.Problem(seeded(TinyLM), None, batches, weight=la.token_count())


def test_vmap_fallbacks_for_attention_do_not_flood_stderr() -> None:
    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.out = nn.Linear(4, 12), nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = (t.unsqueeze(1) for t in self.qkv(x).chunk(3, dim=-1))
            return self.out(F.scaled_dot_product_attention(q, k, v).squeeze(1).mean(1))

    torch.manual_seed(0)
    data = (torch.randn(16, 5, 4), torch.randint(0, 3, (16,)))
    problem = la.Problem(Attention(), nn.CrossEntropyLoss(), data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        land = la.surface(problem, la.random_directions(problem, 2), steps=5, quiet=True)
    assert land.settings["plan"]["path"] == "vmap"
    assert not [w for w in caught if "batching rule" in str(w.message)]


def test_training_and_paths_between_models_use_the_token_weighted_loss() -> None:
    model, batches = seeded(TinyLM), padded_text()
    problem = la.Problem(model, None, batches, weight=la.token_count())
    everything = joined(batches)
    trained = la.train(problem, steps=4, batch_size=None, lr=0.5, init="problem", seed=0)
    # Full-batch SGD on the joined data, by hand: the same weights.
    manual = copy.deepcopy(model)
    opt = torch.optim.SGD(manual.parameters(), lr=0.5)
    for _ in range(4):
        opt.zero_grad()
        manual(**everything)["loss"].backward()
        opt.step()
    for name, p in manual.named_parameters():
        torch.testing.assert_close(trained.params[name], p.detach(), rtol=1e-10, atol=1e-12)
    assert trained.history["train_loss"][-1] == pytest.approx(
        whole_text_loss(manual, everything), rel=1e-12
    )
    line = la.interpolate(problem, model, manual, steps=3, metric=None)
    middle = at(
        model, {n: (p + q) / 2 for (n, p), q in zip(model.named_parameters(), manual.parameters())}
    )
    expected = [whole_text_loss(m, everything) for m in (model, middle, manual)]
    np.testing.assert_allclose(line.loss, expected, rtol=1e-12)


def test_curvature_on_a_subset_keeps_the_token_weighting() -> None:
    model, batches = seeded(TinyLM), padded_text()
    problem = la.Problem(model, None, batches, weight=la.token_count())
    # every sample as a "subset", re-batched by threes: still the loss over all tokens
    result = la.average_sharpness(problem, data=14, batch_size=3, n_samples=2, quiet=True)
    assert result.loss == pytest.approx(whole_text_loss(model, joined(batches)), rel=1e-12)
