"""The `lossatlas` command line: parse, call the library, print.

User mistakes (`LossatlasError`, a missing or unwritable file) print one line `error: ...` on
standard error and exit with status 2; `LossatlasWarning`s print as one line `warning: ...`.
With `--json`, standard output carries one JSON object and nothing else.
"""

from __future__ import annotations

import functools
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lossatlas.engine import LossatlasWarning
from lossatlas.errors import LossatlasError

app = typer.Typer(
    name="lossatlas",
    help="See and measure the loss landscapes of neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals hold tensors: huge and unreadable
)
F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_OUT = Path("lossatlas-demo")
TITLE = "lossatlas demo: the loss landscape of an MLP on the digits"
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


def _user_errors(command: F) -> F:
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


def _out_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise LossatlasError(f"--out {out} is a file; give a directory for the demo's files")
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve()


@app.command()
@_user_errors
def demo(
    out: Annotated[
        Path, typer.Option(help="Directory for the demo's files (replaced if there).")
    ] = DEFAULT_OUT,
    quick: Annotated[bool, typer.Option("--quick", help="An 11 x 11 grid, not 41 x 41.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")
    ] = False,
    log: Annotated[
        bool, typer.Option("--log/--linear", help="Colour the loss on a log or linear scale.")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars, no summary.")] = False,
) -> None:
    """Train a small MLP on the digits and map its loss landscape (2D, filter-normalised)."""
    import lossatlas as la
    from lossatlas.problems import digits_mlp
    from lossatlas.report import headline, save_figure, write_report

    start = time.perf_counter()
    out = _out_dir(out)
    steps = 11 if quick else 41
    problem = digits_mlp(seed=0, quiet=quiet)
    dirs = la.random_directions(problem, 2, norm="filter", ignore="biasbn", seed=0)
    # The demo owns these file names: a previous demo with other settings is replaced.
    h5 = out / "digits-mlp.h5"
    land = la.surface(problem, dirs, steps, (-1.0, 1.0), out=h5, overwrite=True, quiet=quiet)
    files = {
        "surface": str(h5),
        "report": str(write_report(land, out / "report.html", title=TITLE, log=log)),
        "figure": str(save_figure(land, out / "digits-mlp.png", log=log)),
    }
    numbers = {**headline(land), "total_seconds": time.perf_counter() - start}
    if as_json:
        print(json.dumps({"files": files, **numbers}))
    elif not quiet:
        _print_summary(numbers, files, steps)


def _print_summary(numbers: dict[str, Any], files: dict[str, str], steps: int) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    acc = numbers.get("accuracy_center")
    center = f"{numbers['loss_center']:.4g}" + (
        f"  (accuracy {acc:.1%})" if acc is not None else ""
    )
    table.add_row("loss at the centre", center)
    where = ", ".join(f"{c:+.2f}" for c in numbers["argmin"] or [])
    table.add_row("lowest loss", f"{numbers['loss_min']:.4g}  at ({where})")
    seconds, total = numbers["seconds"], numbers["total_seconds"]
    table.add_row("time", f"{seconds:.1f} s for {numbers['n_points']} points, {total:.1f} s in all")
    if numbers["nonfinite"]:
        table.add_row("non-finite", f"{numbers['nonfinite']} points")
    for label, key in (("report", "report"), ("figure", "figure"), ("data", "surface")):
        table.add_row(label, escape(files[key]))
    console = Console()
    console.print(
        f"[bold]digits MLP[/]: {steps} x {steps} loss landscape, "
        "filter-normalised random directions (seed 0)"
    )
    console.print(table)
    console.print(f"open {escape(files['report'])} in a browser to explore the landscape")


def _data_option(data: str) -> str | int:
    if data in ("all", "first_batch"):
        return data
    try:
        return int(data)
    except ValueError:
        raise LossatlasError(
            f"--data must be all, first_batch or a number of samples, got {data!r}"
        ) from None


@app.command()
@_user_errors
def sharpness(
    spec: Annotated[str, typer.Argument(help="A built-in problem or path/to/file.py:function.")],
    weights: Annotated[
        Path | None, typer.Option(help="A state dict to load (torch.load, weights only).")
    ] = None,
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
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars, no summary.")] = False,
) -> None:
    """Curvature and sharpness: Hessian spectrum and trace, stable lr, sharpness measures."""
    from lossatlas.curvature import sharpness_report
    from lossatlas.spec import load_problem

    problem = load_problem(spec, weights=weights)
    report = sharpness_report(
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
        data=_data_option(data),
        quiet=True if quiet or as_json else None,  # None: LOSSATLAS_QUIET decides
    )
    summary = {"problem": spec, "weights": None if weights is None else str(weights)}
    if as_json:
        print(json.dumps({**summary, **report.to_dict()}))
    elif not quiet:
        _print_sharpness(spec, report)


def _print_sharpness(spec: str, report: Any) -> None:
    d = report.to_dict()
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
    console = Console()
    operator = d["settings"]["operator"]
    console.print(
        f"[bold]{escape(spec)}[/]: {operator['dim']} parameters, {escape(operator['data'])}"
    )
    console.print(table)


@app.command(name="list")
def list_things(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")
    ] = False,
) -> None:
    """List built-in problems, test functions, optimizers, schedules and direction types."""
    from lossatlas.directions import NORMS
    from lossatlas.functions import FUNCTIONS
    from lossatlas.optimizers import OPTIMIZERS, SCHEDULES
    from lossatlas.problems import PROBLEMS

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
    console = Console()
    for title, rows in groups.items():
        table = Table(title=title, title_justify="left", show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column()
        for name, text in rows.items():
            table.add_row(escape(name), escape(str(text)))
        console.print(table)


@app.command()
def version() -> None:
    """Print the versions of lossatlas, torch, numpy and Python."""
    from lossatlas.result import versions

    for name, value in versions().items():
        print(f"{name} {value}")


if __name__ == "__main__":
    app(prog_name="lossatlas")
