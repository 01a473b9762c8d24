"""A program: the graph a compiled function computes, named outputs plus variable updates.

A train step is a program whose updates write new parameter values (from the
optimizer) and new running statistics (from batch norm) back to the store.
Updates are data, not side effects: every update is listed, printed by
``show("step")`` and checked by the same tests as the outputs.  The container
sits with the IR because every stage after the DSL reads it; building a train
step is the compiler's (:mod:`graphc.compiler.train_step`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from graphc.errors import GraphcError
from graphc.ir.graph import toposort
from graphc.ir.node import Node
from graphc.ir.printing import format_graph


@dataclass
class Program:
    name: str
    outputs: dict[str, Node]
    updates: dict[Node, Node] = field(default_factory=dict)
    # Variables the runtime keeps contiguous, in order (the optimizer's packed θ).
    arenas: list[list[Node]] = field(default_factory=list)
    # The gradient of the loss for each parameter, by name, for inspection.
    grads: dict[str, Node] = field(default_factory=dict)

    @property
    def roots(self) -> list[Node]:
        return list(self.outputs.values()) + list(self.updates.values())

    def nodes(self) -> list[Node]:
        return toposort(self.roots)

    def leaves(self, op: str) -> list[Node]:
        return [n for n in self.nodes() if n.op == op]

    def variables(self) -> list[Node]:
        """Every variable read or written, parameters first, each in creation order."""
        seen = {n for n in self.nodes() if n.is_variable} | set(self.updates)
        return sorted(seen, key=lambda n: (n.op != "param", n.serial))

    def unbound_symbols(self) -> list[str]:
        """Symbolic sizes used by some node that no input of the program provides."""
        provided = {d for n in self.leaves("input") for d in n.shape if isinstance(d, str)}
        used = {d for n in self.nodes() for d in n.shape if isinstance(d, str)}
        return sorted(used - provided)

    def shown(self) -> dict[str, Node]:
        """Outputs and new variable values by name (a variable's new value is ``name'``)."""
        shown: dict[str, Node] = dict(self.outputs)
        shown.update({f"{v.name}'": new for v, new in self.updates.items()})
        return shown

    def format(self) -> str:
        return format_graph(self.shown(), title=self.name)


def check_unique_names(nodes: list[Node]) -> None:
    by_name: dict[str, Node] = {}
    for node in nodes:
        other = by_name.setdefault(node.name, node)
        if other is not node:
            raise GraphcError(f"two different {node.op}s are named '{node.name}' "
                              f"({other!r} built at {other.site}, {node!r} at {node.site}); give them distinct names")

