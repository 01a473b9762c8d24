"""Helpers the reverse-mode rules share.

The rules themselves sit beside each primitive's definition
(:mod:`graphc.primitives`).  A rule maps ``(g, out, *operands)`` — the
cotangent of the node's output, the node itself, and its operands — to one
cotangent per operand (``None`` where the operand is not differentiable).
Because the rules build ordinary IR nodes, gradients are graphs like any other:
they print, optimize, compile, and can be differentiated again.
"""
from __future__ import annotations

from typing import Callable, Optional

from graphc import ops
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


def keep_reduced(g: Node, x: Node, axes: tuple[int, ...], keepdims: bool) -> Node:
    """A reduction's cotangent with its reduced axes restored as size 1."""
    return g if keepdims else ops.reshape(g, tuple(1 if i in axes else d for i, d in enumerate(x.shape)))


def no_gradient(g: Node, out: Node, *operands: Node) -> tuple[None, ...]:
    return (None,) * len(operands)
