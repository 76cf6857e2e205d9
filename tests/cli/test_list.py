"""`lossatlas list`: every registry, as a table or JSON."""

from __future__ import annotations

import json
import subprocess
import sys

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
