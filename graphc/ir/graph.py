"""Graph analyses: ancestors and topological order by walking operands, the rest
with networkx on a DiGraph view of the IR.

Edges run from an operand to its user.  Orders are made deterministic by node
serial (creation order), so printed graphs and generated code read in the order
the user wrote the model.  The walks that every pass repeats (ancestors, order)
need no graph object: they run in time linear in the nodes they visit.
"""
from __future__ import annotations

from typing import Container, Iterable, Sequence

import networkx as nx

from graphc.ir.node import Node


def to_networkx(outputs: Sequence[Node]) -> nx.DiGraph:
    graph = nx.DiGraph()
    stack = list(outputs)
    while stack:
        node = stack.pop()
        if node in graph and graph.nodes[node].get("expanded"):
            continue
        graph.add_node(node, expanded=True)
        for i, operand in enumerate(node.inputs):
            graph.add_edge(operand, node, index=i)
            if not graph.nodes[operand].get("expanded"):
                stack.append(operand)
    return graph


def ancestors(outputs: Sequence[Node], stop: Container[Node] = ()) -> set[Node]:
    """The outputs and every node they depend on, not looking past the nodes in ``stop``."""
    found: set[Node] = set()
    stack = [n for n in outputs if n not in stop]
    while stack:
        node = stack.pop()
        if node in found:
            continue
        found.add(node)
        stack.extend(i for i in node.inputs if i not in found and i not in stop)
    return found


def toposort(outputs: Sequence[Node]) -> list[Node]:
    """Every node the outputs depend on, operands first, ties broken by creation order.

    A node is made after its operands (nodes are immutable), so creation order is
    itself a topological order, and the earliest-created ready node is always the
    earliest-created node left: sorting by serial gives the lexicographical
    topological order without building a graph.
    """
    return in_creation_order(ancestors(outputs))


def structural_order(roots: Sequence[Node]) -> list[Node]:
    """Every node the roots depend on, operands first, in depth-first post-order from the roots.

    Unlike :func:`toposort` the order depends on the graph's structure alone, not on creation
    order (hash-consed constants may have been created by an earlier model), so equal graphs
    built at different times list their nodes alike: the compile cache's key and a model's
    fingerprint are built on it."""
    order: list[Node] = []
    seen: set[Node] = set()
    stack: list[tuple[Node, int]] = [(r, 0) for r in reversed(roots)]
    while stack:
        node, i = stack.pop()
        if node in seen:
            continue
        if i < len(node.inputs):
            stack.append((node, i + 1))
            if node.inputs[i] not in seen:
                stack.append((node.inputs[i], 0))
        else:
            seen.add(node)
            order.append(node)
    return order


def in_creation_order(nodes: Iterable[Node]) -> list[Node]:
    """``nodes`` sorted by serial: operands before their users."""
    return sorted(nodes, key=lambda n: n.serial)


def depends_on(outputs: Sequence[Node], sources: Iterable[Node]) -> set[Node]:
    """The nodes among the outputs' ancestors that lie on a path from some source.

    One pass in topological order (a node is on such a path if it is a source or
    reads a node that is), rather than a graph search per source."""
    sources = set(sources)
    found: set[Node] = set()
    for node in toposort(outputs):
        if node in sources or any(i in found for i in node.inputs):
            found.add(node)
    return found


def users(nodes: Sequence[Node]) -> dict[Node, list[Node]]:
    """For each node, the nodes that read it (in order), within the graph of ``nodes``."""
    graph = to_networkx(nodes)
    return {n: sorted(graph.successors(n), key=lambda u: u.serial) for n in graph}
