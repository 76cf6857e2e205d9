"""What every `lossatlas` command shares: the app, options, one-line errors and output.

User mistakes (`LossatlasError`, a missing or unwritable file) print one line `error: ...` on
standard error and exit with status 2; `LossatlasWarning`s print as one line `warning: ...`.
With `--json`, standard output carries one JSON object and nothing else.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lossatlas.core.provenance import jsonable
from lossatlas.errors import LossatlasError, LossatlasWarning

app = typer.Typer(
    name="lossatlas",
    help="See and measure the loss landscapes of neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals hold tensors: huge and unreadable
)
F = TypeVar("F", bound=Callable[..., Any])
_default_showwarning = warnings.showwarning


def _one_line(exc: BaseException) -> str:
    """The first line of a message, or `reason: file` for an operating-system error."""
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Print lossatlas warnings as one line; leave all others to Python's default format."""
    if issubclass(category, LossatlasWarning):
        text = _one_line(Warning(str(message))).removeprefix("lossatlas: ")
        print(f"warning: {text}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def user_errors(command: F) -> F:
    """Turn user mistakes into `error: <message>` and exit status 2, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (LossatlasError, OSError) as exc:  # OSError: a missing or unwritable path
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def _main() -> None:
    """See and measure the loss landscapes of neural networks."""
    warnings.showwarning = _show_warning


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", help="No progress bars, no summary.")]
WeightsOption = Annotated[
    Path | None, typer.Option(help="A state dict to load (torch.load, weights only).")
]
LogOption = Annotated[
    bool, typer.Option("--log/--linear", help="Loss colours and axes on a log or linear scale.")
]
SPEC_HELP = "A built-in problem (see `lossatlas list`) or path/to/file.py:function."


def emit(summary: dict[str, Any], *, as_json: bool, quiet: bool, title: str) -> None:
    """Print the summary: one JSON object with `--json`, a two-column table unless `--quiet`."""
    if as_json:
        print(json.dumps(jsonable(summary)))
        return
    if quiet:
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items() if v is not None)
        if value not in (None, "", {}):
            table.add_row(escape(key.replace("_", " ")), escape(_short(value)))
    console = Console()
    console.print(f"[bold]{escape(title)}[/]")
    console.print(table)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_short(v) for v in value)
    return str(value)


def check_suffix(path: Path | None, suffixes: tuple[str, ...], option: str) -> Path | None:
    """`path` if its suffix is one of `suffixes` (checked before any long work starts)."""
    if path is not None and path.suffix.lower() not in suffixes:
        raise LossatlasError(f"{option} {path.name!r} must end in one of {', '.join(suffixes)}")
    return path


def parse_pair(text: str, option: str) -> tuple[float, float]:
    """`"LOW,HIGH"` (or `"X,Y"`) as two finite floats."""
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise LossatlasError(f"{option} must be two numbers like -1,1; got {text!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise LossatlasError(f"{option} must be finite, got {text!r}")
    return a, b


def parse_options(items: list[str] | None, option: str) -> dict[str, Any]:
    """`key=value` pairs; values read as JSON numbers, booleans or lists where they parse."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise LossatlasError(f"{option} must look like name=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
