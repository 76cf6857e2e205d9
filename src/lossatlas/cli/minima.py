"""`lossatlas minima SPEC`: train several runs (or load checkpoints) and compare their minima."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lossatlas.cli.common import (
    SPEC_HELP,
    JsonOption,
    LogOption,
    QuietOption,
    app,
    emit,
    parse_options,
    user_errors,
)
from lossatlas.errors import LossatlasError


def ray_options_of(ray: str | None, workers: int | None) -> Any:
    """`RayOptions` from `--ray ADDRESS` and `--ray-workers N`; None without `--ray`."""
    import lossatlas as la

    if ray is None:
        if workers is not None:
            raise LossatlasError("--ray-workers needs --ray ADDRESS")
        return None
    return la.RayOptions(address=ray, workers=workers)


@app.command()
@user_errors
def minima(
    spec: Annotated[str, typer.Argument(help=SPEC_HELP)],
    val: Annotated[
        str | None,
        typer.Option(help="Held-out data: a SPEC, or 'test' for a built-in problem's test split."),
    ] = None,
    seed: Annotated[
        list[int] | None, typer.Option(help="Seeds, repeatable (default 0 1 2).")
    ] = None,
    batch_size: Annotated[list[int] | None, typer.Option(help="Batch sizes, repeatable.")] = None,
    lr: Annotated[list[float] | None, typer.Option(help="Learning rates, repeatable.")] = None,
    optimizer: Annotated[str, typer.Option(help="Optimizer name (see `lossatlas list`).")] = "sgd",
    option: Annotated[
        list[str] | None, typer.Option(help="Optimizer option name=value, e.g. momentum=0.9.")
    ] = None,
    steps: Annotated[int, typer.Option(help="Training steps per run.")] = 300,
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(help="Compare these state dicts (weights only) instead of training."),
    ] = None,
    barriers: Annotated[bool, typer.Option(help="Barriers on the lines between minima.")] = True,
    curve: Annotated[
        bool, typer.Option(help="Train a Bezier curve between the first two minima.")
    ] = True,
    out: Annotated[Path, typer.Option(help="Directory for results and the report.")] = Path(
        "lossatlas-minima"
    ),
    ray: Annotated[
        str | None,
        typer.Option(
            help="Train the runs and interpolate the barriers on a Ray cluster: its "
            "address (auto, host:port)."
        ),
    ] = None,
    ray_workers: Annotated[
        int | None, typer.Option(help="Ray workers (default: one per CPU).")
    ] = None,
    log: LogOption = True,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Several minima of one problem: losses, gaps, sharpness, distances, barriers, a curve."""
    import lossatlas as la
    from lossatlas.cli.spec import load_problem, val_problem
    from lossatlas.io.storage import save
    from lossatlas.report.page import Section

    if out.exists() and not out.is_dir():
        raise LossatlasError(f"--out {out} is a file; give a directory")
    ray_options = ray_options_of(ray, ray_workers)
    began = time.perf_counter()
    problem = load_problem(spec)
    held_out = val_problem(spec, val)
    bars = True if quiet or as_json else None
    n_runs = len(checkpoint or []) or len(seed or [0, 1, 2]) * len(batch_size or [0]) * len(
        lr or [0]
    )
    if n_runs < 2:
        raise LossatlasError("comparing minima needs at least two runs or checkpoints")
    if checkpoint:
        if seed or batch_size or lr:
            raise LossatlasError(
                "--checkpoint compares given models: drop --seed/--batch-size/--lr"
            )
        runs = la.from_checkpoints(problem, [str(p) for p in checkpoint])
    else:
        runs = la.train_runs(
            problem,
            seeds=seed or [0, 1, 2],
            batch_sizes=batch_size or None,
            lrs=lr or None,
            optimizers=[optimizer],
            steps=steps,
            optimizer_kwargs=parse_options(option, "--option"),
            quiet=bars,
            ray=ray_options,
        )
    out.mkdir(parents=True, exist_ok=True)
    comparison = la.compare_minima(problem, runs, val=held_out, quiet=bars)
    results: dict[str, Any] = {"minima": comparison}
    if barriers:
        results["barriers"] = la.barrier_matrix(problem, runs, quiet=bars, ray=ray_options)
    if curve:
        fitted = la.fit_curve(
            problem, runs[0], runs[1], optimizer="adam", lr=0.01, steps=300, quiet=bars
        )
        results["curve"] = la.curve_losses(problem, fitted)
    files = {name: str(save(result, out / f"{name}.h5")) for name, result in results.items()}
    sections = [Section(r, title=f"{spec}: {name}") for name, r in results.items()]
    page = la.write_report(
        sections, out / "report.html", title=f"lossatlas: minima of {spec}", log=log
    )
    files["report"] = str(page)
    summary: dict[str, Any] = {"problem": spec, "files": files, "models": comparison.rows()}
    if barriers:
        summary["loss_barriers"] = results["barriers"].headline()["loss_barriers"]
    if curve:
        along = results["curve"].headline()
        summary["curve_barrier"] = along["barrier"]
        summary["line_barrier"] = along["line_barrier"]
    summary["total_seconds"] = time.perf_counter() - began
    if not as_json:
        head = comparison.headline()
        summary["models"] = ", ".join(
            f"{name}: loss {loss:.3g}, λmax {lam:.3g}"
            for name, loss, lam in zip(head["names"], head["train_loss"], head["lambda_max"])
        )
        summary.pop("loss_barriers", None)
    emit(summary, as_json=as_json, quiet=quiet, title=f"{len(runs)} minima of {spec}")
