"""Every lossatlas capability on tiny Hugging Face models (GPT-2, BERT, Llama) with `sdpa`.

The models come from configs with random weights (`tests.models.hf`), keep their default
attention and their dropout, and are fed padded dict batches of different sizes and widths.
Each value is checked against an independent reference: a float64 deep copy of the model with
the weights written in, called once on all the data joined, returning Hugging Face's own
`outputs.loss`; derivatives come from autograd of that call with eager attention.

Precision: Hugging Face's causal-LM loss upcasts the logits with `.float()`, which for a float64
model is a downcast, so its loss (on any path, lossatlas' or the reference's) is rounded to
float32: causal-LM values agree to about 1e-7 relative. The classifier's loss stays float64.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

import lossatlas as la
from lossatlas.training.trainer import stream_seeds
from tests.models import hf
from tests.models.reference import offsets

KINDS = list(hf.KINDS)
F64 = torch.float64


def rtol(kind: str) -> float:
    """Relative tolerance of a float64 comparison (see the module docstring)."""
    return 2e-6 if kind in hf.CAUSAL else 1e-10


def make_problem(model: nn.Module, data: Sequence[dict], kind: str, **options) -> la.Problem:
    """The Problem a user would write: the model's own loss, averaged over the predicted tokens
    of a causal LM (`token_count`) or over the sequences of the classifier (the default)."""
    weight = la.token_count() if kind in hf.CAUSAL else None
    return la.Problem(model, None, data, weight=weight, **options)


@dataclass
class Reference:
    """A model, its data and the dense float64 Hessian of HF's loss on all of it."""

    kind: str
    model: nn.Module
    data: list[dict]
    names: list[str]
    sizes: list[int]
    hessian: torch.Tensor
    eigenvalues: torch.Tensor  # ascending

    def indices(self, params: Sequence[str]) -> torch.Tensor:
        """Flat indices of the parameters named by `params` (names or module prefixes)."""
        starts = np.cumsum([0, *self.sizes])
        picked = [
            torch.arange(starts[i], starts[i + 1])
            for i, n in enumerate(self.names)
            if any(n == p or n.startswith(p + ".") for p in params)
        ]
        return torch.cat(picked)


@pytest.fixture(scope="module")
def cases() -> Callable[[str], Reference]:
    """`cases(kind)`: built once per module (the dense Hessian takes about a second)."""
    cache: dict[str, Reference] = {}

    def get(kind: str) -> Reference:
        if kind not in cache:
            model, data = hf.build(kind), hf.batches(kind)
            _, _, names = hf.loss_function(model, data)
            params = dict(model.named_parameters())
            H = hf.dense_reference_hessian(model, data)
            sizes = [params[n].numel() for n in names]
            cache[kind] = Reference(kind, model, data, names, sizes, H, torch.linalg.eigvalsh(H))
        return cache[kind]

    return get


# A few parameters of each model, for exact (dim-sized) trace and dense-operator checks.
SUBSETS = {
    "gpt2": ["transformer.h.0.ln_2", "transformer.ln_f"],
    "bert": ["classifier"],
    "llama": ["model.norm", "model.layers.0.post_attention_layernorm"],
}


# -- landscapes --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_surface_losses_and_slopes_match_brute_force(kind, cases) -> None:
    ref = cases(kind)
    problem = make_problem(ref.model, ref.data, kind, dtype=F64)
    dirs = la.random_directions(problem, n=2, seed=11)
    # Unequal axes: a transposed grid or swapped slopes cannot pass.
    land = la.surface(
        problem, dirs, steps=(4, 3), span=[(-1.0, 1.0), (-0.5, 0.5)], slopes=True, quiet=True
    )
    assert land.loss.shape == (4, 3) and land.slopes.shape == (4, 3, 2)
    loss_of, theta0, names = hf.loss_function(ref.model, ref.data)
    flat_dirs = [hf.flat(d, names) for d in dirs]
    for i, c1 in enumerate(land.coords[0]):
        for j, c2 in enumerate(land.coords[1]):
            expected = hf.hf_loss(ref.model, ref.data, offsets(problem.params, dirs, (c1, c2)))
            assert land.loss[i, j] == pytest.approx(expected, rel=rtol(kind))
            theta = (theta0 + c1 * flat_dirs[0] + c2 * flat_dirs[1]).requires_grad_(True)
            (g,) = torch.autograd.grad(loss_of(theta), theta)
            slopes = [float(g @ d) for d in flat_dirs]  # dL/dc_j = grad . d_j
            np.testing.assert_allclose(land.slopes[i, j], slopes, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_a_float32_model_matches_the_float64_reference(kind, cases) -> None:
    ref = cases(kind)
    problem = make_problem(ref.model, ref.data, kind)  # the model's own dtype
    assert problem.dtype == torch.float32
    dirs = la.random_directions(problem, n=1, seed=2)
    line = la.surface(problem, dirs, steps=5, quiet=True)
    d64 = [{n: t.double() for n, t in dirs[0].items()}]
    params64 = {n: w.double() for n, w in problem.params.items()}
    expected = [
        hf.hf_loss(ref.model, ref.data, offsets(params64, d64, (c,))) for c in line.coords[0]
    ]
    np.testing.assert_allclose(line.loss, expected, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_token_weighting_is_exact_whatever_the_batches(kind, cases) -> None:
    ref = cases(kind)
    splits = [(3, 5, 2), (1, 4, 5), (10,)]  # the last is one dict batch
    problems = [make_problem(ref.model, hf.rebatch(ref.data, s), kind, dtype=F64) for s in splits]
    # all sequences padded to one width in one dict batch, cut by the Problem into threes
    problems.append(make_problem(ref.model, hf.join(ref.data), kind, dtype=F64, batch_size=3))
    assert [len(list(p.batches())) for p in problems] == [3, 3, 1, 4]
    dirs = la.random_directions(problems[0], n=1, seed=4)
    lines = [la.surface(p, dirs, steps=3, quiet=True).loss for p in problems]
    for other in lines[1:]:
        np.testing.assert_allclose(other, lines[0], rtol=1e-6)
    expected = hf.hf_loss(ref.model, ref.data)
    assert all(line[1] == pytest.approx(expected, rel=rtol(kind)) for line in lines)
    if kind in hf.CAUSAL:
        # Averaged per sequence instead of per token, the value is another one: the check bites.
        by_sequence = la.Problem(ref.model, None, ref.data, dtype=F64)
        centre = la.surface(by_sequence, dirs, steps=3, quiet=True).loss[1]
        assert abs(centre - expected) > 1e-4 * expected  # 50 times the tolerance above


# -- curvature ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_hessian_eigenpairs_and_stable_lr_match_the_dense_hessian(kind, cases) -> None:
    ref = cases(kind)
    problem = make_problem(ref.model, ref.data, kind, dtype=F64)
    assert problem.n_params == len(ref.hessian)  # GPT-2's tied lm_head counted once
    top = la.hessian_eigen(problem, k=3, tol=1e-10)
    dense_top = ref.eigenvalues.flip(0)[:3].numpy()
    np.testing.assert_allclose(top.eigenvalues, dense_top, rtol=1e-6)
    assert top.converged.all()
    H = ref.hessian.numpy()
    for i, value in enumerate(top.eigenvalues):  # the vectors, in the dense matrix's own terms
        v = top.eigenvectors[:, i]
        assert np.linalg.norm(H @ v - value * v) <= 1e-5 * abs(value)
    bottom = la.hessian_eigen(problem, k=1, which="bottom", tol=1e-10)
    assert ref.eigenvalues[0] < 0  # random weights: the Hessian is indefinite
    assert bottom.eigenvalues[0] == pytest.approx(float(ref.eigenvalues[0]), rel=1e-6)
    lam = float(ref.eigenvalues[-1])
    assert la.max_stable_lr(float(top.eigenvalues[0])) == pytest.approx(2 / lam, rel=1e-6)
    assert la.stable_lr(float(top.eigenvalues[0]), lr=1.9 / lam).stable
    assert not la.stable_lr(float(top.eigenvalues[0]), lr=2.1 / lam).stable
    # Along the top eigenvector the surface bends by lambda_max (five-point second difference;
    # the loss is far from quadratic beyond h ~ 0.01 along it).
    h = 0.005
    L = la.surface(problem, top.directions(1), steps=5, span=(-2 * h, 2 * h), quiet=True).loss
    bend = (-L[0] + 16 * L[1] - 30 * L[2] + 16 * L[3] - L[4]) / (12 * h**2)
    assert bend == pytest.approx(lam, rel=1e-2)


@pytest.mark.parametrize("kind", KINDS)
def test_hessian_trace_matches_the_dense_trace(kind, cases) -> None:
    ref = cases(kind)
    problem = make_problem(ref.model, ref.data, kind, dtype=F64)
    # On a few parameters Hutch++ with 3 x dim products sketches everything: the exact trace.
    idx = ref.indices(SUBSETS[kind])
    block = float(ref.hessian[idx][:, idx].trace())
    exact = la.hessian_trace(problem, n_vectors=3 * len(idx), params=SUBSETS[kind], quiet=True)
    assert exact.estimate == pytest.approx(block, rel=1e-6, abs=1e-9)
    assert exact.stderr == 0
    # On all parameters, Hutchinson: the truth within 4 standard errors, and the standard error
    # that of the estimator, sqrt(2 (||H||_F^2 - sum_i H_ii^2) / m), within a factor of 2.
    m = 40
    est = la.hessian_trace(problem, n_vectors=m, method="hutchinson", seed=1, quiet=True)
    H = ref.hessian
    truth = float(H.trace())
    theory = math.sqrt(2 * float((H**2).sum() - (H.diagonal() ** 2).sum()) / m)
    assert abs(est.estimate - truth) <= 4 * est.stderr
    assert 0.5 * theory <= est.stderr <= 2 * theory


@pytest.mark.parametrize("method", ["forward", "double"])
@pytest.mark.parametrize("kind", KINDS)
def test_hessian_products_by_each_method_match_the_dense_block(kind, method, cases) -> None:
    """Forward-over-reverse (vmapped jvp) and uncached double backprop, both through sdpa."""
    ref = cases(kind)
    problem = make_problem(ref.model, ref.data, kind, dtype=F64)
    op = la.HessianOperator(problem, params=SUBSETS[kind], method=method, memory_budget=0)
    idx = ref.indices(SUBSETS[kind])
    assert op.dim == len(idx)
    dense = op.dense()
    assert op.method == method and not op.cached
    expected = ref.hessian[idx][:, idx]
    torch.testing.assert_close(dense, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


@pytest.mark.parametrize("kind", KINDS)
def test_epsilon_and_average_sharpness_against_references(kind, cases) -> None:
    ref = cases(kind)
    problem = make_problem(ref.model, ref.data, kind, dtype=F64)
    loss_of, theta0, _ = hf.loss_function(ref.model, ref.data)
    loss0 = hf.hf_loss(ref.model, ref.data)

    # Keskar's box |z_i| <= eps (|x_i| + 1). For a box this small the loss is nearly linear,
    # its maximum at or next to the vertex r * sign(g): the search from z = 0 must find at
    # least 99% of that vertex's gain, and no point of the box gains more than the quadratic
    # bound |g| . r + ||H|| ||r||^2 / 2 (third-order terms are negligible at this size).
    eps = 1e-3
    sharp = la.epsilon_sharpness(problem, epsilon=eps)
    assert sharp.loss == pytest.approx(loss0, rel=rtol(kind))
    x = theta0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_of(x), x)
    r = eps * (theta0.abs() + 1)
    vertex = float(loss_of(theta0 + r * g.sign())) - float(loss_of(theta0))
    norm_h = float(ref.eigenvalues.abs().max())
    bound = float(g.abs() @ r) + 0.5 * norm_h * float(r @ r)
    assert vertex > 0
    assert 0.99 * vertex <= sharp.loss_increase <= 1.01 * bound
    assert sharp.value == pytest.approx(100 * sharp.loss_increase / (1 + loss0), rel=1e-6)

    # Average-case: perturbation i is drawn as one float64 Gaussian vector from a generator
    # seeded with `seed` (the documented draw); the same draws give the brute-force mean.
    n, sigma = 6, 0.02
    avg = la.average_sharpness(problem, sigma=sigma, n_samples=n, seed=3, quiet=True)
    gen = torch.Generator().manual_seed(3)
    rises = [
        float(loss_of(theta0 + sigma * torch.randn(len(theta0), generator=gen, dtype=F64)))
        - float(loss_of(theta0))
        for _ in range(n)
    ]
    assert avg.loss == pytest.approx(loss0, rel=rtol(kind))
    assert avg.value == pytest.approx(float(np.mean(rises)), rel=1e-4, abs=1e-7)
    assert avg.stderr == pytest.approx(float(np.std(rises, ddof=1)) / math.sqrt(n), rel=1e-3)


def test_sharpness_report_agrees_with_the_dense_hessian(cases) -> None:
    ref = cases("gpt2")
    problem = make_problem(ref.model, ref.data, "gpt2", dtype=F64)
    report = la.sharpness_report(
        problem, k=2, trace_vectors=30, lr=0.01, samples=4, quiet=True, tol=1e-8
    )
    top = ref.eigenvalues.flip(0)[:2].numpy()
    np.testing.assert_allclose(report.eigen.eigenvalues, top, rtol=1e-6)
    assert report.stable.max_lr == pytest.approx(2 / top[0], rel=1e-6)
    assert report.stable.ratio == pytest.approx(0.01 * top[0] / 2, rel=1e-6)
    assert report.loss == pytest.approx(hf.hf_loss(ref.model, ref.data), rel=rtol("gpt2"))
    truth = float(ref.hessian.trace())
    assert abs(report.trace.estimate - truth) <= 4 * report.trace.stderr


# -- optimisation ------------------------------------------------------------------------------
def manual_gd(model: nn.Module, data: Sequence[dict], lr: float, steps: int) -> tuple:
    """Full-batch SGD by hand on a float64 copy, HF's loss on all data at once: the losses at
    every position (start first) and the final weights."""
    copied = hf.moved(model)
    whole = hf.join(data)
    opt = torch.optim.SGD(copied.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = copied(**whole).loss
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
    with torch.no_grad():
        losses.append(float(copied(**whole).loss))
    return losses, {n: p.detach() for n, p in copied.named_parameters()}


@pytest.mark.parametrize("kind", KINDS)
def test_descend_is_full_batch_gradient_descent_on_all_data(kind, cases) -> None:
    ref = cases(kind)
    problem = make_problem(ref.model, ref.data, kind, dtype=F64)
    run = la.descend(problem, optimizer="sgd", lr=0.5, steps=3)
    losses, weights = manual_gd(ref.model, ref.data, lr=0.5, steps=3)
    np.testing.assert_allclose(run.loss, losses, rtol=rtol(kind))
    assert losses[-1] < losses[0] - 1e-3  # the steps did move
    final = run.final_params()
    for name, w in weights.items():
        torch.testing.assert_close(final[name], w, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("batch_size", [None, 4], ids=["full", "mini"])
@pytest.mark.parametrize("kind", KINDS)
def test_train_is_the_same_loop_in_training_mode(kind, batch_size) -> None:
    """`train` from the model's weights, dropout on, against a hand-written loop drawing as
    `train` documents: `stream_seeds(seed)` seeds the global RNG (dropout) and the batch order,
    epochs of `torch.randperm(n)` taken in consecutive slices (a full batch takes all, in order)."""
    model = hf.build(kind)
    data = hf.batches(kind, width=hf.MAX_SEQ)  # one width: train joins the batches
    problem = make_problem(model, data, kind)
    seed, steps, lr = 5, 3, 0.5
    trained = la.train(
        problem, steps=steps, batch_size=batch_size, lr=lr, init="problem", seed=seed
    )
    whole = hf.join(data)
    n = len(whole["labels"])
    _, s_order, s_global = stream_seeds(seed)
    order = torch.Generator().manual_seed(s_order)
    picks, perm, pos = [], None, n
    for _ in range(steps):
        if batch_size is None:
            picks.append(torch.arange(n))
            continue
        if pos + batch_size > n:  # a new epoch; the rest of the last one is dropped
            perm, pos = torch.randperm(n, generator=order), 0
        picks.append(perm[pos : pos + batch_size])
        pos += batch_size

    def by_hand(training: bool) -> dict[str, torch.Tensor]:
        copied = copy.deepcopy(model)
        opt = torch.optim.SGD(copied.parameters(), lr=lr)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s_global)
            copied.train(training)
            for idx in picks:
                opt.zero_grad()
                copied(**{k: v[idx] for k, v in whole.items()}).loss.backward()
                opt.step()
        return {n: p.detach() for n, p in copied.named_parameters()}

    manual = by_hand(training=True)
    for name, w in manual.items():
        torch.testing.assert_close(trained.params[name], w, rtol=1e-5, atol=1e-6)
    # Dropout matters here, so the comparison above tells training mode from evaluation mode.
    without = by_hand(training=False)
    assert max(float((without[n] - w).abs().max()) for n, w in manual.items()) > 1e-4
    assert trained.history["train_loss"][-1] == pytest.approx(
        hf.hf_loss(model, data, manual), rel=1e-5
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_dataloader_with_dynamic_padding_is_exact(kind, cases) -> None:
    """Sequences collated by a `DataLoader` into batches padded each to its own longest one, as
    Hugging Face's `DataCollatorWithPadding` does: landscape and curvature stay exact."""
    ref = cases(kind)
    whole = hf.join(ref.data)
    rows = [{k: v[i] for k, v in whole.items()} for i in range(len(whole["input_ids"]))]

    def collate(items: list[dict]) -> dict[str, torch.Tensor]:
        batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
        width = int(batch["attention_mask"].sum(1).max())
        return {k: v[:, :width] if v.ndim == 2 else v for k, v in batch.items()}

    loader = torch.utils.data.DataLoader(rows, batch_size=4, collate_fn=collate)
    assert len({b["input_ids"].shape[1] for b in loader}) > 1  # the widths differ
    problem = make_problem(ref.model, loader, kind, dtype=F64)
    dirs = la.random_directions(problem, n=1, seed=12)
    line = la.surface(problem, dirs, steps=3, quiet=True)
    for c, loss in zip(line.coords[0], line.loss):
        expected = hf.hf_loss(ref.model, ref.data, offsets(problem.params, dirs, (c,)))
        assert loss == pytest.approx(expected, rel=rtol(kind))
    top = la.hessian_eigen(problem, k=1, tol=1e-10)
    assert top.eigenvalues[0] == pytest.approx(float(ref.eigenvalues[-1]), rel=1e-6)


# -- paths between models ------------------------------------------------------------------------
def other_weights(problem: la.Problem, seed: int, scale: float = 0.4) -> dict:
    """The problem's weights moved along a random (filter-normalised) direction."""
    d = la.random_directions(problem, n=1, seed=seed)[0]
    return {n: w + scale * d[n] for n, w in problem.params.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_interpolation_matches_brute_force(kind, cases) -> None:
    ref = cases(kind)
    metrics = {"accuracy": la.accuracy} if kind == "bert" else None
    problem = make_problem(ref.model, ref.data, kind, dtype=F64, metrics=metrics)
    a, b = dict(problem.params), other_weights(problem, seed=8)
    path = la.interpolate(problem, ref.model, b, steps=6, margin=0.25)
    assert path.t[0] < 0 < 1 < path.t[-1]
    whole = hf.join(ref.data)
    expected = []
    for i, t in enumerate(path.t):
        at = {n: (1 - t) * a[n] + t * b[n] for n in a}
        with torch.no_grad():
            out = hf.moved(ref.model, at)(**whole)
        expected.append(float(out.loss))
        if metrics:
            error = 1 - float((out.logits.argmax(-1) == whole["labels"]).double().mean())
            assert path.error[i] == pytest.approx(error, abs=1e-12)
    np.testing.assert_allclose(path.loss, expected, rtol=rtol(kind))
    # the barrier: the height above the chord between the ends, on [0, 1] only
    expected = np.array(expected)
    inside = (path.t >= 0) & (path.t <= 1)
    chord = (1 - path.t) * expected[path.t == 0] + path.t * expected[path.t == 1]
    height = max(0.0, float((expected - chord)[inside].max()))
    assert path.loss_barrier == pytest.approx(height, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_curve_fitting_and_losses_match_a_manual_bezier_loop(kind, cases) -> None:
    ref = cases(kind)
    problem = make_problem(ref.model, ref.data, kind, dtype=F64)
    a, b = dict(problem.params), other_weights(problem, seed=9)
    steps, lr = 3, 0.5
    curve = la.fit_curve(problem, a, b, steps=steps, lr=lr, seed=0, quiet=True)
    # The same SGD on the Bezier point theta by hand, at the t the fit recorded drawing:
    # phi(t) = (1-t)^2 a + 2t(1-t) theta + t^2 b, HF's loss on all data at once.
    loss_of, _, names = hf.loss_function(ref.model, ref.data)
    fa, fb = hf.flat(a, names), hf.flat(b, names)
    theta = ((fa + fb) / 2).requires_grad_(True)
    losses = []
    for t in curve.history["t"]:
        phi = (1 - t) ** 2 * fa + 2 * t * (1 - t) * theta + t**2 * fb
        loss = loss_of(phi)
        losses.append(float(loss.detach()))
        (g,) = torch.autograd.grad(loss, theta)
        theta = (theta - lr * g).detach().requires_grad_(True)
    np.testing.assert_allclose(curve.history["loss"], losses, rtol=rtol(kind))
    torch.testing.assert_close(
        hf.flat(curve.control_points[1], names), theta.detach(), atol=1e-7, rtol=1e-6
    )
    on = la.curve_losses(problem, curve, steps=4)
    for t, loss, line in zip(on.t, on.loss, on.line_loss):
        at_curve = hf.hf_loss(ref.model, ref.data, curve.point(float(t)))
        at_line = hf.hf_loss(ref.model, ref.data, {n: (1 - t) * a[n] + t * b[n] for n in a})
        assert loss == pytest.approx(at_curve, rel=rtol(kind))
        assert line == pytest.approx(at_line, rel=rtol(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_the_plane_through_three_models_matches_brute_force(kind, cases) -> None:
    ref = cases(kind)
    problem = make_problem(ref.model, ref.data, kind, dtype=F64)
    a, b, c = dict(problem.params), other_weights(problem, 13), other_weights(problem, 14, 0.3)
    plane = la.plane_through(problem, a, b, c, steps=3, margin=0.1, quiet=True)
    # The plane's axes by hand: u along b - a, v along the rest of c - a.
    _, _, names = hf.loss_function(ref.model, ref.data)
    fa, fb, fc = (hf.flat(w, names) for w in (a, b, c))
    u = (fb - fa) / (fb - fa).norm()
    rest = (fc - fa) - ((fc - fa) @ u) * u
    v = rest / rest.norm()
    np.testing.assert_allclose(plane.paths["b"][0], [float((fb - fa).norm()), 0.0], atol=1e-12)
    np.testing.assert_allclose(
        plane.paths["c"][0], [float((fc - fa) @ u), float(rest.norm())], rtol=1e-10
    )
    sizes = [a[n].numel() for n in names]
    for i, x in enumerate(plane.coords[0]):
        for j, y in enumerate(plane.coords[1]):
            theta = torch.split(fa + x * u + y * v, sizes)
            at = {n: t.reshape(a[n].shape) for n, t in zip(names, theta)}
            assert plane.loss[i, j] == pytest.approx(
                hf.hf_loss(ref.model, ref.data, at), rel=rtol(kind)
            )


# -- the user's model --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_the_users_model_is_never_modified(kind) -> None:
    model = hf.build(kind).train()  # a model left in training mode, as users often do
    data = hf.batches(kind, width=hf.MAX_SEQ)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    problem = make_problem(model, data, kind)
    dirs = la.random_directions(problem, n=1, seed=0)
    la.surface(problem, dirs, steps=3, slopes=True, quiet=True)
    la.hessian_eigen(problem, k=1, tol=1e-3)
    la.hessian_trace(problem, n_vectors=3, quiet=True)
    la.epsilon_sharpness(problem, max_iter=1)
    la.descend(problem, steps=1)
    la.train(problem, steps=1, batch_size=4, init="problem")
    la.interpolate(problem, model, other_weights(problem, seed=1), steps=3, metric=None)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert model.config._attn_implementation == "sdpa"


# -- padded batches of different widths, batches without units ---------------------------------
def test_a_subset_of_every_sample_is_the_whole_data(cases) -> None:
    ref = cases("gpt2")
    problem = make_problem(ref.model, ref.data, "gpt2", dtype=F64)
    everything = problem.n_samples  # a "subset" of all samples
    eig = la.hessian_eigen(problem, k=1, data=everything, tol=1e-10)
    assert eig.eigenvalues[0] == pytest.approx(float(ref.eigenvalues[-1]), rel=1e-6)


def test_curve_fitting_on_mini_batches_of_padded_text(cases) -> None:
    ref = cases("gpt2")
    problem = make_problem(ref.model, ref.data, "gpt2", dtype=F64)
    a, b = dict(problem.params), other_weights(problem, seed=9)
    # One mini-batch of every sample: the first step's loss is the loss on all data.
    curve = la.fit_curve(problem, a, b, steps=1, batch_size=problem.n_samples, seed=0, quiet=True)
    t = float(curve.history["t"][0])
    start = {n: (1 - t) * a[n] + t * b[n] for n in a}  # the Bezier point starts mid-segment
    expected = hf.hf_loss(ref.model, ref.data, start)
    assert curve.history["loss"][0] == pytest.approx(expected, rel=rtol("gpt2"))


def test_a_batch_without_predicted_tokens_adds_nothing(cases) -> None:
    ref = cases("gpt2")
    # e.g. fine-tuning data whose prompts are masked out: a batch may hold no answer token
    silent = {k: v.clone() for k, v in ref.data[2].items()}
    silent["labels"][:] = hf.IGNORE
    data = [*ref.data, silent]
    problem = make_problem(ref.model, data, "gpt2", dtype=F64)
    expected = hf.hf_loss(ref.model, data)  # all data at once: the silent batch adds nothing
    assert expected == pytest.approx(hf.hf_loss(ref.model, ref.data), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", la.LossatlasWarning)  # the NaN warning; values below
        line = la.surface(problem, la.random_directions(problem, n=1), steps=3, quiet=True)
    assert line.loss[1] == pytest.approx(expected, rel=rtol("gpt2"))
    run = la.descend(problem, optimizer="sgd", lr=0.5, steps=2)
    assert run.status == "max_steps"
    np.testing.assert_allclose(run.loss, manual_gd(ref.model, ref.data, 0.5, 2)[0], rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_train_on_padded_batches_of_different_widths(kind) -> None:
    """Batches that cannot be joined are trained on in parts, weighted by their units: with
    dropout off, full-batch `train` is full-batch gradient descent on HF's loss over all data."""
    model = hf.build(kind, dropout=0.0)
    data = hf.batches(kind)  # each batch padded to its own longest sequence
    problem = make_problem(model, data, kind, dtype=F64)
    trained = la.train(problem, steps=2, batch_size=None, lr=0.5, init="problem")
    losses, weights = manual_gd(model, data, 0.5, 2)
    np.testing.assert_allclose(trained.history["loss"], losses[:2], rtol=rtol(kind))
    for name, w in weights.items():
        torch.testing.assert_close(trained.params[name], w, rtol=1e-6, atol=1e-8)
