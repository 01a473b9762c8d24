"""How a primitive becomes one line of NumPy: the rule type, its helpers, and the lookup.

A lowering rule gets the operands' source expressions, the node, the code
context (symbols, constants) and the destination buffer expression (or None to
let NumPy allocate), and returns the expression.  Each op's rule is registered
beside the op's definition (:mod:`graphc.primitives`) under the backend name
``numpy``.  Layout ops that NumPy does as views (transpose, broadcast, slice)
ignore ``out``: the memory planner never gives them a buffer.  A reshape gets
one when its operand is strided (the plan makes it a copy), and then copies
into it.
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence

from graphc.ir.node import Node
from graphc.ir.registry import lowering
from graphc.ir.site import at_site


class Context(Protocol):
    def shape(self, node_shape: tuple) -> str: ...
    def dtype(self, name: str) -> str: ...


Lower = Callable[[Sequence[str], Node, Context, Optional[str]], str]


def out_arg(out: Optional[str]) -> str:
    return f", out={out}" if out else ""


def site_arg(node: Node) -> str:
    """The user's line as an argument, for helpers that check fed values at run time."""
    return f", site={at_site(node.site)!r}" if node.site is not None else ""


def call(fn: str) -> Lower:
    """``fn(operands..., out=...)``: a ufunc, or a helper of :mod:`graphc.lowering.numpy_helpers` (``k.``)."""
    return lambda a, n, c, out: f"{fn}({', '.join(a)}{out_arg(out)})"


def lower(node: Node) -> Lower:
    rule = lowering(node.op, "numpy")
    if rule is None:
        raise KeyError(f"no NumPy lowering for {node.op}")
    return rule
