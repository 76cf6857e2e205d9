"""`lossatlas sharpness`, run in subprocesses as a user would."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lossatlas.problems.registry import linreg
from tests.support.cli import run_cli


def test_json_report_on_linreg_matches_the_closed_form():
    proc = run_cli(
        "sharpness", "linreg", "--json", "--lr", "0.5", "--samples", "20", LOSSATLAS_QUIET="1"
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    x = torch.linspace(0, 1, 100, dtype=torch.float64)
    A = torch.stack([x, torch.ones_like(x)], 1)
    H = 2 / 100 * A.T @ A
    eigenvalues = torch.linalg.eigvalsh(H).flip(0).numpy()
    np.testing.assert_allclose(report["eigenvalues"], eigenvalues, rtol=1e-8)
    assert report["lambda_max"] == pytest.approx(eigenvalues[0], rel=1e-8)
    assert report["max_stable_lr"] == pytest.approx(2 / eigenvalues[0], rel=1e-8)
    # Hutch++ with a budget above 3 x dim is exact.
    assert report["trace"] == pytest.approx(float(torch.trace(H)), rel=1e-10)
    assert report["lr_ratio"] == pytest.approx(0.5 * eigenvalues[0] / 2, rel=1e-8)
    for key in ["epsilon_sharpness", "average_sharpness", "adaptive_sharpness", "trace_stderr"]:
        assert key in report
    assert report["settings"]["operator"]["dim"] == 2 and report["problem"] == "linreg"
    assert report["loss"] == pytest.approx(
        float(
            linreg().loss_fn(
                torch.func.functional_call(linreg().module, linreg().params, (x[:, None],)),
                next(linreg().batches())[1],
            )
        ),
        rel=1e-10,
    )


def test_spec_file_weights_and_params(tmp_path):
    (tmp_path / "model.py").write_text(
        "import torch\nfrom torch import nn\nimport lossatlas as la\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))\n"
        "    x = torch.randn(30, 3)\n"
        "    return la.Problem(model, nn.CrossEntropyLoss(), (x, (x[:, 0] > 0).long()),\n"
        "                      metrics={'error': la.error})\n"
    )
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    args = ["sharpness", "model.py:make", "--weights", "w.pt", "--params", "2", "--k", "3"]
    proc = run_cli(*args, "--json", "--samples", "10", cwd=tmp_path, LOSSATLAS_QUIET="1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["settings"]["operator"]["params"] == ["2.weight", "2.bias"]
    assert len(report["eigenvalues"]) == 3 and "error" in report["metrics"]
    assert "error" in report["epsilon_metric_change"]
    human = run_cli(*args, "--samples", "10", cwd=tmp_path, LOSSATLAS_QUIET="1")
    assert human.returncode == 0 and "lambda_max" in human.stdout and "Hutch++" in human.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such"], "unknown problem 'no-such'"),
        (["linreg", "--data", "lots"], "--data must be"),
        (["linreg", "--data", "0"], "a subset needs 1 to 100 samples"),
        (["linreg", "--epsilon", "-1"], "epsilon"),
        (["linreg", "--weights", "missing.pt"], "no weights file"),
        (["linreg", "--params", "fc9"], "no parameter or module named 'fc9'"),
    ],
)
def test_user_mistakes_are_one_line_errors(args, message):
    proc = run_cli("sharpness", *args, LOSSATLAS_QUIET="1")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
