"""The value of a printed expression, computed from the values of its symbols.

This is how every equation the view prints is checked against the graph: its
right-hand side is evaluated here from the graph's values of the symbols it
names and compared with the graph's value of its left-hand side.  Values are
batch-major, as the graph holds them (a row per example), while the printed
math is per example: ``W δ`` is ``δ @ Wᵀ``, ``Σₙ z δᵀ`` is ``zᵀ @ δ``, ``Σₙ e``
a sum over the rows, ``Σₖ e`` one over an example's features.  The functions a
:class:`~graphc.explain.expressions.Call` may name are written here with plain
NumPy, independently of the primitives' own implementations.
"""
from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Mapping

import numpy as np

from graphc.explain.expressions import (Call, Expr, Had, Indicator, Lin, MatVec, Norm, Num, Outer, Power, Quotient,
                                        Square, Sym, Total)


def _softmax(u: np.ndarray) -> np.ndarray:
    e = np.exp(u - u.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh, "relu": lambda u: np.maximum(u, 0), "sigmoid": lambda u: 1 / (1 + np.exp(-u)),
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "softmax": _softmax,
}
RELATIONS = {">": np.greater, "≥": np.greater_equal, "<": np.less, "≤": np.less_equal}


class NoValue(KeyError):
    """An expression names a symbol (or function) with no value given."""


def value(expr: Expr, env: Mapping[Expr, Any], n: int) -> Any:
    """``expr`` for a batch of ``n`` rows, its symbols (and named factors) taking ``env``'s values."""
    def ev(e: Expr) -> Any:
        return value(e, env, n)

    if expr in env:
        return env[expr]
    if isinstance(expr, Sym):
        raise NoValue(f"no value for the symbol {expr.text}")
    if isinstance(expr, Num):
        return float(expr.value)
    if isinstance(expr, Lin):
        return sum(float(c.value) * float(n) ** c.per_n * ev(e) for c, e in expr.terms)
    if isinstance(expr, Had):
        return functools.reduce(operator.mul, [ev(f) for f in expr.factors])
    if isinstance(expr, MatVec):
        matrix = ev(expr.matrix)
        return ev(expr.vector) @ (matrix if expr.transposed else matrix.T)
    if isinstance(expr, Total):
        if isinstance(expr.body, Outer):
            return ev(expr.body.left).T @ ev(expr.body.right)
        body = ev(expr.body)
        return body.sum(axis=0) if expr.index == "n" else body.sum(axis=-1)
    if isinstance(expr, Quotient):
        return ev(expr.numerator) / ev(expr.denominator)
    if isinstance(expr, Square):
        return ev(expr.body) ** 2
    if isinstance(expr, Power):
        return ev(expr.body) ** float(expr.exponent)
    if isinstance(expr, Norm):
        return np.sum(ev(expr.body) ** 2)
    if isinstance(expr, Indicator):
        return RELATIONS[expr.relation](ev(expr.left), ev(expr.right)).astype(np.float64)
    if isinstance(expr, Call) and expr.name in FUNCTIONS and len(expr.args) == 1:
        return FUNCTIONS[expr.name](ev(expr.args[0]))
    raise NoValue(f"no value for {expr!r}")
