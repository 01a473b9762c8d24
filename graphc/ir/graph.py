"""Graph analyses, done with networkx on a DiGraph view of the IR.

Edges run from an operand to its user.  Orders are made deterministic by node
serial (creation order), so printed graphs and generated code read in the order
the user wrote the model.
"""
from __future__ import annotations

from typing import Iterable, Sequence

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


def toposort(outputs: Sequence[Node]) -> list[Node]:
    """Every node the outputs depend on, operands first, ties broken by creation order."""
    return list(nx.lexicographical_topological_sort(to_networkx(outputs), key=lambda n: n.serial))


def depends_on(outputs: Sequence[Node], sources: Iterable[Node]) -> set[Node]:
    """The nodes among the outputs' ancestors that lie on a path from some source."""
    graph = to_networkx(outputs)
    found: set[Node] = set()
    for source in sources:
        if source in graph:
            found.add(source)
            found |= nx.descendants(graph, source)
    return found


def users(nodes: Sequence[Node]) -> dict[Node, list[Node]]:
    """For each node, the nodes that read it (in order), within the graph of ``nodes``."""
    graph = to_networkx(nodes)
    return {n: sorted(graph.successors(n), key=lambda u: u.serial) for n in graph}
