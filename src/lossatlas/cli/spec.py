"""Command-line problem specs: a built-in name, or `path/to/file.py:function` returning a Problem.

`path/to/file.py:function` is imported the way uvicorn and pytest name objects; the function
is called without arguments. `--weights model.pt` loads a state dict with
`torch.load(weights_only=True)`, which never unpickles arbitrary objects.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from lossatlas.core.problem import Problem
from lossatlas.errors import LossatlasError, one_line
from lossatlas.problems.registry import PROBLEMS, get_problem
from lossatlas.training.checkpoints import check_state, read_state_dict


def load_problem(spec: str, *, weights: str | Path | None = None) -> Problem:
    """The Problem named by `spec`, with the weights of `weights` if given."""
    if spec in PROBLEMS:
        problem = get_problem(spec)
    elif ":" in spec:
        problem = _from_file(spec)
    else:
        raise LossatlasError(
            f"unknown problem {spec!r}: use a built-in one ({', '.join(sorted(PROBLEMS))}) "
            "or path/to/file.py:function"
        )
    return problem if weights is None else with_weights(problem, weights)


def spec_builder(spec: str, weights: str | Path | None = None) -> Callable[[], Problem]:
    """`load_problem` of `spec` as a picklable function for other processes (Ray workers),
    with file paths made absolute (a worker's working directory is not the driver's)."""
    if spec not in PROBLEMS and ":" in spec:
        file, _, name = spec.rpartition(":")
        spec = f"{Path(file).resolve()}:{name}"
    weights = None if weights is None else Path(weights).resolve()
    return functools.partial(load_problem, spec, weights=weights)


def _from_file(spec: str) -> Problem:
    file, _, name = spec.rpartition(":")
    path = Path(file)
    if not name.isidentifier():
        raise LossatlasError(f"{spec!r}: {name!r} is not a function name")
    if path.suffix != ".py" or not path.is_file():
        raise LossatlasError(f"{spec!r}: no Python file {file!r}")
    module_name = f"lossatlas_spec_{abs(hash(path.resolve()))}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    sys.path.insert(0, str(path.resolve().parent))  # the file may import its neighbours
    try:
        loader.loader.exec_module(module)
    except Exception as exc:
        raise LossatlasError(f"importing {file} failed: {one_line(exc)}") from exc
    finally:
        sys.path.pop(0)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise LossatlasError(f"{file} has no function {name!r}")
    try:
        problem = fn()
    except LossatlasError:
        raise
    except Exception as exc:
        raise LossatlasError(f"{spec} raised {one_line(exc)}") from exc
    if not isinstance(problem, Problem):
        raise LossatlasError(f"{spec} returned {type(problem).__name__}, not a lossatlas.Problem")
    return problem


def with_weights(problem: Problem, weights: str | Path) -> Problem:
    """A copy of `problem` whose model has the state dict saved in `weights`."""
    path = Path(weights)
    state = read_state_dict(path)
    check_state(problem, state, str(path))
    module = copy.deepcopy(problem.module)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise LossatlasError(f"{path} does not fit the model: {one_line(exc)}") from exc
    return problem.with_weights(dict(module.named_parameters()), dict(module.named_buffers()))


def data_option(data: str) -> str | int:
    """`--data`: all, first_batch or a number of samples."""
    if data in ("all", "first_batch"):
        return data
    try:
        return int(data)
    except ValueError:
        raise LossatlasError(
            f"--data must be all, first_batch or a number of samples, got {data!r}"
        ) from None


def val_problem(spec: str, val: str | None) -> Problem | None:
    """`--val`: another SPEC, or `test` for a built-in problem's held-out split."""
    if val is None:
        return None
    if val == "test":
        if spec not in PROBLEMS:
            raise LossatlasError("--val test needs a built-in problem; give --val SPEC instead")
        try:
            return get_problem(spec, split="test")
        except TypeError:
            raise LossatlasError(f"{spec} has no held-out split; give --val SPEC") from None
    return load_problem(val)
