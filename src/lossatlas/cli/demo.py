"""`lossatlas demo`: every capability on built-in problems, written to one report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from lossatlas.cli.common import JsonOption, LogOption, QuietOption, app, emit, user_errors
from lossatlas.errors import LossatlasError

DEFAULT_OUT = Path("lossatlas-demo")


@app.command()
@user_errors
def demo(
    out: Annotated[
        Path, typer.Option(help="Directory for the demo's files (its own files are replaced).")
    ] = DEFAULT_OUT,
    quick: Annotated[
        bool, typer.Option("--quick", help="Small grids and budgets: seconds, not a minute.")
    ] = False,
    log: LogOption = True,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Run every scenario on built-in problems and write an interactive report."""
    from lossatlas.demo.run import run_demo

    if out.exists() and not out.is_dir():
        raise LossatlasError(f"--out {out} is a file; give a directory for the demo's files")
    summary: dict[str, Any] = run_demo(out, quick=quick, log=log, quiet=quiet or as_json)
    if as_json or quiet:
        emit(summary, as_json=as_json, quiet=quiet, title="")
        return
    seconds = summary["seconds"]
    console = Console()
    console.print(
        f"[bold]lossatlas demo[/]{' (quick)' if quick else ''}: "
        f"{summary['total_seconds']:.1f} s in all"
    )
    for part, s in seconds.items():
        console.print(f"  {escape(part):<14} {s:6.1f} s")
    console.print(
        f"digits MLP: λmax {summary['digits_lambda_max']:.4g}, "
        f"largest stable lr on linreg {summary['linreg_max_stable_lr']:.4g}"
    )
    console.print(f"open {escape(summary['files']['report'])} in a browser")
