"""The `lossatlas` command line (typer + rich): one module per group of commands."""

from __future__ import annotations

from lossatlas.cli.entry import app, main

__all__ = ["app", "main"]
