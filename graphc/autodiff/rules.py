"""Reverse-mode rules, one line per primitive, written in the DSL.

Each rule maps ``(g, out, *operands)`` — the cotangent of the node's output, the
node itself, and its operands — to one cotangent per operand (``None`` where
the operand is not differentiable).  Because the rules build ordinary IR nodes,
gradients are graphs like any other: they print, optimize, compile, and can be
differentiated again.
"""
from __future__ import annotations

from typing import Callable, Optional

from graphc import ops
from graphc.ir import dtypes
from graphc.ir.node import Node
from graphc.ir.shapes import Shape

Rule = Callable[..., tuple[Optional[Node], ...]]


def unbroadcast(g: Node, shape: Shape) -> Node:
    """Sum ``g`` back down to ``shape``: the adjoint of implicit broadcasting."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    summed = ops.sum(g, axes, keepdims=True)
    return ops.reshape(summed, shape) if summed.shape != shape else summed


def _keep_reduced(g: Node, x: Node, axes: tuple[int, ...], keepdims: bool) -> Node:
    """The reduction's cotangent with its reduced axes restored as size 1."""
    return g if keepdims else ops.reshape(g, tuple(1 if i in axes else d for i, d in enumerate(x.shape)))


# Ties: where several inputs attain a max (or min), they share the cotangent
# equally, for the reduction ``max`` and for the elementwise ``maximum`` and
# ``minimum`` alike (JAX's rule too), so each rule is symmetric in tied inputs.
# ``relu`` and ``abs`` have derivative 0 at 0.

def _max_rule(g: Node, out: Node, x: Node) -> tuple[Node]:
    axes, keep = out.attrs["axes"], out.attrs["keepdims"]
    hit = ops.cast(ops.equal(x, _keep_reduced(out, x, axes, keep)), x.dtype)
    return (hit * (_keep_reduced(g, x, axes, keep) / ops.sum(hit, axes, keepdims=True)),)


def _extremum_rule(wins: Callable[[Node, Node], Node]) -> Rule:
    """Rule of ``maximum`` (``wins`` = greater) or ``minimum`` (less): the winner takes the
    cotangent, and a tie halves it between the two (integer cotangents give ties nothing)."""
    def rule(g: Node, out: Node, a: Node, b: Node) -> tuple[Node, Node]:
        tie = ops.where(ops.equal(a, b), g * 0.5, 0) if dtypes.is_float(g.dtype) else ops.zeros_like(g)
        return (unbroadcast(ops.where(wins(a, b), g, tie), a.shape),
                unbroadcast(ops.where(wins(b, a), g, tie), b.shape))
    return rule


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(range(len(perm)), key=lambda i: perm[i]))


def _concat_rule(g: Node, out: Node, *xs: Node) -> tuple[Node, ...]:
    starts = [0]
    for x in xs:
        starts.append(starts[-1] + x.shape[0])
    return tuple(ops.slice(g, a, b) for a, b in zip(starts, starts[1:]))


def _slice_rule(g: Node, out: Node, x: Node) -> tuple[Node]:
    start, stop, n = out.attrs["start"], out.attrs["stop"], x.shape[0]
    pieces = [ops.zeros_like(ops.slice(x, 0, start))] if start else []
    pieces.append(g)
    if stop < n:
        pieces.append(ops.zeros_like(ops.slice(x, stop, n)))
    return (ops.concat(pieces) if len(pieces) > 1 else g,)


def _no_gradient(g: Node, out: Node, *operands: Node) -> tuple[None, ...]:
    return (None,) * len(operands)


u = unbroadcast

VJP: dict[str, Rule] = {
    "neg": lambda g, out, x: (-g,),
    "exp": lambda g, out, x: (g * out,),
    "log": lambda g, out, x: (g / x,),
    "tanh": lambda g, out, x: (g * (1 - out * out),),
    "sigmoid": lambda g, out, x: (g * out * (1 - out),),
    "relu": lambda g, out, x: (ops.where(x > 0, g, 0),),
    "sqrt": lambda g, out, x: (g / (2 * out),),
    "abs": lambda g, out, x: (g * ops.sign(x),),
    "sin": lambda g, out, x: (g * ops.cos(x),),
    "cos": lambda g, out, x: (-g * ops.sin(x),),
    "add": lambda g, out, a, b: (u(g, a.shape), u(g, b.shape)),
    "sub": lambda g, out, a, b: (u(g, a.shape), u(-g, b.shape)),
    "mul": lambda g, out, a, b: (u(g * b, a.shape), u(g * a, b.shape)),
    "div": lambda g, out, a, b: (u(g / b, a.shape), u(-g * out / b, b.shape)),
    "pow": lambda g, out, a, b: (u(g * b * a ** (b - 1), a.shape), u(g * out * ops.log(a), b.shape)),
    "maximum": _extremum_rule(ops.greater),
    "minimum": _extremum_rule(ops.less),
    "where": lambda g, out, c, a, b: (None, u(ops.where(c, g, 0), a.shape), u(ops.where(c, 0, g), b.shape)),
    "sum": lambda g, out, x: (ops.broadcast_to(_keep_reduced(g, x, out.attrs["axes"], out.attrs["keepdims"]),
                                               x.shape),),
    "max": _max_rule,
    "matmul": lambda g, out, a, b: (g @ b.T, a.T @ g),
    "reshape": lambda g, out, x: (ops.reshape(g, x.shape),),
    "transpose": lambda g, out, x: (ops.transpose(g, _inverse(out.attrs["perm"])),),
    "broadcast_to": lambda g, out, x: (u(g, x.shape),),
    "concat": _concat_rule,
    "slice": _slice_rule,
    "cast": lambda g, out, x: (ops.cast(g, x.dtype),),
    "stop_gradient": _no_gradient,
    "sign": _no_gradient,
    "one_hot": _no_gradient,
    "numel": _no_gradient,
}
for _op in ("lt", "le", "gt", "ge", "eq", "ne"):
    VJP[_op] = _no_gradient
