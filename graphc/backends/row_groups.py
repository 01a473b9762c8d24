"""Whole rows as one loop: which nodes a backend may fuse beyond elementwise ops of one shape.

A softmax and its cross-entropy are elementwise ops on [N, C] and [N, 1] values
with reductions over C between them; run op by op that is a dozen calls (or
kernel launches), each reading and writing the batch.  With C small (10
classes), one loop iteration (a CUDA thread) can own a row: both backends let
such nodes form one group, and run it with a row per iteration — the CUDA code
generator as a thread per row (:meth:`graphc.backends.cuda.codegen._Lowering.rows`),
the C loops as a loop over rows (:func:`graphc.backends.cpu.c_loops.row_kernel_source`).

A row value is [R, C] with a static C of at most ``MAX_ROW``, [R, 1], or [R];
the members of one group share R.  A 1-D [R] value never feeds a 2-D member of
its group: NumPy would broadcast it along the columns, not the rows.
"""
from __future__ import annotations

from graphc.lowering.c_expressions import supports
from graphc.ir.node import Node

MAX_ROW = 64  # columns a thread keeps in registers


def row_shaped(node: Node) -> bool:
    shape = node.shape
    if len(shape) == 1:
        return True
    return len(shape) == 2 and isinstance(shape[1], int) and shape[1] <= MAX_ROW


def is_row_reduction(node: Node) -> bool:
    """A sum or max over the columns of a row value."""
    if node.op not in ("sum", "max"):
        return False
    x = node.inputs[0]
    return x.ndim == 2 and row_shaped(x) and tuple(node.attrs["axes"]) == (1,)


def fusable(node: Node) -> bool:
    """Elementwise ops, and the row ops a row kernel computes: reductions over a row, one-hot rows."""
    if supports(node.op) or is_row_reduction(node):
        return True
    return node.op == "one_hot" and node.ndim == 2 and row_shaped(node)


def joins(operand: Node, node: Node) -> bool:
    if operand.shape == node.shape and supports(node.op):
        return True
    return (operand.ndim > 0 and node.ndim > 0 and row_shaped(operand) and row_shaped(node)
            and operand.shape[0] == node.shape[0] and not (operand.ndim == 1 and node.ndim == 2))


def is_row_group(members: list[Node]) -> bool:
    """Does this group need a thread per row (mixed shapes, or row ops), not one per element?"""
    return any(not supports(m.op) or m.shape != members[0].shape for m in members)
