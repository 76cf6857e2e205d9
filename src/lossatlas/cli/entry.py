"""The `lossatlas` command line: parse, call the library, print.

Commands live in the modules of `lossatlas.cli` (importing them registers them on the app); what
they share (one-line errors, `--json`, `--quiet`) is in `lossatlas.cli.common`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lossatlas.cli import (  # noqa: F401 (importing registers the commands)
    curvature,
    demo,
    landscape,
    minima,
    runs,
    watch,
)
from lossatlas.cli.common import JsonOption, QuietOption, app

try:  # newer typer ships its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - typer releases that depend on click itself
    from click import exceptions as click_errors

__all__ = ["app", "main"]


@app.command(name="list")
def list_things(as_json: JsonOption = False, quiet: QuietOption = False) -> None:
    """List built-in problems, test functions, optimizers, schedules and direction types."""
    from lossatlas.core.directions import NORMS
    from lossatlas.descent.functions import FUNCTIONS
    from lossatlas.descent.optimizers import OPTIMIZERS, SCHEDULES
    from lossatlas.problems.registry import PROBLEMS

    def first_line(obj: Any) -> str:
        return (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""

    groups = {
        "problems": {name: first_line(fn) for name, fn in PROBLEMS.items()},
        "functions": {name: f.formula for name, f in FUNCTIONS.items()},
        "optimizers": {
            name: spec[0].__name__ + (f" {spec[1]}" if spec[1] else "")
            for name, spec in OPTIMIZERS.items()
        },
        "schedules": {name: cls.__name__ for name, cls in SCHEDULES.items()},
        "directions": {f"random, norm={n}": "Gaussian, normalised per " + n for n in NORMS}
        | {
            "between": "from one model to another",
            "axis": "chosen weight entries",
            "hessian": "top or bottom Hessian eigenvectors",
            "pca": "PCA of a trajectory",
        },
    }
    if as_json:
        print(json.dumps(groups))
        return
    if quiet:
        return
    console = Console()
    for title, rows in groups.items():
        table = Table(title=title, title_justify="left", show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column()
        for name, text in rows.items():
            table.add_row(escape(name), escape(str(text)))
        console.print(table)


@app.command()
def version(as_json: JsonOption = False, quiet: QuietOption = False) -> None:
    """Print the versions of lossatlas, torch, numpy and Python."""
    from lossatlas.core.provenance import versions

    if as_json:
        print(json.dumps(versions()))
    elif not quiet:
        for name, value in versions().items():
            print(f"{name} {value}")


def main() -> None:
    """The `lossatlas` entry point: usage mistakes, too, are one line and exit status 2."""
    try:
        code = app(prog_name="lossatlas", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else "lossatlas --help")
        code = 0
    except click_errors.UsageError as exc:
        message = (exc.format_message().strip().splitlines() or ["bad usage"])[0]
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        print(f"error: {message}{hint}", file=sys.stderr)
        code = 2
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
