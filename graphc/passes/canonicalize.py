"""Canonicalization: algebraic identities, constant folding, layout clean-up.

Autodiff writes gradients mechanically — ``1.0 * 1e-4``, a broadcast
immediately reshaped, a reshape to the shape a node already has — and these
rules tidy that into what a person would write.  Two rules change results in
the last bits, and say so: ``scalar_out_of_sum`` multiplies once after summing
(s·Σx rounds differently from Σ s·x, by a few units in the last place), and
``identity_arithmetic`` drops ``x + 0``, which keeps a -0 that IEEE arithmetic
would turn into +0.  Every other rule preserves values exactly.  The tests check
each rule for the value it produces on its pattern.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from graphc import ops
from graphc.ir.node import Node, make
from graphc.ir.registry import COLLECTIVE, ELEMENTWISE, RANDOM, UNARY
from graphc.ir.shapes import ShapeMismatch, broadcast
from graphc.passes.rewrite import matches, ops_of_kind, rebuild
from graphc.passes.patterns import all_constant, is_const, is_elementwise, static_numel

_FOLD_LIMIT = 64  # fold small constants only: a folded 784x256 broadcast would bloat the program


def fold_constants(n: Node) -> Optional[Node]:
    if not all_constant(n) or n.kind in (RANDOM, COLLECTIVE) or n.op == "broadcast_to":
        return None
    size = static_numel(n)
    if size is None or size > _FOLD_LIMIT:
        return None
    value = n.primitive.impl(*(i.attrs["value"].array for i in n.inputs), **n.attrs)
    return ops.constant(np.asarray(value, dtype=n.dtype), n.dtype)


@matches("stop_gradient")
def drop_stop_gradient(n: Node) -> Optional[Node]:
    """After differentiation, stop_gradient is the identity."""
    return n.inputs[0] if n.op == "stop_gradient" else None


def _same_type(a: Node, n: Node) -> Optional[Node]:
    return a if a.shape == n.shape and a.dtype == n.dtype else None


@matches("add", "sub", "mul", "div", "pow")
def identity_arithmetic(n: Node) -> Optional[Node]:
    """x + 0, 0 + x, x - 0, x * 1, 1 * x, x / 1, x ** 1 → x (when shapes agree).

    Exact except for the sign of zero: -0 + 0 is +0 in IEEE arithmetic, and stays -0 here."""
    if n.op not in ("add", "sub", "mul", "div", "pow"):
        return None
    a, b = n.inputs
    unit = 0.0 if n.op in ("add", "sub") else 1.0
    if is_const(b, unit):
        return _same_type(a, n)
    if n.op in ("add", "mul") and is_const(a, unit):
        return _same_type(b, n)
    return None


@matches("neg")
def double_negation(n: Node) -> Optional[Node]:
    return n.inputs[0].inputs[0] if n.op == "neg" and n.inputs[0].op == "neg" else None


@matches("add", "sub")
def subtract_negation(n: Node) -> Optional[Node]:
    """a - (-b) → a + b;  a + (-b) → a - b."""
    if n.op in ("add", "sub") and n.inputs[1].op == "neg":
        return (ops.sub if n.op == "add" else ops.add)(n.inputs[0], n.inputs[1].inputs[0])
    return None


@matches("reshape", "broadcast_to", "transpose")
def trivial_layout(n: Node) -> Optional[Node]:
    """A reshape or broadcast to the operand's own shape, an identity transpose."""
    if n.op in ("reshape", "broadcast_to") and n.inputs[0].shape == n.shape:
        return n.inputs[0]
    if n.op == "transpose" and n.attrs["perm"] == tuple(range(n.ndim)):
        return n.inputs[0]
    return None


@matches("reshape", "broadcast_to", "transpose")
def merge_layout(n: Node) -> Optional[Node]:
    """reshape∘reshape → reshape; transpose∘transpose → transpose; broadcast∘broadcast → broadcast."""
    if not n.inputs or n.inputs[0].op != n.op:
        return None
    inner = n.inputs[0].inputs[0]
    if n.op == "reshape":
        return ops.reshape(inner, n.shape)
    if n.op == "broadcast_to":
        return ops.broadcast_to(inner, n.shape)
    if n.op == "transpose":
        inner_perm, outer = n.inputs[0].attrs["perm"], n.attrs["perm"]
        return ops.transpose(inner, tuple(inner_perm[p] for p in outer))
    return None


@matches(*ops_of_kind(*ELEMENTWISE))
def implicit_broadcast(n: Node) -> Optional[Node]:
    """An elementwise op broadcasts by itself: feed it what a broadcast_to operand broadcasts."""
    if not is_elementwise(n):
        return None
    for i, operand in enumerate(n.inputs):
        if operand.op != "broadcast_to":
            continue
        inputs = list(n.inputs)
        inputs[i] = operand.inputs[0]
        try:
            if broadcast(*(x.shape for x in inputs)) == n.shape:
                return _rebuild(n, inputs)
        except ShapeMismatch:
            continue
    return None


def _rebuild(n: Node, inputs: list[Node]) -> Node:
    return rebuild(n, inputs)


@matches(*ops_of_kind(UNARY))
def unary_before_broadcast(n: Node) -> Optional[Node]:
    """f(broadcast(x)) → broadcast(f(x)): compute on the small operand."""
    if n.kind == "unary" and n.inputs[0].op == "broadcast_to":
        source = n.inputs[0].inputs[0]
        return ops.broadcast_to(_rebuild(n, [source]), n.shape)
    return None


@matches("reshape")
def reshape_of_broadcast_scalar(n: Node) -> Optional[Node]:
    """reshape(broadcast(s)) of a single value s → broadcast(reshape(s))."""
    if n.op == "reshape" and n.inputs[0].op == "broadcast_to":
        source = n.inputs[0].inputs[0]
        if all(d == 1 for d in source.shape):
            return ops.broadcast_to(ops.reshape(source, (1,) * n.ndim), n.shape)
    return None


@matches("mul")
def multiply_by_ones(n: Node) -> Optional[Node]:
    """x * broadcast(1) → broadcast(x): the ones only carried a shape."""
    if n.op != "mul":
        return None
    for keep, ones in (n.inputs, reversed(n.inputs)):
        if ones.op == "broadcast_to" and is_const(ones.inputs[0], 1.0):
            try:
                return ops.broadcast_to(keep, n.shape) if broadcast(keep.shape, n.shape) == n.shape else None
            except ShapeMismatch:
                return None
    return None


@matches("sum")
def scalar_out_of_sum(n: Node) -> Optional[Node]:
    """Σ (s · x) → s · Σ x for a single value s: one multiply on the reduced result."""
    if n.op != "sum" or n.inputs[0].op != "mul":
        return None
    a, b = n.inputs[0].inputs
    for s, x in ((a, b), (b, a)):
        if all(d == 1 for d in s.shape) and x.shape == n.inputs[0].shape:
            total = ops.sum(x, n.attrs["axes"], n.attrs["keepdims"])
            return ops.mul(ops.reshape(s, (1,) * total.ndim), total)
    return None


@matches("neg")
def negate_scalar_factor(n: Node) -> Optional[Node]:
    """-(s · x) → (-s) · x and -(c / x) → (-c) / x for a single value s or constant c:
    the negation moves onto the one-element operand."""
    if n.op != "neg" or n.inputs[0].op not in ("mul", "div"):
        return None
    inner = n.inputs[0]
    a, b = inner.inputs
    if all(d == 1 for d in a.shape) and (inner.op == "mul" or a.op == "constant"):
        return _rebuild(inner, [ops.neg(a), b])
    if inner.op == "mul" and all(d == 1 for d in b.shape):
        return _rebuild(inner, [a, ops.neg(b)])
    return None


@matches(*ops_of_kind(UNARY))
def unary_before_reshape(n: Node) -> Optional[Node]:
    """f(reshape(x)) → reshape(f(x)), so chains of reshapes can merge."""
    if n.kind == "unary" and n.inputs[0].op == "reshape":
        return ops.reshape(_rebuild(n, [n.inputs[0].inputs[0]]), n.shape)
    return None


@matches("reshape")
def drop_kept_dims(n: Node) -> Optional[Node]:
    """reshape(sum(x, keepdims=True)) to the reduced shape → sum(x): one node, no reshape."""
    if n.op == "reshape" and n.inputs[0].op in ("sum", "max") and n.inputs[0].attrs["keepdims"]:
        reduced = n.inputs[0]
        axes = reduced.attrs["axes"]
        if n.shape == tuple(d for i, d in enumerate(reduced.shape) if i not in axes):
            return _rebuild_attrs(reduced, keepdims=False)
    return None


def _rebuild_attrs(n: Node, **changes: object) -> Node:
    return make(n.op, n.inputs, **{**n.attrs, **changes})


@matches("numel")
def numel_from_an_input(n: Node) -> Optional[Node]:
    """A symbolic size read off a fed input, not off a computed value: the count
    depends only on the shape, and reading it from the loss would keep the forward
    pass alive in a graph that only needs the gradient."""
    if n.op != "numel" or n.inputs[0].op == "input":
        return None
    x = n.inputs[0]
    dims = [x.shape[a] for a in n.attrs["axes"]]
    static = int(np.prod([d for d in dims if isinstance(d, int)]))
    factors = []
    for symbol in (d for d in dims if isinstance(d, str)):
        source = _input_with(x, symbol)
        if source is None:
            return None
        factors.append(ops.numel(source, source.shape.index(symbol), n.dtype))
    total = factors[0]
    for f in factors[1:]:
        total = total * f
    return total if static == 1 else total * float(static)


def _input_with(x: Node, symbol: str) -> Optional[Node]:
    stack, seen = [x], set()
    while stack:
        node = stack.pop()
        if node.op == "input" and symbol in node.shape:
            return node
        seen.add(node)
        stack.extend(i for i in node.inputs if i not in seen)
    return None


RULES = [fold_constants, drop_stop_gradient, identity_arithmetic, double_negation, subtract_negation,
         trivial_layout, merge_layout, implicit_broadcast, unary_before_broadcast,
         reshape_of_broadcast_scalar, multiply_by_ones, scalar_out_of_sum, negate_scalar_factor,
         unary_before_reshape, numel_from_an_input, drop_kept_dims]
