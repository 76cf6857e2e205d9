"""`lossatlas surface SPEC` (1D/2D landscapes) and `lossatlas report FILE.h5 ...`."""

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
    WeightsOption,
    app,
    check_suffix,
    emit,
    parse_pair,
    user_errors,
)
from lossatlas.errors import LossatlasError

DIRECTION_KINDS = ("random", "axis", "hessian")
H5 = (".h5", ".hdf5")


@app.command()
@user_errors
def surface(
    spec: Annotated[str, typer.Argument(help=SPEC_HELP)],
    weights: WeightsOption = None,
    dims: Annotated[int, typer.Option(help="1 for a line, 2 for a plane.")] = 2,
    directions: Annotated[
        str, typer.Option(help="random, axis (chosen weights) or hessian (top eigenvectors).")
    ] = "random",
    norm: Annotated[
        str, typer.Option(help="random: filter, layer, model or none normalisation.")
    ] = "filter",
    ignore: Annotated[
        str, typer.Option(help="random: biasbn zeroes biases and BatchNorm, none keeps them.")
    ] = "biasbn",
    orthogonal: Annotated[bool, typer.Option(help="random: orthogonalise the directions.")] = False,
    weight: Annotated[
        list[str] | None,
        typer.Option(help="axis: a weight entry such as 'fc1.weight[0, 1]' (one per axis)."),
    ] = None,
    steps: Annotated[int, typer.Option(help="Grid points per axis.")] = 41,
    span: Annotated[str, typer.Option(help="Coefficient range LOW,HIGH.")] = "-1,1",
    seed: Annotated[int, typer.Option(help="Seed of the random directions.")] = 0,
    slopes: Annotated[bool, typer.Option(help="Also record dL/dc along each direction.")] = False,
    out: Annotated[
        Path, typer.Option(help="HDF5 result; an interrupted run resumes from it.")
    ] = Path("surface.h5"),
    overwrite: Annotated[
        bool, typer.Option(help="Replace an --out file that holds a different surface.")
    ] = False,
    figure: Annotated[Path | None, typer.Option(help="Static figure (.png, .svg, .pdf).")] = None,
    report: Annotated[Path | None, typer.Option(help="Interactive HTML report.")] = None,
    vtp: Annotated[Path | None, typer.Option(help="VTK PolyData (.vtp) for ParaView.")] = None,
    log: LogOption = True,
    memory_budget: Annotated[
        str | None, typer.Option(help="Bytes per chunk of points, e.g. 512MB.")
    ] = None,
    compile: Annotated[
        str,
        typer.Option(
            "--compile", help="torch.compile the forward: auto (when the run repays it), on, off."
        ),
    ] = "auto",
    ray: Annotated[
        str | None,
        typer.Option(help="Evaluate on a Ray cluster: its address (auto, host:port)."),
    ] = None,
    ray_workers: Annotated[
        int | None, typer.Option(help="Ray workers (default: one per CPU, or per GPU).")
    ] = None,
    ray_gpus_per_worker: Annotated[float, typer.Option(help="GPUs per Ray worker.")] = 0.0,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """The loss (and metrics) on a line or plane through the weights; resumable."""
    import lossatlas as la
    from lossatlas.cli.spec import load_problem, spec_builder

    if dims not in (1, 2):
        raise LossatlasError(f"--dims must be 1 or 2, got {dims}")
    if directions not in DIRECTION_KINDS:
        raise LossatlasError(f"--directions must be one of {', '.join(DIRECTION_KINDS)}")
    compiling = {"auto": "auto", "on": True, "off": False}.get(compile)
    if compiling is None:
        raise LossatlasError(f"--compile must be auto, on or off, got {compile!r}")
    low, high = parse_pair(span, "--span")
    if not low < high:
        raise LossatlasError(f"--span must go from low to high, got {span!r}")
    ray_options = None
    if ray is not None:  # every worker builds the problem from the spec: data stays local
        ray_options = la.RayOptions(
            address=ray,
            workers=ray_workers,
            gpus_per_worker=ray_gpus_per_worker,
            build=spec_builder(spec, weights),
        )
    elif ray_workers is not None or ray_gpus_per_worker:
        raise LossatlasError("--ray-workers and --ray-gpus-per-worker need --ray ADDRESS")
    check_suffix(out, H5, "--out")
    check_suffix(figure, (".png", ".svg", ".pdf"), "--figure")
    check_suffix(report, (".html",), "--report")
    check_suffix(vtp, (".vtp",), "--vtp")
    if vtp is not None and dims != 2:
        raise LossatlasError("--vtp needs a 2D surface (--dims 2)")
    problem = load_problem(spec, weights=weights)
    quiet_bars = True if quiet or as_json else None  # None: LOSSATLAS_QUIET decides
    if directions == "random":
        dirs = la.random_directions(
            problem,
            dims,
            norm=norm,
            ignore=None if ignore == "none" else ignore,
            orthogonal=orthogonal,
            seed=seed,
        )
    elif directions == "axis":
        if len(weight or []) != dims:
            raise LossatlasError(
                f"--directions axis needs {dims} --weight option(s), one per axis, got "
                f"{len(weight or [])}"
            )
        dirs = la.axis_directions(problem, list(weight or []))
    else:
        dirs = la.hessian_directions(problem, dims, seed=seed)
    began = time.perf_counter()
    land = la.surface(
        problem,
        dirs,
        steps,
        (low, high),
        out=out,
        overwrite=overwrite,
        slopes=slopes,
        memory_budget=memory_budget,
        compile=compiling,
        ray=ray_options,
        quiet=quiet_bars,
    )
    files: dict[str, str] = {"surface": str(out)}
    if figure is not None:
        save = la.plot_line if dims == 1 else la.save_figure
        files["figure"] = str(save(land, figure, log=log))
    if report is not None:
        files["report"] = str(la.write_report(land, report, title=f"lossatlas: {spec}", log=log))
    if vtp is not None:
        from lossatlas.io.vtk import export_vtp

        files["vtp"] = str(export_vtp(land, vtp, log=log))
    summary = {"problem": spec, "files": files, **land.headline()}
    summary["estimated_seconds"] = land.provenance.get("estimated_seconds")  # from its start
    summary["total_seconds"] = time.perf_counter() - began
    emit(summary, as_json=as_json, quiet=quiet, title=f"{spec}: {dims}D loss landscape")


@app.command(name="report")
@user_errors
def report_command(
    files: Annotated[list[Path], typer.Argument(help="Result files (.h5) to put in the report.")],
    out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("report.html"),
    title: Annotated[str, typer.Option(help="The page heading.")] = "lossatlas report",
    side_by_side: Annotated[
        bool,
        typer.Option(help="Show the surfaces (one grid, e.g. train and test) side by side."),
    ] = False,
    log: LogOption = True,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """One self-contained HTML report from saved results (surfaces, runs, curvature, a
    watched training: with its PCA plane when `<monitor>.plane.h5` is beside it)."""
    from lossatlas.io.storage import load
    from lossatlas.report.page import write_report

    check_suffix(out, (".html",), "--out")
    from lossatlas.landscape.record import Surface
    from lossatlas.watch.record import MonitorRecord

    results: list[Any] = []
    for path in files:
        results.append(load(path))
        plane = path.with_suffix(".plane.h5")  # a monitor's PCA plane (Monitor.plane)
        if isinstance(results[-1], MonitorRecord) and plane.exists() and plane not in files:
            results.append(load(plane))
    if side_by_side:  # one section for the surfaces, labelled by their file names
        named = {p.stem: r for p, r in zip(files, results) if isinstance(r, Surface)}
        if len(named) < 2:
            raise LossatlasError("--side-by-side needs at least two surface files")
        results = [named, *(r for r in results if not isinstance(r, Surface))]
    path = write_report(results, out, title=title, log=log)
    kinds = ["Surfaces" if isinstance(r, dict) else type(r).__name__ for r in results]
    summary = {"files": {"report": str(path)}, "sections": kinds, "inputs": [str(f) for f in files]}
    emit(summary, as_json=as_json, quiet=quiet, title=f"report of {len(files)} result(s)")
