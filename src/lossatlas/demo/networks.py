"""The demo's part on the networks users bring: a residual CNN and a causal transformer.

The `resnet-digits` problem (BatchNorm, residual blocks) on a filter-normalised random plane
(Li et al. 2018) with its λmax; the `tiny-gpt` language model on such a plane, then on the plane
of its two sharpest Hessian directions on training and on held-out text, with λmax and the
largest stable learning rate of gradient descent, 2 / λmax (Cohen et al. 2021).
"""

from __future__ import annotations

from typing import Any

import lossatlas as la
from lossatlas.problems.gpt import encode, gpt_text, unigram_entropy
from lossatlas.report.page import Section

SHARP_SPAN = (-0.4, 0.4)  # along unit eigenvectors: a rise of about λ c² / 2 at the edges


def resnet_sections(quiet: bool, quick: bool) -> tuple[list[tuple[str, Section]], dict[str, Any]]:
    """`(file name, section)` pairs and headline numbers for the `resnet-digits` problem."""
    problem = la.get_problem("resnet-digits", quiet=quiet)
    dirs = la.random_directions(problem, 2, norm="filter", ignore="biasbn", seed=0)
    plane = la.surface(problem, dirs, 9 if quick else 17, (-1.0, 1.0), quiet=quiet)
    eig = la.hessian_eigen(problem, 1, tol=1e-3 if quick else 1e-5)
    text = (
        "A residual network with BatchNorm (He et al. 2016; 38,266 weights, evaluated in "
        "evaluation mode with its running statistics) trained on the digits, on a "
        "filter-normalised random plane. BatchNorm weights and biases stay fixed (ignore="
        "'biasbn'), as in Li et al. 2018."
    )
    facts = {
        "λmax": eig.eigenvalues[0],
        "largest stable learning rate 2 / λmax": la.stable_lr(eig.eigenvalues[0]).max_lr,
    }
    title = "A residual CNN: a filter-normalised random plane"
    section = Section(plane, title=title, text=text, facts=facts)
    numbers = {"resnet_loss_center": plane.headline()["loss_center"]}
    numbers["resnet_lambda_max"] = float(eig.eigenvalues[0])
    return [("resnet-digits", section)], numbers


def gpt_sections(quiet: bool, quick: bool) -> tuple[list[tuple[str, Section]], dict[str, Any]]:
    """`(file name, section)` pairs and headline numbers for the `tiny-gpt` problem."""
    train = la.get_problem("tiny-gpt", quiet=quiet)
    test = la.get_problem("tiny-gpt", split="test", quiet=quiet)
    steps = 9 if quick else 17
    dirs = la.random_directions(train, 2, norm="filter", ignore="biasbn", seed=0)
    plane = la.surface(train, dirs, steps, (-1.0, 1.0), quiet=quiet)
    eig = la.hessian_eigen(train, 2, tol=1e-3 if quick else 1e-5)
    stable = la.stable_lr(eig.eigenvalues[0])
    sharp = eig.directions()
    planes = {
        split: la.surface(problem, sharp, steps, SHARP_SPAN, quiet=quiet)
        for split, problem in (("train", train), ("test", test))
    }
    unigram = unigram_entropy(encode(gpt_text()[0]))
    random_text = (
        "A two-block causal transformer (64,368 weights, tied embedding) trained for 10 s to "
        "predict the next character of Python's own standard-library source, on the plane of "
        "two filter-normalised random directions. The loss is the cross-entropy per character "
        f"over {train.n_samples} windows of 64 characters; a model that ignores the context "
        f"cannot go below the unigram entropy, {unigram:.2f} nats."
    )
    sharp_text = (
        "The same model along its two sharpest directions, the top Hessian eigenvectors "
        "(Lanczos), on the training windows and on held-out text. Along a unit eigenvector the "
        "loss bends with curvature λ; gradient descent with a learning rate above 2 / λmax "
        "overshoots along the first one and diverges."
    )
    facts = {
        "λmax": eig.eigenvalues[0],
        "λ2": eig.eigenvalues[1],
        "largest stable learning rate 2 / λmax": stable.max_lr,
        "loss (train / held-out)": f"{plane.headline()['loss_center']:.4f} / "
        f"{planes['test'].headline()['loss_center']:.4f}",
        "unigram entropy": unigram,
        "Hessian-vector products": eig.hvps,
    }
    sections = [
        ("gpt-plane", Section(plane, title="A language model: a random plane", text=random_text)),
        (
            "gpt-sharp",
            Section(
                planes,
                title="A language model: its sharpest directions, train and held-out",
                text=sharp_text,
                facts=facts,
            ),
        ),
    ]
    numbers = {
        "gpt_loss_center": plane.headline()["loss_center"],
        "gpt_test_loss_center": planes["test"].headline()["loss_center"],
        "gpt_lambda_max": float(eig.eigenvalues[0]),
        "gpt_max_stable_lr": stable.max_lr,
    }
    return sections, numbers
