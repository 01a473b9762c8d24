"""Which layer built a node: the grouping that pictures and equations of a model use.

A layer (an ``nn.Module``) marks the nodes it built when its call returns;
layers inside a container return first, so each node belongs to the innermost
layer that made it.  Gradient nodes belong to the layer of the forward node
whose rule made them.  The mark is a non-structural fact like a node's source
line: a node shared by two builders (hash-consing makes ``numel(x)`` one node
for a batch-norm layer and a loss alike, and for every model built on ``x``
while the first is alive) keeps the first one's.
"""
from __future__ import annotations

from typing import Optional

from graphc.ir.node import Node

LAYER_KEY = "layer"  # kept by rewrites: see graphc.ir.site.INHERITED_META


def mark_layer(name: str, output: Node, layer_input: Optional[Node]) -> None:
    """Mark every unmarked node between ``layer_input`` (excluded; None: down to the leaves) and
    ``output`` as built by ``name``."""
    stack = [output]
    while stack:
        node = stack.pop()
        if node is layer_input or LAYER_KEY in node.meta or (not node.inputs and not node.is_variable):
            continue  # constants and inputs belong to no layer: every graph shares them
        node.meta[LAYER_KEY] = name
        stack.extend(node.inputs)


def layer_of(node: Node) -> Optional[str]:
    """The layer that built ``node`` (for a gradient node, its forward node's layer); None outside layers."""
    if node.origin is not None:
        return node.origin.forward.meta.get(LAYER_KEY)
    return node.meta.get(LAYER_KEY)
