"""Specialization: replace general ops by cheaper equivalents for the CPU.

These change rounding slightly (x / c and x · (1/c) differ in the last bit), so
they run after canonicalization and stabilization, and the pass tests compare
against the interpreter with a float tolerance.
"""
from __future__ import annotations

from typing import Optional

from graphc import ops
from graphc.ir import dtypes
from graphc.ir.node import Node
from graphc.passes.rewrite import matches
from graphc.passes.patterns import scalar_value


@matches("div")
def divide_by_constant(n: Node) -> Optional[Node]:
    """x / c → x · (1/c): a multiply is several times cheaper than a divide."""
    if n.op == "div" and dtypes.is_float(n.dtype):
        c = scalar_value(n.inputs[1])
        if c not in (None, 0.0) and n.inputs[1].ndim == 0:
            return ops.mul(n.inputs[0], ops.constant(1.0 / c, n.dtype))
    return None


@matches("pow")
def power_special_cases(n: Node) -> Optional[Node]:
    """x ** 0.5 → sqrt(x); x ** -1 → 1 / x; x ** 2 → x · x."""
    if n.op != "pow" or n.inputs[1].ndim != 0:
        return None
    x, c = n.inputs[0], scalar_value(n.inputs[1])
    if x.shape != n.shape:
        return None
    if c == 0.5:
        return ops.sqrt(x)
    if c == -1.0:
        return ops.div(ops.constant(1, n.dtype), x)
    if c == 2.0:
        return ops.mul(x, x)
    return None


RULES = [divide_by_constant, power_special_cases]
