"""Problem specs: built-in names, `file.py:function`, and weights loaded without unpickling."""

from __future__ import annotations

import pytest
import torch

import lossatlas as la
from lossatlas.cli.spec import load_problem

SPEC_FILE = """
import torch
from torch import nn
import lossatlas as la
from helper_module import WIDTH

def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, WIDTH), nn.Tanh(), nn.Linear(WIDTH, 1))
    return la.Problem(model, nn.MSELoss(), (torch.randn(10, 3), torch.randn(10, 1)))

def broken():
    raise RuntimeError("the data server is down")

def not_a_problem():
    return 42
"""


@pytest.fixture
def spec_dir(tmp_path):
    (tmp_path / "spec.py").write_text(SPEC_FILE)
    (tmp_path / "helper_module.py").write_text("WIDTH = 5\n")
    return tmp_path


def test_builtin_and_file_specs(spec_dir):
    assert load_problem("one-weight").n_params == 1
    problem = load_problem(f"{spec_dir / 'spec.py'}:make")
    assert problem.n_params == 3 * 5 + 5 + 5 + 1


def test_weights_are_loaded_into_a_copy(spec_dir, tmp_path):
    problem = load_problem(f"{spec_dir / 'spec.py'}:make")
    state = {k: torch.full_like(v, 0.25) for k, v in problem.module.state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    loaded = load_problem(f"{spec_dir / 'spec.py'}:make", weights=tmp_path / "w.pt")
    assert all(torch.equal(p, torch.full_like(p, 0.25)) for p in loaded.params.values())
    assert not any(torch.equal(p, torch.full_like(p, 0.25)) for p in problem.params.values())
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pt")
    wrapped = load_problem(f"{spec_dir / 'spec.py'}:make", weights=tmp_path / "ckpt.pt")
    assert all(torch.equal(p, torch.full_like(p, 0.25)) for p in wrapped.params.values())


class Pickled:
    pass


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("no-such-problem", "unknown problem 'no-such-problem'"),
        ("missing.py:make", "no Python file 'missing.py'"),
        ("{dir}/spec.py:absent", "has no function 'absent'"),
        ("{dir}/spec.py:broken", "raised RuntimeError: the data server is down"),
        ("{dir}/spec.py:not_a_problem", "returned int, not a lossatlas.Problem"),
        ("{dir}/spec.py:1x", "is not a function name"),
    ],
)
def test_bad_specs(spec_dir, spec, match):
    with pytest.raises(la.LossatlasError, match=match) as info:
        load_problem(spec.format(dir=spec_dir))
    assert "\n" not in str(info.value)


def test_bad_weights(spec_dir, tmp_path):
    spec = f"{spec_dir / 'spec.py'}:make"
    torch.save({"0.weight": torch.zeros(2, 2)}, tmp_path / "wrong.pt")
    torch.save(Pickled(), tmp_path / "pickle.pt")
    (tmp_path / "text.pt").write_text("hello")
    for name, match in [
        ("absent.pt", "no weights file"),
        ("wrong.pt", r"does not fit .*'0\.weight' is \(2, 2\), the model's \(5, 3\)"),
        ("pickle.pt", "weights only"),
        ("text.pt", "cannot load"),
    ]:
        with pytest.raises(la.LossatlasError, match=match):
            load_problem(spec, weights=tmp_path / name)
