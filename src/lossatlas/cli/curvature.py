"""`lossatlas sharpness SPEC`: curvature and sharpness at a model's weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lossatlas.cli.common import (
    SPEC_HELP,
    JsonOption,
    QuietOption,
    WeightsOption,
    app,
    check_suffix,
    user_errors,
)


@app.command()
@user_errors
def sharpness(
    spec: Annotated[str, typer.Argument(help=SPEC_HELP)],
    weights: WeightsOption = None,
    k: Annotated[int, typer.Option(help="Top Hessian eigenvalues to compute.")] = 5,
    trace_vectors: Annotated[int, typer.Option(help="Hutch++ budget for the trace.")] = 60,
    lr: Annotated[
        float | None, typer.Option(help="A learning rate to compare with the stable one.")
    ] = None,
    momentum: Annotated[float, typer.Option(help="Heavy-ball momentum for the bound.")] = 0.0,
    epsilon: Annotated[float, typer.Option(help="Keskar's box size.")] = 1e-3,
    sigma: Annotated[float, typer.Option(help="Average-case perturbation scale.")] = 0.01,
    samples: Annotated[int, typer.Option(help="Average-case perturbations.")] = 50,
    rho: Annotated[float, typer.Option(help="Adaptive sharpness radius.")] = 0.05,
    params: Annotated[
        list[str] | None, typer.Option(help="Parameter or module names (repeatable).")
    ] = None,
    data: Annotated[str, typer.Option(help="all, first_batch or a number of samples.")] = "all",
    seed: Annotated[int, typer.Option(help="Seed of every random draw.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Save the full result to this HDF5 file (for `report`).")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Curvature and sharpness: Hessian spectrum and trace, stable lr, sharpness measures."""
    from lossatlas.cli.spec import data_option, load_problem
    from lossatlas.curvature.summary import sharpness_report

    check_suffix(out, (".h5", ".hdf5"), "--out")
    check_suffix(report, (".html",), "--report")
    problem = load_problem(spec, weights=weights)
    result = sharpness_report(
        problem,
        k=k,
        trace_vectors=trace_vectors,
        lr=lr,
        momentum=momentum,
        epsilon=epsilon,
        sigma=sigma,
        samples=samples,
        rho=rho,
        seed=seed,
        params=params or None,
        data=data_option(data),
        quiet=True if quiet or as_json else None,  # None: LOSSATLAS_QUIET decides
    )
    files = {}
    if out is not None:
        from lossatlas.io.storage import save

        files["result"] = str(save(result, out))
    if report is not None:
        from lossatlas.report.page import Section, write_report

        section = Section(result, title=f"Curvature and sharpness of {spec}")
        files["report"] = str(write_report(section, report, title=f"lossatlas: {spec}"))
    summary = {"problem": spec, "weights": None if weights is None else str(weights)}
    summary["files"] = files
    if as_json:
        print(json.dumps({**summary, **result.to_dict()}))
    elif not quiet:
        _print_sharpness(spec, result, files)


def _print_sharpness(spec: str, report: Any, files: dict[str, str]) -> None:
    d = report.headline()  # non-finite values print as nan and inf
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    metrics = "".join(f", {k} {v:.4g}" for k, v in d["metrics"].items())
    table.add_row("loss", f"{d['loss']:.4g}{metrics}")
    table.add_row("lambda_max", f"{d['lambda_max']:.5g}")
    table.add_row("top eigenvalues", ", ".join(f"{v:.4g}" for v in d["eigenvalues"]))
    table.add_row("trace", f"{d['trace']:.5g} +- {d['trace_stderr']:.2g} (Hutch++)")
    table.add_row("stable lr", escape(report.stable.describe()))
    table.add_row("epsilon-sharpness", f"{d['epsilon_sharpness']:.4g} (Keskar, %)")
    table.add_row(
        "average sharpness",
        f"{d['average_sharpness']:.4g} +- {d['average_sharpness_stderr']:.2g}",
    )
    table.add_row("adaptive sharpness", f"{d['adaptive_sharpness']:.4g}")
    table.add_row("cost", f"{d['hvps']} Hessian-vector products, {d['seconds']:.1f} s")
    for name, path in files.items():
        table.add_row(name, escape(path))
    console = Console()
    operator = report.settings["operator"]
    console.print(
        f"[bold]{escape(spec)}[/]: {operator['dim']} parameters, {escape(operator['data'])}"
    )
    console.print(table)
