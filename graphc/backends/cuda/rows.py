"""Which nodes the CUDA backend fuses, beyond elementwise ops of one shape: whole rows.

A softmax and its cross-entropy are elementwise ops on [N, C] and [N, 1] values
with reductions over C between them; as separate kernels that is a dozen
launches, each reading and writing the batch.  With C small (10 classes), one
thread can own a row: the CUDA backend lets such nodes form one group, and the
code generator runs the group as one kernel with a thread per row
(:meth:`graphc.backends.cuda.codegen._Lowering.rows`).

A row value is [R, C] with a static C of at most ``MAX_ROW``, [R, 1], or [R];
the members of one group share R.  A 1-D [R] value never feeds a 2-D member of
its group: NumPy would broadcast it along the columns, not the rows.
"""
from __future__ import annotations

from graphc.backends.c_style import supports
from graphc.ir.node import Node

MAX_ROW = 64  # columns a thread keeps in registers


def row_shaped(node: Node) -> bool:
    shape = node.shape
    if len(shape) == 1:
        return True
    return len(shape) == 2 and isinstance(shape[1], int) and shape[1] <= MAX_ROW


def fusable(node: Node) -> bool:
    """Elementwise ops, and the row ops a row kernel computes: reductions over a row, one-hot rows."""
    if supports(node.op):
        return True
    if node.op in ("sum", "max"):
        x = node.inputs[0]
        return x.ndim == 2 and row_shaped(x) and tuple(node.attrs["axes"]) == (1,)
    if node.op == "one_hot":
        return node.ndim == 2 and row_shaped(node)
    return False


def joins(operand: Node, node: Node) -> bool:
    if operand.shape == node.shape and supports(node.op):
        return True
    return (operand.ndim > 0 and node.ndim > 0 and row_shaped(operand) and row_shaped(node)
            and operand.shape[0] == node.shape[0] and not (operand.ndim == 1 and node.ndim == 2))


def is_row_group(members: list[Node]) -> bool:
    """Does this group need a thread per row (mixed shapes, or row ops), not one per element?"""
    return any(not supports(m.op) or m.shape != members[0].shape for m in members)
