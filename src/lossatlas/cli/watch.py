"""`lossatlas watch SPEC CHECKPOINT...`: a training run's checkpoints watched after the fact."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lossatlas.cli.common import (
    SPEC_HELP,
    JsonOption,
    QuietOption,
    app,
    check_suffix,
    emit,
    user_errors,
)


@app.command()
@user_errors
def watch(
    spec: Annotated[str, typer.Argument(help=SPEC_HELP)],
    checkpoints: Annotated[
        list[Path], typer.Argument(help="State-dict files saved during training (or a folder).")
    ],
    out: Annotated[Path, typer.Option(help="The monitor record (HDF5).")] = Path("monitor.h5"),
    lr: Annotated[
        float | None, typer.Option(help="The training's learning rate (for 2 / lr).")
    ] = None,
    momentum: Annotated[float, typer.Option(help="Its heavy-ball momentum.")] = 0.0,
    data: Annotated[str, typer.Option(help="all or a number of samples.")] = "512",
    trace: Annotated[int, typer.Option(help="Hutch++ products per checkpoint (0: none).")] = 0,
    val: Annotated[
        str | None, typer.Option(help="Validation data: a SPEC, or `test` (built-in split).")
    ] = None,
    plane: Annotated[
        bool, typer.Option(help="Also the loss over the path's PCA plane (3+ checkpoints).")
    ] = True,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Loss, gradient norm, lambda_max against 2 / lr, trace and gap at every checkpoint."""
    import lossatlas as la
    from lossatlas.cli.spec import data_option, load_problem, val_problem
    from lossatlas.errors import LossatlasError

    check_suffix(out, (".h5", ".hdf5"), "--out")
    check_suffix(report, (".html",), "--report")
    if out.exists() and not overwrite:
        raise LossatlasError(f"{out} exists; pass --overwrite to replace it")
    if not checkpoints:
        raise LossatlasError("give checkpoint files or a folder of them")
    files = []
    for path in checkpoints:
        files += sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    problem = load_problem(spec)
    bars = True if quiet or as_json else None
    monitor = la.watch_checkpoints(
        problem, files, out=out, overwrite=overwrite, lr=lr, momentum=momentum,
        data=data_option(data), trace=trace, val=val_problem(spec, val), quiet=bars,
    )  # fmt: skip
    written = {"monitor": str(out)}
    if plane and len(files) >= 3:
        monitor.plane(quiet=bars)
        written["plane"] = str(out.with_suffix(".plane.h5"))
    monitor.close()
    record = la.load(out)
    if report is not None:
        sections = [record] + ([la.load(written["plane"])] if "plane" in written else [])
        page = la.write_report(sections, report, title=f"lossatlas: {spec}, watched")
        written["report"] = str(page)
    summary = {"problem": spec, "files": written, **record.headline()}
    emit(summary, as_json=as_json, quiet=quiet, title=f"{spec}: {len(files)} checkpoints watched")
