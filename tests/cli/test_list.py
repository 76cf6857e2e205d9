"""`lossatlas list`: every registry, as a table or JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import lossatlas
from lossatlas.descent.functions import FUNCTIONS
from lossatlas.descent.optimizers import OPTIMIZERS, SCHEDULES
from lossatlas.problems.registry import PROBLEMS


def test_list_names_everything():
    run = [sys.executable, "-m", "lossatlas", "list"]
    proc = subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    groups = json.loads(proc.stdout)
    assert list(groups["problems"]) == list(PROBLEMS)
    assert list(groups["functions"]) == list(FUNCTIONS)
    assert groups["functions"]["rosenbrock"] == "(1 - x)^2 + 100 * (y - x^2)^2"
    assert list(groups["optimizers"]) == list(OPTIMIZERS)
    assert list(groups["schedules"]) == list(SCHEDULES)
    assert "random, norm=filter" in groups["directions"] and "hessian" in groups["directions"]
    table = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and "rosenbrock" in table.stdout and "digits-mlp" in table.stdout


def test_the_console_script_and_python_m_give_the_same_answer():
    """The installed `lossatlas` script (pyproject's `lossatlas.cli:main`) and `python -m`."""
    script = Path(sys.executable).with_name("lossatlas")
    if not script.exists():
        pytest.skip("the package is not installed with its console script")
    runs = [[str(script)], [sys.executable, "-m", "lossatlas"]]
    out = [subprocess.run([*r, "version", "--json"], capture_output=True, text=True) for r in runs]
    assert all(p.returncode == 0 for p in out), [p.stderr for p in out]
    assert json.loads(out[0].stdout) == json.loads(out[1].stdout)
    assert json.loads(out[0].stdout)["lossatlas"] == lossatlas.__version__
