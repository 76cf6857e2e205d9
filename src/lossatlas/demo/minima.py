"""The demo's many-minima part: the digits MLP trained from three seeds, and what separates them.

Train against test landscapes, three minima side by side (losses, gaps, sharpness, distances),
the barriers on the straight lines between them, a trained low-loss curve, the plane through all
three, and small- against large-batch training (Keskar et al. 2017).
"""

from __future__ import annotations

from typing import Any

import lossatlas as la
from lossatlas.report.page import Section


def minima_sections(
    quiet: bool, quick: bool, train: la.Problem, train_plane: la.Surface
) -> tuple[list[tuple[str, Section]], dict[str, Any]]:
    """`(file name, section)` pairs and headline numbers, for the trained digits MLP `train`
    and its filter-normalised plane `train_plane`."""
    test = la.get_problem("digits-mlp", split="test", quiet=quiet)
    steps = train_plane.settings["steps"][0]
    test_plane = la.surface(test, train_plane.directions, steps, (-1.0, 1.0), quiet=quiet)
    overfit = Section(
        {"train": train_plane, "test": test_plane},
        title="Digits MLP: the same plane on training and on held-out data",
        text="The trained model's loss on the plane of section 7, on its 1437 training digits "
        "and on the 360 held-out ones, on one colour scale, and their difference: the gap at "
        "the centre is the generalisation gap, and where it grows away from the centre the "
        "minimum fits the training data only.",
    )
    runs = la.train_runs(
        train,
        seeds=(0, 1, 2),
        steps=150 if quick else 300,
        batch_size=64,
        lr=0.1,
        optimizer="sgd",
        optimizer_kwargs={"momentum": 0.9},
        quiet=quiet,
    )
    comparison = la.compare_minima(train, runs, val=test, samples=10 if quick else 50, quiet=quiet)
    barriers = la.barrier_matrix(train, runs, steps=11 if quick else 21, quiet=quiet)
    curve = la.fit_curve(
        train,
        runs[0],
        runs[1],
        steps=100 if quick else 300,
        lr=0.01,  # Adam at 0.05 swung 30x in the barrier with rounding-level changes
        optimizer="adam",
        batch_size=128,
        quiet=quiet,
    )
    along = la.curve_losses(train, curve, steps=21 if quick else 41)
    plane = la.plane_through(train, *runs, steps=15 if quick else 31, quiet=quiet)
    study = la.flat_vs_sharp(
        train, test, steps=150 if quick else 500, line_steps=21 if quick else 41, quiet=quiet
    )
    lam, gap = study.comparison.lambda_max, study.comparison.gap
    sections = [
        ("digits-train-test", overfit),
        (
            "digits-minima",
            Section(
                comparison,
                title="Digits MLP: three minima from three seeds",
                text="The same network trained three times (SGD with momentum, batch 64), only the "
                "seed differing: each run ends in its own minimum, with its own training and "
                "held-out loss, sharpness and distance from the others.",
            ),
        ),
        (
            "digits-barriers",
            Section(
                barriers,
                title="Digits MLP: barriers between the three minima",
                text="The loss along the straight line between every pair of minima, measured as "
                "the largest rise above the chord between the ends (Entezari et al. 2022): "
                f"{_pairs(barriers)}, against end "
                f"losses of {_span(barriers.endpoint_loss)}. A barrier near 0 would mean the two "
                "minima are linearly connected (Frankle et al. 2020).",
            ),
        ),
        (
            "digits-curve",
            Section(
                along,
                title="Digits MLP: a low-loss path between two minima",
                text="A quadratic Bezier curve between the first two minima, its bend trained to "
                "keep the loss low along the whole path (Garipov et al. 2018): its barrier is "
                f"{along.barrier:.3g}, against {along.line_barrier:.3g} on the straight line.",
            ),
        ),
        (
            "digits-plane",
            Section(
                plane,
                title="Digits MLP: the plane through the three minima",
                text="The loss on the plane through all three minima (Garipov et al. 2018, "
                "Fig. 1); "
                "axes are Euclidean distances in weight space.",
            ),
        ),
        (
            "digits-flat-sharp",
            Section(
                study,
                title="Digits MLP: small- against large-batch training",
                text="Two runs from one initialisation for the same number of steps, one with "
                "batches of 32, one with the full batch (Keskar et al. 2017). Which one is sharper "
                "and which generalises better is measured, not assumed: λmax "
                f"{lam[0]:.3g} (batch 32) against {lam[1]:.3g} (full batch), generalisation gap "
                f"{gap[0]:.3g} against {gap[1]:.3g}.",
            ),
        ),
    ]
    numbers = {
        "minima_lambda_max": comparison.lambda_max.tolist(),
        "minima_gap": comparison.gap.tolist(),
        "barrier_max": float(barriers.loss_barrier.max()),
        "curve_barrier": along.barrier,
        "line_barrier": along.line_barrier,
        "flat_sharp_lambda_max": study.comparison.lambda_max.tolist(),
        "flat_sharp_gap": study.comparison.gap.tolist(),
    }
    return sections, numbers


def _span(values: Any) -> str:
    return f"{min(values):.3g} to {max(values):.3g}"


def _pairs(matrix: Any) -> str:
    upper = [
        matrix.loss_barrier[i, j]
        for i in range(len(matrix.names))
        for j in range(i + 1, len(matrix.names))
    ]
    return f"barriers from {min(upper):.3g} to {max(upper):.3g}"
