"""`lossatlas demo`: every capability on built-in problems, in one report.

Each scenario of the texts lossatlas grew from, reproduced and taken further: the loss and
gradient of one weight; learning rates on linear regression against the predicted largest
stable one; gradient descent on a quadratic bowl; optimizers on Rosenbrock's valley; a 1-2-1
network over two of its weights; a regression net's loss over its input plane; an MLP on the
digits, with its loss landscape, training path, Hessian spectrum, sharpness and many minima;
a residual CNN with BatchNorm; and a small causal transformer on text, its landscape and its
sharpest directions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lossatlas as la
from lossatlas.io.storage import save
from lossatlas.report.page import Section

TITLE = "lossatlas demo: loss landscapes and the optimizers that cross them"
INTRO = (
    "Every figure below was computed on built-in problems by `lossatlas demo`; each section "
    "ends with the settings and provenance of what it shows. Drag to zoom, double-click to "
    "reset, drag the 3D views to rotate."
)


class _Clock:
    """Seconds per demo part, for the summary."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, part: Callable[[], Any]) -> Any:
        began = time.perf_counter()
        value = part()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - began
        return value


def _one_weight(q: bool, quick: bool) -> tuple[Section, dict[str, Any]]:
    problem = la.one_weight()  # x = 2, y = 4, w = 0.5
    dirs = la.axis_directions(problem, ["weight[0, 0]"])
    line = la.surface(problem, dirs, 41 if quick else 101, (-1.5, 2.5), slopes=True, quiet=q)
    w = 0.5 + line.coords[0]
    check = float(np.max(np.abs(line.slopes[:, 0] - 2 * (2 * w - 4) * 2)))
    text = (
        "One input x = 2, one weight w, target y = 4: L(w) = (w x − y)², a parabola with its "
        "minimum at w = y / x = 2, and dL/dw = 2 (w x − y) x, negative left of the minimum "
        "(increase w) and positive right of it (decrease w). The slope is autograd's, checked "
        "against finite differences and here against the closed form."
    )
    facts = {"minimum (closed form)": "w = 2", "max |autograd − closed form|": check}
    title = "One weight: the loss and its gradient"
    section = Section(line, title=title, text=text, facts=facts, log=False)
    return section, {"one_weight_slope_error": check}


def _linreg(q: bool, quick: bool) -> tuple[Section, dict[str, Any]]:
    problem = la.linreg()  # y = 2x + 1 + noise, 100 points
    stable = la.stable_lr(la.hessian_eigen(problem, 1).eigenvalues[0])
    lrs = [0.01, 0.1, 0.5, round(0.95 * stable.max_lr, 4), round(1.05 * stable.max_lr, 4)]
    runs = la.sweep(problem, optimizers=["sgd"], lrs=lrs, steps=100, quiet=q)
    text = (
        "Gradient descent on y = 2x + 1 + noise with the learning rates 0.01, 0.1 and 0.5, and "
        "just below and above the largest stable rate predicted from the Hessian, 2 / λmax. "
        "Below it the loss falls (slowly at 0.01, oscillating near the bound); 5% above it, "
        "the run diverges, as predicted."
    )
    statuses = {f"lr={r.lr:g}": r.trajectory.status for r in runs}
    facts = {"λmax": stable.lambda_max, "predicted largest stable lr": stable.max_lr}
    section = Section(runs, title="Learning rates on linear regression", text=text, facts=facts)
    return section, {"linreg_max_stable_lr": stable.max_lr, "linreg_status": statuses}


def _bowl(q: bool, quick: bool) -> tuple[Section, dict[str, Any]]:
    bowl = la.get_function("bowl")  # (x - 2)^2 + (y + 3)^2
    starts = [[-5.0, 5.0], [5.0, 7.0], [-4.0, -7.0]]
    runs = la.sweep(bowl, starts=starts, optimizers=["sgd"], lrs=[0.2], steps=15, quiet=q)
    text = (
        "Gradient descent with learning rate 0.2 for 15 steps on f(x, y) = (x − 2)² + (y + 3)², "
        "from three starts. Each step moves against the gradient, so paths cross the contours "
        "at right angles and head straight for the minimum at (2, −3); the loss shrinks by the "
        "factor (1 − 2 · 0.2)² = 0.36 per step."
    )
    finals = [float(r.trajectory.final_loss) for r in runs]
    section = Section(runs, title="Gradient descent on a quadratic bowl", text=text)
    return section, {"bowl_final_losses": finals}


def _rosenbrock(q: bool, quick: bool) -> tuple[Section, dict[str, Any]]:
    rosen = la.get_function("rosenbrock")
    optimizers = ["sgd", "momentum", "rmsprop", "adam"]
    lrs = [1e-4, 1e-3, 1e-2] if quick else [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    steps = 300 if quick else 1000
    cmp = la.compare(
        rosen, optimizers=optimizers, starts=[[-1.5, 2.0]], lrs=lrs, steps=steps, quiet=q
    )
    text = (
        f"Four optimizers on Rosenbrock's valley from (−1.5, 2), each at its best learning rate "
        f"out of {len(lrs)} under one budget of {steps} steps (the table says how runs are "
        "ranked). Plain gradient descent crawls along the flat, curved floor; momentum and the "
        "adaptive methods get further along it."
    )
    section = Section(cmp, title="Optimizers on the Rosenbrock function", text=text)
    return section, {"rosenbrock_best_lr": dict(cmp.best_lr)}


def _tiny(q: bool, quick: bool) -> tuple[Section, dict[str, Any]]:
    problem = la.get_problem("tiny-7", quiet=q)
    names = ["hidden.weight[0, 0]", "hidden.weight[1, 0]"]
    dirs = la.axis_directions(problem, names)
    land = la.surface(problem, dirs, 31 if quick else 61, (-3.0, 3.0), quiet=q)
    text = (
        "A 1-2-1 network has 7 weights; here two of them move, the first-layer weights of "
        "the two hidden units, and the other five stay at their trained values. Even this "
        "small network's landscape is no round bowl: the two weights trade off along curved "
        "valleys."
    )
    section = Section(land, title="A 7-weight network over two chosen weights", text=text)
    return section, {"tiny7_loss_min": float(np.nanmin(land.loss))}


def _xy(q: bool, quick: bool) -> tuple[Section, dict[str, Any]]:
    from lossatlas.landscape.inputs import input_surface
    from lossatlas.problems.toys import xy_target

    problem = la.get_problem("xy-regression", quiet=q)
    land = input_surface(problem, target=xy_target, steps=41 if quick else 81, quiet=q)
    text = (
        "A small net trained on a function of two inputs. Here the weights stay fixed and the "
        "input moves: the squared error against the true function over the whole input plane. "
        "It is low where training data lies (dots) and grows beyond the data's edge."
    )
    section = Section(land, title="Loss as a function of the input", text=text)
    return section, {"xy_mean_loss": float(np.nanmean(land.loss))}


def _digits(
    q: bool, quick: bool, out: Path, problem: la.Problem
) -> tuple[list[Section], dict[str, Any]]:
    from lossatlas.core.seeding import init_layers
    from lossatlas.problems.digits import digits_model

    dirs = la.random_directions(problem, 2, norm="filter", ignore="biasbn", seed=0)
    steps = 11 if quick else 41
    land = la.surface(
        problem, dirs, steps, (-1.0, 1.0), out=out / "digits-mlp.h5", overwrite=True, quiet=q
    )
    random_text = (
        "An MLP (64-128-128-10) trained on scikit-learn's digits, on the plane of two random "
        "directions normalised filter by filter (Li et al. 2018), so that distances mean the "
        "same in every layer."
    )
    # The training path: full-batch Adam from the same initialisation, projected by PCA.
    init = digits_model()
    init_layers(init, torch.Generator().manual_seed(0))
    start = {k: v.detach() for k, v in init.named_parameters()}
    run = la.descend(problem, start, optimizer="adam", lr=2e-3, steps=60 if quick else 150)
    pca = la.pca_directions(run, n=2)
    spans = []
    for j in range(2):
        lo, hi = min(pca.coords[:, j].min(), 0.0), max(pca.coords[:, j].max(), 0.0)
        spans.append((lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo)))
    plane = la.surface(problem, pca.directions, steps, spans, center=pca.center, quiet=q)
    plane = la.with_paths(plane, {"training path (Adam, full batch)": pca.coords})
    path_text = (
        "The same model's training path from its initialisation, projected onto the plane of "
        "its two principal directions (PCA of the checkpoints, centred on the end, as in Li et "
        "al. 2018); the axes say how much of the path's variance each direction holds."
    )
    report = la.sharpness_report(
        problem, k=5, trace_vectors=20 if quick else 60, samples=10 if quick else 50, quiet=q
    )
    density = la.spectral_density(
        la.HessianOperator(problem), n_vectors=2 if quick else 4, steps=20 if quick else 40, quiet=q
    )
    curvature_text = (
        "Curvature at the trained weights: the top of the Hessian spectrum (Lanczos), its "
        "trace (Hutch++), sharpness measures and the largest stable learning rate; then the "
        "whole spectrum's density by stochastic Lanczos quadrature."
    )
    sections = [
        Section(land, title="Digits MLP: a filter-normalised random plane", text=random_text),
        Section(plane, title="Digits MLP: the training path in PCA coordinates", text=path_text),
        Section(report, title="Digits MLP: Hessian spectrum and sharpness", text=curvature_text),
        Section(density, title="Digits MLP: Hessian spectral density"),
    ]
    numbers = {"digits_" + k: v for k, v in land.headline().items() if k != "argmin"}
    numbers["digits_lambda_max"] = report.lambda_max
    numbers["digits_pca_explained"] = [float(r) for r in pca.explained_variance_ratio]
    return sections, numbers


def run_demo(
    out: str | Path, *, quick: bool = False, log: bool = True, quiet: bool = True
) -> dict[str, Any]:
    """Run every demo scenario, write `out/report.html` and the results, and summarise.

    Args:
        out: the directory for the report, the result files and the figures.
        quick: small grids and budgets (a few seconds; used by the tests).
        log: logarithmic loss colours and axes.
        quiet: no progress bars.

    Returns:
        `files` written, `seconds` per part and in all, and headline numbers.
    """
    from lossatlas.demo.minima import minima_sections
    from lossatlas.demo.networks import gpt_sections, resnet_sections
    from lossatlas.demo.watching import watching_sections

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    began, clock = time.perf_counter(), _Clock()
    names = ["one-weight", "linreg-lrs", "bowl-gd", "rosenbrock", "tiny-7", "xy-input"]
    parts = [_one_weight, _linreg, _bowl, _rosenbrock, _tiny, _xy]
    sections: list[tuple[str, Section]] = []
    numbers: dict[str, Any] = {}
    for name, part in zip(names, parts):
        section, found = clock.run(name, lambda part=part: part(quiet, quick))
        sections.append((name, section))
        numbers.update(found)
    train = clock.run("digits-mlp", lambda: la.get_problem("digits-mlp", quiet=quiet))
    digits, found = clock.run("digits-mlp", lambda: _digits(quiet, quick, out, train))
    names = ["digits-mlp", "digits-pca", "digits-sharpness", "digits-density"]
    sections += zip(names, digits)
    numbers.update(found)
    plane = digits[0].result
    minima, found = clock.run("many minima", lambda: minima_sections(quiet, quick, train, plane))
    sections += minima
    numbers.update(found)
    watched, found = clock.run("watching", lambda: watching_sections(quiet, quick, out))
    sections += watched
    numbers.update(found)
    for name, part in (("resnet-digits", resnet_sections), ("tiny-gpt", gpt_sections)):
        more, found = clock.run(name, lambda part=part: part(quiet, quick))
        sections += more
        numbers.update(found)
    page = clock.run(
        "report",
        lambda: la.write_report(
            [s for _, s in sections], out / "report.html", title=TITLE, log=log, intro=INTRO
        ),
    )
    files = {"report": str(page), **clock.run("files", lambda: _files(dict(sections), out, log))}
    return {
        "files": files,
        **numbers,
        "seconds": clock.seconds,
        "total_seconds": time.perf_counter() - began,
    }


STREAMED = ("digits-mlp", "digits-watch", "digits-watch.plane")


def _files(sections: dict[str, Section], out: Path, log: bool) -> dict[str, str]:
    """Each result as HDF5 (for `lossatlas report`) and the main static figures."""
    files = {}
    for name, section in sections.items():
        named = section.result if isinstance(section.result, dict) else {"": section.result}
        for part, result in named.items():  # surfaces side by side: one file each
            key = f"{name}-{part}" if part else name
            if key not in STREAMED:  # written as they were computed
                save(result, out / f"{key}.h5")
            files[key] = str(out / f"{key}.h5")
    r = {name: s.result for name, s in sections.items()}
    figures = {
        "one-weight.png": lambda p: la.plot_line(r["one-weight"], p),
        "linreg-lrs.png": lambda p: la.plot_histories(r["linreg-lrs"], p),
        "bowl-gd.png": lambda p: la.plot_paths(la.get_function("bowl"), r["bowl-gd"], p),
        "digits-mlp.png": lambda p: la.save_figure(r["digits-mlp"], p, log=log),
        "digits-pca.png": lambda p: la.plot_paths(r["digits-pca"], r["digits-pca"].paths, p),
        "digits-barriers.png": lambda p: la.plot_barriers(r["digits-barriers"], p),
        "digits-flat-sharp.png": lambda p: la.plot_flat_vs_sharp(r["digits-flat-sharp"], p),
        "digits-watch.png": lambda p: la.plot_monitor(r["digits-watch"], p),
    }
    for name, draw in figures.items():
        files[name] = str(draw(out / name))
    return files
