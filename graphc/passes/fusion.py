"""Elementwise fusion: group chains of elementwise ops that can run as one loop.

A group is a set of nodes that execute together at the position of their last
member: by default elementwise nodes of one shape; a backend may let other
nodes in (``eligible``) and relax the shape rule (``joins``), as both backends
do to run a softmax's rows, reductions included, as one kernel or loop, and
the C loops do to accumulate column sums.  A node joins the group of an operand
only if ``joins`` accepts every member of that group it reads, and if nothing
outside the group needs that group's values before this node runs
(otherwise moving the group later would starve that reader).  Members read
outside the group, or kept by the program, are the group's outputs; the rest
never touch memory.  Fusion only regroups the schedule: the graph is unchanged,
and a backend that cannot run a group simply runs its members one by one.

A group has at most ``MAX_MEMBERS`` members: a node that would make its group
larger starts a new one.  The C compiler's time grows faster than the length
of one loop (a chain of 300 tanh and its gradient, fused whole, is a 230 KB
loop that gcc takes 20 seconds or more to compile), and checking whether a
node may join a group reads every member, so without a bound fusing a long
chain costs the square of its length.  Groups cut to the bound often compile
to the same loop, which the C backend builds once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from graphc.ir.node import Node
from graphc.ir.shapes import Shape
from graphc.ir.program import Program

MAX_MEMBERS = 64  # the largest group (an Adam update is 19 members, a softmax cross-entropy 12)


@dataclass(eq=False)
class Group:
    shape: Shape
    members: list[Node] = field(default_factory=list)
    outputs: list[Node] = field(default_factory=list)
    inputs: list[Node] = field(default_factory=list)


def same_shape(operand: Node, node: Node) -> bool:
    return operand.shape == node.shape


def fuse(program: Program, schedule: list[Node], eligible: Callable[[Node], bool],
         joins: Callable[[Node, Node], bool] = same_shape,
         max_members: int = MAX_MEMBERS) -> tuple[list[Node], list[Group]]:
    """Regroup ``schedule``; returns the new schedule and the groups of two to ``max_members`` nodes.

    ``eligible`` says which nodes may be members; ``joins(operand, node)`` whether ``node`` may join
    the group of its operand ``operand``.  A group's ``shape`` is that of its first member."""
    pos = {n: i for i, n in enumerate(schedule)}
    consumers: dict[Node, list[Node]] = {n: [] for n in schedule}
    for n in schedule:
        for i in n.inputs:
            consumers[i].append(n)
    kept = set(program.outputs.values()) | set(program.updates.values())
    group_of: dict[Node, Group] = {}

    for n in schedule:
        if not eligible(n):
            continue
        joinable: list[Group] = []
        size = 1  # of the group n would make, joining those in joinable
        for operand in n.inputs:
            g = group_of.get(operand)
            if g is None or g in joinable or size + len(g.members) > max_members or not joins(operand, n):
                continue
            # Every member n reads must be one it may join: a value the loop is still
            # accumulating (a C loop's column sum) is not, whichever operand n joins through.
            if (all(pos[c] >= pos[n] or group_of.get(c) is g for m in g.members for c in consumers[m])
                    and all(joins(i, n) for i in n.inputs if group_of.get(i) is g)):
                joinable.append(g)
                size += len(g.members)
        group = joinable[0] if joinable else Group(n.shape)
        for other in joinable[1:]:
            group.members.extend(other.members)
            for m in other.members:
                group_of[m] = group
        group.members.append(n)
        group_of[n] = group

    groups = [g for g in {id(g): g for g in group_of.values()}.values() if len(g.members) > 1]
    for g in groups:
        members = set(g.members)
        g.members.sort(key=pos.__getitem__)
        g.outputs = [m for m in g.members if m in kept or any(c not in members for c in consumers[m])]
        seen: set[Node] = set()
        for m in g.members:
            for i in m.inputs:
                if i not in members and i not in seen:
                    seen.add(i)
                    g.inputs.append(i)
    return _regroup(schedule, groups), groups


def _regroup(schedule: list[Node], groups: list[Group]) -> list[Node]:
    """Move each group's members to just before its last member, keeping their order."""
    last = {g.members[-1]: g for g in groups}
    moved = {m for g in groups for m in g.members}
    out: list[Node] = []
    for n in schedule:
        if n in last:
            out.extend(last[n].members)
        elif n not in moved:
            out.append(n)
    return out
