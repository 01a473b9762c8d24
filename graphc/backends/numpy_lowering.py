"""How each primitive becomes one line of NumPy.

A lowering rule gets the operands' source expressions, the node, the code
context (symbols, constants) and the destination buffer expression (or None to
let NumPy allocate), and returns the expression.  Layout ops that NumPy does as
views (transpose, broadcast, slice) ignore ``out``: the memory planner never
gives them a buffer.  A reshape gets one when its operand is strided (the plan
makes it a copy), and then copies into it.
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence

from graphc.ir.node import Node
from graphc.ir.site import at_site


class Context(Protocol):
    def shape(self, node_shape: tuple) -> str: ...
    def dtype(self, name: str) -> str: ...


Lower = Callable[[Sequence[str], Node, Context, Optional[str]], str]


def _out(out: Optional[str]) -> str:
    return f", out={out}" if out else ""


def _site(node: Node) -> str:
    """The user's line as an argument, for helpers that check fed values at run time."""
    return f", site={at_site(node.site)!r}" if node.site is not None else ""


def _call(fn: str) -> Lower:
    return lambda a, n, c, out: f"{fn}({', '.join(a)}{_out(out)})"


def _pow(a: Sequence[str], n: Node, c: Context, out: Optional[str]) -> str:
    exponent = n.inputs[1]
    if exponent.op == "constant" and exponent.ndim == 0 and float(exponent.attrs["value"].array) == 2.0:
        return f"np.square({a[0]}{_out(out)})"
    return f"np.power({a[0]}, {a[1]}{_out(out)})"


def _reduce(fn: str) -> Lower:
    def lower(a: Sequence[str], n: Node, c: Context, out: Optional[str]) -> str:
        keep = ", keepdims=True" if n.attrs["keepdims"] else ""
        # np.sum widens int32 to int64 unless told: keep the IR's dtype.
        dtype = f", dtype={c.dtype(n.dtype)}" if fn == "np.sum" and n.dtype == "int32" else ""
        return f"{fn}({a[0]}, axis={n.attrs['axes']}{keep}{dtype}{_out(out)})"
    return lower


def _transpose(a: Sequence[str], n: Node, c: Context, out: Optional[str]) -> str:
    perm = n.attrs["perm"]
    return f"{a[0]}.T" if perm == (1, 0) else f"{a[0]}.transpose({perm})"


def _reshape(a: Sequence[str], n: Node, c: Context, out: Optional[str]) -> str:
    if out:  # a planned copy: the buffer, viewed in the operand's shape, receives it in C order
        return f"np.copyto({out}.reshape({c.shape(n.inputs[0].shape)}), {a[0]})"
    return f"{a[0]}.reshape({c.shape(n.shape)})"


def _numel(a: Sequence[str], n: Node, c: Context, out: Optional[str]) -> str:
    size = " * ".join(f"{a[0]}.shape[{ax}]" for ax in n.attrs["axes"])
    return f"{c.dtype(n.dtype)}({size})"


LOWERING: dict[str, Lower] = {
    "neg": _call("np.negative"), "exp": _call("np.exp"), "log": _call("np.log"), "tanh": _call("np.tanh"),
    "sigmoid": _call("k.sigmoid"), "sqrt": _call("np.sqrt"), "abs": _call("np.abs"), "sign": _call("np.sign"),
    "sin": _call("np.sin"), "cos": _call("np.cos"),
    "relu": lambda a, n, c, out: f"np.maximum({a[0]}, 0{_out(out)})",
    "add": _call("np.add"), "sub": _call("np.subtract"), "mul": _call("np.multiply"), "div": _call("np.divide"),
    "pow": _pow, "maximum": _call("np.maximum"), "minimum": _call("np.minimum"),
    "lt": _call("np.less"), "le": _call("np.less_equal"), "gt": _call("np.greater"),
    "ge": _call("np.greater_equal"), "eq": _call("np.equal"), "ne": _call("np.not_equal"),
    "where": _call("k.where"),
    "sum": _reduce("np.sum"), "max": _reduce("np.max"),
    "matmul": _call("np.matmul"),
    "reshape": _reshape,
    "transpose": _transpose,
    "broadcast_to": lambda a, n, c, out: f"np.broadcast_to({a[0]}, {c.shape(n.shape)})",
    "concat": lambda a, n, c, out: f"np.concatenate(({', '.join(a)},){_out(out)})",
    "slice": lambda a, n, c, out: f"{a[0]}[{n.attrs['start']}:{n.attrs['stop']}]",
    "one_hot": lambda a, n, c, out: f"k.one_hot({a[0]}, {n.attrs['depth']}, {c.dtype(n.dtype)}{_out(out)}"
                                    f"{_site(n)})",
    "cast": lambda a, n, c, out: f"k.cast({a[0]}, {c.dtype(n.dtype)}{_out(out)})",
    "stop_gradient": lambda a, n, c, out: a[0],
    "numel": _numel,
    "normal": lambda a, n, c, out: f"rng.standard_normal({c.shape(n.shape)}, dtype={c.dtype(n.dtype)}{_out(out)})",
    "uniform": lambda a, n, c, out: f"rng.random({c.shape(n.shape)}, dtype={c.dtype(n.dtype)}{_out(out)})",
}
