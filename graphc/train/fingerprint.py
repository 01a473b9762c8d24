"""What a model is, as text and as a digest: the forward graph, the loss and the parameters.

A checkpoint records it, so a resume of a changed model (ReLU turned into tanh,
cross-entropy into MSE, a layer wider, another initializer) is refused instead
of mixing two models in one history; ranks of a data-parallel run compare it
before they train.  The text is the forward graph as ``graphc show --view
forward`` writes each statement, without source lines (editing a comment or
moving a line changes nothing), with each parameter's initializer.  A refusal
shows the first line where the two texts differ.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional

from graphc.ir.graph import structural_order
from graphc.ir.node import Node
from graphc.ir.printing import Namer, describe, inline_constant, type_str
from graphc.ir.registry import is_named_leaf


def model_text(loss: Node) -> str:
    """The model behind ``loss``, one line per node in an order that depends on the graph alone (not
    on which nodes an earlier model built first): leaves with their types, parameters with their
    initializers, and each computed node as ``show forward`` writes its statement."""
    name = Namer()
    lines = []
    for node in structural_order([loss]):
        if is_named_leaf(node.op):
            init = f" init {describe_initializer(node.meta.get('init'))}" if node.op == "param" else ""
            lines.append(f"{node.op} {node.name}: {type_str(node)}{init}")
        elif not inline_constant(node):
            statement, note, _ = describe(node, name, sites=False)
            lines.append(" ".join(f"{statement} {note}".split()))
    return "\n".join(lines)


def describe_initializer(init: Optional[Callable[..., Any]]) -> str:
    """An initializer by name and the numbers it closes over: ``he_normal``, ``normal(0.05)``."""
    if init is None:
        return "zeros"
    name = getattr(init, "__qualname__", type(init).__name__).split(".<locals>")[0]
    cells = [cell.cell_contents for cell in getattr(init, "__closure__", None) or ()]
    numbers = [repr(value) for value in cells if isinstance(value, (int, float))]
    return f"{name}({', '.join(numbers)})" if numbers else name


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def first_difference(then: str, now: str) -> tuple[str, str]:
    """The first line where two model texts differ (an empty string where one text has ended)."""
    old, new = then.splitlines(), now.splitlines()
    for a, b in zip(old, new):
        if a != b:
            return a, b
    return (old[len(new)] if len(old) > len(new) else ""), (new[len(old)] if len(new) > len(old) else "")
