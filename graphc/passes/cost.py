"""A static cost model of a planned step: FLOPs, bytes moved, peak buffer memory.

Counts are per step at a given batch size, computed from shapes alone, so they
can be shown before anything runs (``graphc show --passes``).  Views cost
nothing; every other op is charged one pass over its operands and its result.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphc.ir.node import Node
from graphc.ir.registry import has_no_buffer, is_leaf
from graphc.ir.shapes import resolve
from graphc.passes.memory import Plan


@dataclass
class Cost:
    batch: int
    flops: int
    bytes_moved: int
    buffer_bytes: int
    kernels: int

    def format(self) -> str:
        return (f"at batch {self.batch}: {self.flops / 1e6:.2f} MFLOP, {self.bytes_moved / 1e6:.2f} MB moved, "
                f"{self.buffer_bytes / 1e6:.2f} MB of buffers, {self.kernels} kernel calls per step")


def _size(node: Node, symbols: dict[str, int]) -> int:
    return int(np.prod(resolve(node.shape, symbols), dtype=np.int64))


def _bytes(node: Node, symbols: dict[str, int]) -> int:
    return _size(node, symbols) * np.dtype(node.dtype).itemsize


def node_flops(node: Node, symbols: dict[str, int]) -> int:
    if node.op == "matmul":
        m, k = resolve(node.inputs[0].shape, symbols)
        return 2 * m * k * resolve(node.shape, symbols)[1]
    if node.kind in ("reduce",):
        return _size(node.inputs[0], symbols)
    return _size(node, symbols)


def estimate(plan: Plan, batch: int = 128) -> Cost:
    """A fused group is one kernel that reads its inputs and writes its outputs once."""
    symbols = {"N": batch}
    flops = moved = kernels = 0
    grouped = {m for g in plan.groups for m in g.members}
    for group in plan.groups:
        kernels += 1
        flops += sum(node_flops(m, symbols) for m in group.members)
        moved += sum(_bytes(n, symbols) for n in group.inputs + group.outputs if n.op != "constant")
    for node in plan.schedule:
        if is_leaf(node.op) or plan.is_view(node) or has_no_buffer(node.op) or node in grouped:
            continue
        kernels += 1
        flops += node_flops(node, symbols)
        moved += _bytes(node, symbols) + sum(_bytes(i, symbols) for i in node.inputs)
    buffers = sum(int(np.prod(resolve(b.shape, symbols), dtype=np.int64)) * np.dtype(b.dtype).itemsize
                  for b in plan.buffers)
    return Cost(batch, flops, moved, buffers, kernels)
