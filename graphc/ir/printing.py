"""The text form of a graph: one line per node, in the spirit of a jaxpr.

    %3  f32[N,256] = add %2 dense0.b                   mlp.py:9
    %12 f32[N,256] = where %11 %10 0.0   ∂%4 relu      mlp.py:10

Leaves print by name and scalar constants inline, so a line reads like the
expression the user wrote.  Gradient nodes carry ``∂%k rule``: the forward node
whose rule built them — the link from the gradient graph back to the model.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence, Union

from graphc.ir import dtypes
from graphc.ir.graph import toposort
from graphc.ir.node import Node
from graphc.ir.registry import is_named_leaf
from graphc.ir.shapes import fmt

Outputs = Union[Mapping[str, Node], Sequence[Node]]


def type_str(node: Node) -> str:
    return f"{dtypes.SHORT[node.dtype]}{fmt(node.shape)}"


def _attr_str(node: Node) -> str:
    hidden = {"name", "shape", "dtype", "uid", "key", "value"}
    if node.op in ("reshape", "broadcast_to", "normal", "uniform"):
        hidden.discard("shape")
    if node.op in ("cast", "one_hot"):
        hidden.discard("dtype")
    parts = []
    for k, v in node.attrs.items():
        if k in hidden or v is False:
            continue
        if k == "shape":
            v = fmt(v)
        parts.append(k if v is True else f"{k}={v}")
    return " ".join(parts)


class Namer:
    """Names nodes for printing: leaves by name, scalar constants by value, the rest %k."""

    def __init__(self) -> None:
        self.names: dict[Node, str] = {}
        self.count = 0

    def __call__(self, node: Node) -> str:
        if node not in self.names:
            if inline_constant(node):
                self.names[node] = str(node.attrs["value"].array)
            elif node.name is not None:
                self.names[node] = node.name
            else:
                self.names[node] = f"%{self.count}"
                self.count += 1
        return self.names[node]


def inline_constant(node: Node) -> bool:
    """Single-value constants print as their value, in place."""
    return node.op == "constant" and node.attrs["value"].array.size == 1



def _as_named(outputs: Outputs) -> dict[str, Node]:
    if isinstance(outputs, Mapping):
        return dict(outputs)
    return {f"out{i}": n for i, n in enumerate(outputs)}


def describe(node: Node, name: Namer, sites: bool = True) -> tuple[str, str, str]:
    """One node as (statement, gradient provenance, user's line)."""
    lhs = f"{name(node):<4} {type_str(node)}"
    attrs = _attr_str(node)
    rhs = " ".join([node.op] + [name(i) for i in node.inputs] + ([attrs] if attrs else []))
    note = ""
    if node.origin is not None:
        forward = node.origin.forward
        note = f"∂{name(forward) if forward in name.names else forward.op} {node.origin.rule}"
    where = node.site.short() if sites and node.site else ""
    return f"{lhs} = {rhs}", note, where


_ALIGNED_WIDTH = 100  # the widest text a column is padded to: longer ones run on into the next column


def _column_width(texts: Iterable[str]) -> int:
    """The width a column is padded to: its widest text, leaving out texts wider than
    ``_ALIGNED_WIDTH`` (the concatenation of a deep model's gradients lists thousands of
    operands), which would pad every line of the listing to their width."""
    return max((len(t) for t in texts if len(t) <= _ALIGNED_WIDTH), default=0)


def format_graph(outputs: Outputs, title: str = "graph", sites: bool = True) -> str:
    named = _as_named(outputs)
    order = toposort(list(named.values()))
    name = Namer()
    leaves = [n for n in order if is_named_leaf(n.op)]
    lines = [title + "(" + ", ".join(f"{n.name}: {type_str(n)}" for n in leaves if n.op == "input") + ")"]
    for kind in ("param", "state"):
        held = [f"{n.name}: {type_str(n)}" for n in leaves if n.op == kind]
        if held:
            lines.append(f"  {kind}s " + ", ".join(held))
    body = [describe(node, name, sites) for node in order
            if not (is_named_leaf(node.op) or inline_constant(node))]
    width = _column_width(a for a, _, _ in body)
    note_width = _column_width(b for _, b, _ in body)
    for stmt, note, where in body:
        lines.append(f"  {stmt:<{width}}   {note:<{note_width}}   {where}".rstrip())
    lines.append("  return " + ", ".join(f"{k}={name(v)}" for k, v in named.items()))
    return "\n".join(lines)
