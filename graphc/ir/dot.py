"""DOT export, for drawing a graph with Graphviz (``dot -Tpng``).

Forward nodes are boxes; gradient nodes (those with an origin) are shaded, so
the backward pass stands out as the mirror image of the forward one.
"""
from __future__ import annotations

from graphc.ir.graph import toposort
from graphc.ir.printing import Namer, Outputs, _as_named, type_str


def to_dot(outputs: Outputs, title: str = "graph") -> str:
    named = _as_named(outputs)
    order = toposort(list(named.values()))
    name = Namer()
    ids = {node: f"n{i}" for i, node in enumerate(order)}
    lines = [f'digraph "{title}" {{', "  rankdir=TB;", '  node [shape=box, fontname="monospace", fontsize=10];']
    for node in order:
        label = f"{name(node)} = {node.op}\\n{type_str(node)}" if node.name is None else f"{node.name}\\n{type_str(node)}"
        style = ', style=filled, fillcolor="#dde8f7"' if node.origin is not None else ""
        if node.op in ("input", "param", "state"):
            style = ', shape=ellipse'
        lines.append(f'  {ids[node]} [label="{label}"{style}];')
        for operand in node.inputs:
            lines.append(f"  {ids[operand]} -> {ids[node]};")
    for out_name, node in named.items():
        lines.append(f'  "out:{out_name}" [shape=plaintext]; {ids[node]} -> "out:{out_name}";')
    lines.append("}")
    return "\n".join(lines)
