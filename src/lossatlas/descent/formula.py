"""Formulas in `x` and `y`, such as `"sin(x) * cos(y) + 0.1 * x^2"`, compiled safely to torch.

The text is parsed with `ast` and every node is checked against a whitelist (numbers, `x`, `y`,
`pi`, `e`, `+ - * / **`, `^` read as a power, and a few elementwise functions) before it is
turned into nested closures of torch operations. Nothing is ever passed to `eval` or `exec`.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lossatlas.errors import LossatlasError


def show(value: Any, limit: int = 60) -> str:
    """A short one-line rendering of a value for error messages."""
    text = " ".join(str(value).split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# --- formulas --------------------------------------------------------------------------------

_CALLS: dict[str, Callable[[Tensor], Tensor]] = {
    **{name: getattr(torch, name) for name in ("sin", "cos", "tan", "exp", "log", "sqrt", "abs")},
    **{name: getattr(torch, name) for name in ("tanh", "sinh", "cosh", "sigmoid")},
    "arctan": torch.atan,
    "atan": torch.atan,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_KINDS = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Lambda: "lambda",
    ast.IfExp: "conditional expression",
    ast.Compare: "comparison",
    (ast.BinOp, ast.UnaryOp, ast.BoolOp): "operator",
    (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp): "comprehension",
}
_MAX_LENGTH = 1000
_MAX_DEPTH = 100  # keeps the recursive compiler and the nested closures far from Python's limit
Compiled = Callable[[Tensor, Tensor], Tensor]


def _constant(value: float) -> Compiled:
    # A tensor on the input's device and in its dtype: Python floats would follow Python's rules
    # (1/0 raises, (-8)**(1/3) is complex) and constant formulas would come back on the CPU.
    return lambda x, y: torch.tensor(value, dtype=x.dtype, device=x.device)


def _compile_node(node: ast.AST, source: str, depth: int) -> Compiled:
    """Turn one whitelisted AST node into a closure of `(x, y)` built from torch operations."""
    piece = show(ast.get_source_segment(source, node))
    if depth > _MAX_DEPTH:
        raise LossatlasError(f"the formula nests deeper than {_MAX_DEPTH} levels")
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):
            kind = "string" if isinstance(node.value, (str, bytes)) else "constant"
            raise LossatlasError(f"{kind} {piece} is not allowed in a formula; use numbers")
        try:
            value = float(node.value)
        except OverflowError:
            raise LossatlasError(f"the number {piece} is too large") from None
        return _constant(value)
    if isinstance(node, ast.Name):
        if node.id == "x":
            return lambda x, y: x
        if node.id == "y":
            return lambda x, y: y
        if node.id in _CONSTANTS:
            return _constant(_CONSTANTS[node.id])
        raise LossatlasError(f"unknown name {piece} in the formula; use x, y, pi and e")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        inner = _compile_node(node.operand, source, depth + 1)
        return inner if isinstance(node.op, ast.UAdd) else (lambda x, y: -inner(x, y))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        op = _BINARY[type(node.op)]
        left = _compile_node(node.left, source, depth + 1)
        right = _compile_node(node.right, source, depth + 1)
        return lambda x, y: op(left(x, y), right(x, y))
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in _CALLS:
            allowed = ", ".join(sorted(_CALLS))
            callee = show(ast.get_source_segment(source, node.func))
            raise LossatlasError(f"cannot call {callee} in a formula; the functions are {allowed}")
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            raise LossatlasError(f"{piece}: {name} takes exactly one argument and no keywords")
        func, arg = _CALLS[name], _compile_node(node.args[0], source, depth + 1)
        return lambda x, y: func(arg(x, y))
    kind = next((k for t, k in _KINDS.items() if isinstance(node, t)), type(node).__name__)
    raise LossatlasError(f"{kind} {piece} is not allowed in a formula")


def compile_formula(formula: str) -> Callable[[Tensor], Tensor]:
    """Compile a formula in `x` and `y` into a vectorised torch function of points `(..., 2)`."""
    if len(formula) > _MAX_LENGTH:
        raise LossatlasError(
            f"the formula has {len(formula)} characters; the limit is {_MAX_LENGTH}"
        )
    # Users write powers as ^; Python would read it as XOR, with a lower precedence than +.
    source = formula.strip().replace("^", "**")
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        reason = " ".join(str(getattr(exc, "msg", None) or type(exc).__name__).split())
        raise LossatlasError(f"cannot parse formula {show(formula)} ({reason})") from None
    body = _compile_node(tree.body, source, 0)

    def fn(p: Tensor) -> Tensor:
        x, y = p[..., 0], p[..., 1]
        out = body(x, y)
        return out if out.shape == x.shape else out.expand(x.shape).clone()

    fn.__doc__ = f"`{formula.strip()}`, compiled from a formula string."
    return fn
