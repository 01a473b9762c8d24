"""Small predicates the rewrite rules share."""
from __future__ import annotations

from typing import Optional

import numpy as np

from graphc.ir.node import Node
from graphc.ir.registry import ELEMENTWISE


def scalar_value(node: Node) -> Optional[float]:
    """The value of a constant with one element (any shape), else None."""
    if node.op != "constant" or node.attrs["value"].array.size != 1:
        return None
    return float(node.attrs["value"].array.reshape(()))


def is_const(node: Node, value: float) -> bool:
    return scalar_value(node) == value


def is_elementwise(node: Node) -> bool:
    return node.kind in ELEMENTWISE


def all_constant(node: Node) -> bool:
    return bool(node.inputs) and all(i.op == "constant" for i in node.inputs)


def static_numel(node: Node) -> Optional[int]:
    if all(isinstance(d, int) for d in node.shape):
        return int(np.prod(node.shape, dtype=np.int64))
    return None
