"""The rewrite engine: apply small named rules bottom-up until nothing changes.

A rule looks at one node (whose operands are already rewritten) and returns a
replacement or None.  Rebuilding goes through the hash-consing constructor, so
common subexpressions merge as a side effect of every pass, and nodes nobody
reaches any more simply drop out: CSE and dead-code elimination need no pass of
their own.  Rebuilt nodes keep the site and gradient origin of the node they
replace, so the optimized graph still points at the user's lines.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

from graphc.ir.graph import toposort
from graphc.ir.node import Node, make
from graphc.ir.site import rebuilding
from graphc.program import Program

Rule = Callable[[Node], Optional[Node]]


@dataclass
class Phase:
    name: str
    rules: Sequence[Rule]
    fired: dict[str, int] = field(default_factory=dict)


def rebuild(node: Node, inputs: Sequence[Node], renamed: Mapping[Node, Node] = {}) -> Node:
    if all(a is b for a, b in zip(inputs, node.inputs)):
        return node
    with rebuilding(node, renamed):
        return make(node.op, inputs, **node.attrs)


def _rewrite_node(node: Node, memo: dict[Node, Node], phase: Phase) -> Node:
    current = rebuild(node, [memo[i] for i in node.inputs], memo)
    for _ in range(32):  # a rule chain longer than this would be a cycle between rules
        for rule in phase.rules:
            with rebuilding(current, memo):
                replacement = rule(current)
            if replacement is not None and replacement is not current:
                phase.fired[rule.__name__] = phase.fired.get(rule.__name__, 0) + 1
                current = _settle(replacement, memo, phase)
                break
        else:
            return current
    return current


def _settle(node: Node, memo: dict[Node, Node], phase: Phase) -> Node:
    """Rewrite the new nodes a rule built (their operands may be rewritable too)."""
    for sub in toposort([node]):
        if sub not in memo:
            memo[sub] = sub if not sub.inputs else _rewrite_node(sub, memo, phase)
    return memo[node]


def apply_phase(program: Program, phase: Phase) -> Program:
    memo: dict[Node, Node] = {}
    for node in program.nodes():
        if node not in memo:
            memo[node] = node if not node.inputs else _rewrite_node(node, memo, phase)
    return Program(program.name, {k: memo[v] for k, v in program.outputs.items()},
                   {var: memo[new] for var, new in program.updates.items()},
                   arenas=program.arenas, grads={k: memo.get(v, v) for k, v in program.grads.items()})
