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
from typing import Callable, Generator, Mapping, Optional, Sequence

from graphc.ir.graph import ancestors, in_creation_order
from graphc.ir.node import Node, make
from graphc.ir.registry import PRIMITIVES
from graphc.ir.site import rebuilding
from graphc.ir.program import Program

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


Rewrite = Generator["Rewrite", Node, Node]  # yields sub-rewrites, receives their results, returns the node


def _rewrite_node(node: Node, memo: dict[Node, Node], phase: Phase) -> Rewrite:
    """Rewrite ``node``, whose operands are rewritten, until no rule fires.

    The nodes a rule builds may be rewritable too (their operands as well): each one not yet in
    ``memo`` is rewritten first, operands before users.  Nodes already in ``memo`` are done, and
    so is everything beneath them: the walk stops there, so a rule firing costs the size of what
    it built, not of the graph.  A rewrite that needs another yields it and receives its result
    (see :func:`_run`), so a chain of rules each building the next node's work (a sum pulled out
    of a product of 10,000 factors) nests no Python calls."""
    current = rebuild(node, [memo[i] for i in node.inputs], memo)
    for _ in range(32):  # a rule chain longer than this would be a cycle between rules
        with rebuilding(current, memo):
            fired = _first_firing(phase.by_op[current.op], current)
        if fired is None:
            return current
        rule, replacement = fired
        phase.fired[rule.__name__] = phase.fired.get(rule.__name__, 0) + 1
        for sub in in_creation_order(ancestors([replacement], stop=memo)):
            if sub not in memo:
                memo[sub] = sub if not sub.inputs else (yield _rewrite_node(sub, memo, phase))
        current = memo[replacement]
    return current


def _first_firing(rules: Sequence[Rule], node: Node) -> Optional[tuple[Rule, Node]]:
    """The first rule that replaces ``node``, with its replacement."""
    for rule in rules:
        replacement = rule(node)
        if replacement is not None and replacement is not node:
            return rule, replacement
    return None


def _run(rewrite: Rewrite) -> Node:
    """Drive a rewrite and the rewrites it asks for, on a stack of our own rather than Python's."""
    pending = [rewrite]
    sent: Optional[Node] = None  # nothing to a rewrite starting, the node it asked for to one resuming
    while True:
        try:
            pending.append(pending[-1].send(sent))  # type: ignore[arg-type]
            sent = None
        except StopIteration as finished:
            pending.pop()
            if not pending:
                return finished.value
            sent = finished.value


def apply_phase(program: Program, phase: Phase) -> Program:
    memo: dict[Node, Node] = {}
    for node in program.nodes():
        if node not in memo:
            memo[node] = node if not node.inputs else _run(_rewrite_node(node, memo, phase))
    return Program(program.name, {k: memo[v] for k, v in program.outputs.items()},
                   {var: memo[new] for var, new in program.updates.items()},
                   arenas=program.arenas, grads={k: memo.get(v, v) for k, v in program.grads.items()})
