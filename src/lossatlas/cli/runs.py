"""`lossatlas descend FUNCTION|SPEC`: optimizer runs and sweeps, figures and animations."""

from __future__ import annotations

import difflib
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lossatlas.cli.common import (
    JsonOption,
    LogOption,
    QuietOption,
    WeightsOption,
    app,
    check_suffix,
    emit,
    parse_options,
    parse_pair,
    user_errors,
)
from lossatlas.errors import LossatlasError

FIGURES = (".png", ".svg", ".pdf")


def default_start(box: tuple[tuple[float, float], tuple[float, float]]) -> list[float]:
    """A start away from the centre of a function's box: 20% in from its left, 80% up."""
    (x0, x1), (y0, y1) = box
    return [x0 + 0.2 * (x1 - x0), y0 + 0.8 * (y1 - y0)]


@app.command()
@user_errors
def descend(
    target: Annotated[
        str,
        typer.Argument(
            help="A test function (see `lossatlas list`), a built-in problem or "
            "path/to/file.py:function."
        ),
    ],
    weights: WeightsOption = None,
    optimizer: Annotated[
        list[str] | None, typer.Option(help="Optimizer name, repeatable (default sgd).")
    ] = None,
    lr: Annotated[list[float] | None, typer.Option(help="Learning rate, repeatable.")] = None,
    start: Annotated[
        list[str] | None, typer.Option(help="Functions: a start X,Y, repeatable.")
    ] = None,
    steps: Annotated[int, typer.Option(help="Steps per run.")] = 200,
    option: Annotated[
        list[str] | None, typer.Option(help="Optimizer option name=value, e.g. momentum=0.9.")
    ] = None,
    schedule: Annotated[
        str | None, typer.Option(help="A learning-rate schedule (see `lossatlas list`).")
    ] = None,
    schedule_option: Annotated[
        list[str] | None, typer.Option(help="Schedule option name=value, e.g. gamma=0.5.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed (noise, randomised optimizers).")] = 0,
    noise: Annotated[float, typer.Option(help="Gaussian gradient noise (std).")] = 0.0,
    out: Annotated[
        Path | None, typer.Option(help="Save the runs to this HDF5 file (for `report`).")
    ] = None,
    figure: Annotated[
        Path | None,
        typer.Option(help="Static figure: paths over the contours (functions) or loss histories."),
    ] = None,
    animate: Annotated[
        Path | None, typer.Option(help="Functions: an animation (.gif, or .mp4 with ffmpeg).")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Interactive HTML report.")] = None,
    ray: Annotated[
        str | None,
        typer.Option(help="Make the runs on a Ray cluster: its address (auto, host:port)."),
    ] = None,
    ray_workers: Annotated[
        int | None, typer.Option(help="Ray workers (default: one per CPU).")
    ] = None,
    log: LogOption = True,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Run optimizers (every optimizer x lr x start) on a test function or a problem."""
    import lossatlas as la
    from lossatlas.cli.minima import ray_options_of
    from lossatlas.cli.spec import load_problem
    from lossatlas.descent.functions import FUNCTIONS
    from lossatlas.problems.registry import PROBLEMS

    check_suffix(out, (".h5", ".hdf5"), "--out")
    check_suffix(figure, FIGURES, "--figure")
    check_suffix(animate, (".gif", ".mp4"), "--animate")
    check_suffix(report, (".html",), "--report")
    ray_options = ray_options_of(ray, ray_workers)
    is_function = target in FUNCTIONS
    if is_function:
        if weights is not None:
            raise LossatlasError("--weights is for problems, not test functions")
        objective: Any = FUNCTIONS[target]
        starts: Any = [list(parse_pair(s, "--start")) for s in start or []]
        starts = starts or [default_start(objective.box)]
    else:
        if target not in PROBLEMS and ":" not in target:  # neither: name the closest of both
            known = [*FUNCTIONS, *PROBLEMS]
            close = difflib.get_close_matches(target, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise LossatlasError(
                f"unknown test function or problem {target!r}; {hint}test functions: "
                f"{', '.join(FUNCTIONS)}; problems: {', '.join(sorted(PROBLEMS))}; "
                "or path/to/file.py:function"
            )
        if start:
            raise LossatlasError("--start is for test functions; a problem starts at its weights")
        if animate is not None:
            raise LossatlasError("--animate is for test functions (runs with 2 coordinates)")
        objective, starts = load_problem(target, weights=weights), None
    began = time.perf_counter()
    runs = la.sweep(
        objective,
        starts=starts,
        optimizers=optimizer or ["sgd"],
        lrs=lr or [0.01],
        seeds=[seed],
        steps=steps,
        optimizer_kwargs=parse_options(option, "--option"),
        schedule=schedule,
        schedule_kwargs=parse_options(schedule_option, "--schedule-option"),
        noise=noise,
        record_positions=is_function,  # a problem's positions are all its weights
        quiet=True if quiet or as_json else None,
        ray=ray_options,
    )
    files: dict[str, str] = {}
    if out is not None:
        from lossatlas.io.storage import save

        files["runs"] = str(save(runs, out))
    if figure is not None:
        draw = la.plot_paths(objective, runs, figure, log=log) if is_function else None
        files["figure"] = str(draw or la.plot_histories(runs, figure, log=log))
    if animate is not None:
        files["animation"] = str(la.animate(objective, runs, animate, log=log))
    if report is not None:
        page = la.write_report(runs, report, title=f"lossatlas: runs on {target}", log=log)
        files["report"] = str(page)
    head = runs.headline()
    table = runs.table()
    if is_function:  # where each run ended (a problem's final weights are too many to print)
        for row, run in zip(table, runs.entries):
            row["final_position"] = [float(v) for v in run.trajectory.final_position]
    summary = {
        "target": target,
        "runs": head["runs"],
        "best": f"{head['best_optimizer']}, lr={head['best_lr']:g}: loss {head['best_loss']:.4g}",
        "files": files,
        "table": table,
        "total_seconds": time.perf_counter() - began,
    }
    if not as_json:
        summary.pop("table")
        summary["status"] = {s: head[s] for s in ("converged", "max_steps", "diverged")}
    emit(summary, as_json=as_json, quiet=quiet, title=f"{head['runs']} run(s) on {target}")
