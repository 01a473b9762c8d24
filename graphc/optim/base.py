"""What every optimizer shares: the packed parameter vector and the update protocol.

An optimizer sees *one* vector θ holding every parameter and *one* gradient
vector g, and writes its rule once, as a handful of whole-vector IR ops.  The
packing (concat of flattened parameters, slices back out) is part of the
program; the memory planner turns it into a shared arena, so the packing costs
nothing at run time and the update is a few passes over one buffer.
"""
from __future__ import annotations

from typing import Sequence

from graphc import ops
from graphc.ir.node import Node
from graphc.runtime.store import zeros


def pack(nodes: Sequence[Node]) -> Node:
    flat = [ops.reshape(n, (-1,)) if n.ndim != 1 else n for n in nodes]
    return flat[0] if len(flat) == 1 else ops.concat(flat)


def unpack(vector: Node, like: Sequence[Node]) -> list[Node]:
    out, offset = [], 0
    for node in like:
        size = 1
        for d in node.shape:
            size *= int(d)
        piece = vector if len(like) == 1 else ops.slice(vector, offset, offset + size)
        out.append(piece if piece.shape == node.shape else ops.reshape(piece, node.shape))
        offset += size
    return out


class Optimizer:
    """Subclasses define :meth:`rule`; this class packs, counts steps and unpacks."""

    name = "optimizer"

    def __init__(self, lr: float):
        self.lr = lr

    def slot(self, like: Node, slot: str) -> Node:
        """A zero-initialized state vector shaped like θ (a moment, an accumulator)."""
        return ops.state(f"{self.name}.{slot}", like.shape, init=zeros, dtype=like.dtype)

    def rule(self, theta: Node, g: Node, t: Node) -> tuple[Node, dict[Node, Node]]:
        """The new θ and the new values of this optimizer's state vectors, at step ``t`` (1, 2, ...)."""
        raise NotImplementedError

    def updates(self, params: Sequence[Node], grads: Sequence[Node]) -> dict[Node, Node]:
        theta, g = pack(params), pack(grads)
        count = ops.state(f"{self.name}.step", (), init=zeros, dtype=theta.dtype)
        t = count + 1
        new_theta, state_updates = self.rule(theta, g, t)
        updates: dict[Node, Node] = dict(zip(params, unpack(new_theta, params)))
        updates.update(state_updates)
        updates[count] = t
        return updates
