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

from graphc.ir.graph import ancestors, in_creation_order
from graphc.ir.node import Node, make
from graphc.ir.primitives import PRIMITIVES
from graphc.ir.site import rebuilding
from graphc.program import Program

Rule = Callable[[Node], Optional[Node]]


def matches(*ops: str) -> Callable[[Rule], Rule]:
    """Declare the ops a rule can fire on, so a phase offers it no other node.

    A rule without the declaration is offered every node (constant folding looks
    at any op)."""
    def mark(rule: Rule) -> Rule:
        rule.ops = frozenset(ops)  # type: ignore[attr-defined]
        return rule
    return mark


def ops_of_kind(*kinds: str) -> tuple[str, ...]:
    """The names of the primitives of the given kinds, for ``matches``."""
    return tuple(name for name, prim in PRIMITIVES.items() if prim.kind in kinds)


@dataclass
class Phase:
    name: str
    rules: Sequence[Rule]
    fired: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The rules that may fire on each op, in the phase's order: a node meets only these.
        self.by_op: dict[str, list[Rule]] = {
            op: [r for r in self.rules if op in getattr(r, "ops", (op,))] for op in PRIMITIVES}


def rebuild(node: Node, inputs: Sequence[Node], renamed: Mapping[Node, Node] = {}) -> Node:
    if all(a is b for a, b in zip(inputs, node.inputs)):
        return node
    with rebuilding(node, renamed):
        return make(node.op, inputs, **node.attrs)


def _rewrite_node(node: Node, memo: dict[Node, Node], phase: Phase) -> Node:
    current = rebuild(node, [memo[i] for i in node.inputs], memo)
    for _ in range(32):  # a rule chain longer than this would be a cycle between rules
        with rebuilding(current, memo):
            fired = _first_firing(phase.by_op[current.op], current)
        if fired is None:
            return current
        rule, replacement = fired
        phase.fired[rule.__name__] = phase.fired.get(rule.__name__, 0) + 1
        current = _settle(replacement, memo, phase)
    return current


def _first_firing(rules: Sequence[Rule], node: Node) -> Optional[tuple[Rule, Node]]:
    """The first rule that replaces ``node``, with its replacement."""
    for rule in rules:
        replacement = rule(node)
        if replacement is not None and replacement is not node:
            return rule, replacement
    return None


def _settle(node: Node, memo: dict[Node, Node], phase: Phase) -> Node:
    """Rewrite the new nodes a rule built (their operands may be rewritable too).

    Nodes already in ``memo`` are done, and so is everything beneath them: the walk
    stops there, so a rule firing costs the size of what it built, not of the graph."""
    for sub in in_creation_order(ancestors([node], stop=memo)):
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
