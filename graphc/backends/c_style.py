"""One C-style expression table for every C-like target: the fused C loops and the CUDA kernels.

Each elementwise primitive (and ``cast``) is one entry: given the result dtype
and the operands' C expressions, the C expression of its value.  The same text
compiles as C for the host and as CUDA C++ for the GPU (``expf``, ``tanhf``,
``fabsf``... exist in both), so an op's C meaning is written once.  The
arithmetic follows NumPy's where C can: IEEE float32/float64, NaN-propagating
max/relu/sign, sigmoid in the tanh form that never overflows.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from graphc.ir.node import Node

# The int types come from <stdint.h>; the CUDA prelude defines them where NVRTC has no headers.
C_TYPES = {"float32": "float", "float64": "double", "int32": "int32_t", "int64": "int64_t",
           "bool": "unsigned char", "uint64": "uint64_t"}

Expression = Callable[[str, Sequence[str]], str]  # (result dtype, operand expressions) → C expression


def literal(value: float, dtype: str) -> str:
    """A scalar constant as a C literal of its dtype."""
    if dtype == "float32":
        text = np.format_float_positional(np.float32(value), unique=True, trim="0")
        return f"{text}f" if "." in text else f"{text}.0f"
    if dtype == "float64":
        return repr(float(value))
    if dtype == "bool":
        return "1" if value else "0"
    return str(int(value))


def _math(fn: str, dtype: str) -> str:
    return fn + "f" if dtype == "float32" else fn


def _call(fn: str) -> Expression:
    return lambda d, a: f"{_math(fn, d)}({', '.join(a)})"


def _infix(symbol: str) -> Expression:
    return lambda d, a: f"({a[0]} {symbol} {a[1]})"


def _abs(d: str, a: Sequence[str]) -> str:
    return f"{_math('fabs', d)}({a[0]})" if d in ("float32", "float64") else f"(({a[0]} < 0) ? -{a[0]} : {a[0]})"


EXPRESSIONS: dict[str, Expression] = {
    "neg": lambda d, a: f"(-{a[0]})",
    # log and pow read their operands through daz: each target's prelude says whether subnormal
    # operands flush to zero (the C loops, which run with flush-to-zero) or not (CUDA, like NumPy).
    "exp": _call("exp"), "log": lambda d, a: f"{_math('log', d)}({_math('daz', d)}({a[0]}))",
    "tanh": _call("tanh"), "sqrt": _call("sqrt"), "sin": _call("sin"), "cos": _call("cos"),
    "pow": lambda d, a: f"{_math('pow', d)}({_math('daz', d)}({a[0]}), {_math('daz', d)}({a[1]}))",
    "sigmoid": lambda d, a: f"(({C_TYPES[d]})0.5 * {_math('tanh', d)}(({C_TYPES[d]})0.5 * {a[0]}) + ({C_TYPES[d]})0.5)",
    "relu": lambda d, a: f"(({a[0]} > 0 || {a[0]} != {a[0]}) ? {a[0]} : ({C_TYPES[d]})0)",
    "abs": _abs,
    "sign": lambda d, a: f"(({a[0]} != {a[0]}) ? {a[0]} : ({C_TYPES[d]})(({a[0]} > 0) - ({a[0]} < 0)))",
    "cast": lambda d, a: f"(({a[0]} != 0) ? 1 : 0)" if d == "bool" else f"(({C_TYPES[d]}){a[0]})",
    "add": _infix("+"), "sub": _infix("-"), "mul": _infix("*"), "div": _infix("/"),
    "lt": _infix("<"), "le": _infix("<="), "gt": _infix(">"), "ge": _infix(">="),
    "eq": _infix("=="), "ne": _infix("!="),
    # NumPy's rule: NaN wins, and of two equal values (0 and -0) the second.
    "maximum": lambda d, a: f"(({a[0]} > {a[1]} || {a[0]} != {a[0]}) ? {a[0]} : {a[1]})",
    "minimum": lambda d, a: f"(({a[0]} < {a[1]} || {a[0]} != {a[0]}) ? {a[0]} : {a[1]})",
    "where": lambda d, a: f"({a[0]} ? {a[1]} : {a[2]})",
}


def expression(node: Node, operands: Sequence[str]) -> str:
    """The C expression of ``node``'s value, given its operands' expressions."""
    return EXPRESSIONS[node.op](node.dtype, operands)
