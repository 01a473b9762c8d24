"""Reverse-mode differentiation over the IR: gradients are new IR nodes.

Only nodes on a path from a ``wrt`` node to the output get a cotangent, so
asking for the gradient of one weight does not build the gradients of the
input data.  Every node a rule builds records the forward node and the rule
(see :mod:`graphc.ir.site`), which is what makes the gradient graph explainable.
"""
from __future__ import annotations

from typing import Optional, Sequence

from graphc import ops
from graphc.errors import DTypeError, ShapeError
from graphc.ir import dtypes
from graphc.ir.graph import depends_on, toposort
from graphc.ir.node import Node
from graphc.ir.registry import PRIMITIVES
from graphc.ir.shapes import fmt
from graphc.ir.site import building_gradient_of


def grad(output: Node, wrt: Sequence[Node], seed: Optional[Node] = None) -> list[Node]:
    """d output / d wrt for each ``wrt`` node, as graph nodes of the wrt nodes' shapes.

    ``output`` must be a scalar unless ``seed`` (the output's cotangent) is given.
    """
    if seed is None:
        if output.shape != ():
            raise ShapeError(f"grad: the output must be a scalar, got {fmt(output.shape)}; "
                             f"sum it or pass seed=")
        seed = ops.constant(1, output.dtype)
    for w in wrt:
        if not dtypes.is_float(w.dtype):
            raise DTypeError(f"grad: cannot differentiate with respect to {w!r}: not a float")
    relevant = depends_on([output], wrt)
    cotangents: dict[Node, Node] = {output: seed} if output in relevant else {}
    for node in reversed(toposort([output])):
        g = cotangents.get(node)
        if g is None or not node.inputs:
            continue
        with building_gradient_of(node, node.op):
            operand_grads = PRIMITIVES[node.op].vjp(g, node, *node.inputs)
        for operand, og in zip(node.inputs, operand_grads):
            if og is None or operand not in relevant:
                continue
            if operand in cotangents:
                with building_gradient_of(operand, "fan-out sum"):
                    og = cotangents[operand] + og
            cotangents[operand] = og
    return [cotangents[w] if w in cotangents else ops.zeros_like(w) for w in wrt]
