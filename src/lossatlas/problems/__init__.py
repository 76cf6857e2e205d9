"""Built-in problems: closed-form ones, and small networks that train in seconds."""

from __future__ import annotations

from lossatlas.problems.digits import digits_mlp
from lossatlas.problems.gpt import tiny_gpt
from lossatlas.problems.registry import PROBLEMS, get_problem, linreg, one_weight
from lossatlas.problems.resnet import resnet_digits
from lossatlas.problems.teacher import teacher_cnn
from lossatlas.problems.toys import tiny_7, xy_regression, xy_target

__all__ = [
    "PROBLEMS",
    "digits_mlp",
    "get_problem",
    "linreg",
    "one_weight",
    "resnet_digits",
    "teacher_cnn",
    "tiny_7",
    "tiny_gpt",
    "xy_regression",
    "xy_target",
]
