"""The graph walks every pass repeats agree with networkx's definitions on random graphs.

``toposort`` sorts ancestors by creation order and ``depends_on`` is one forward
pass; both rest on nodes being made after their operands.  Here they are
checked against networkx's lexicographical topological sort and descendant
search, which make no such assumption, over the whole graphs Hypothesis draws
(several outputs, mixed dtypes, parameters).
"""
from __future__ import annotations

import networkx as nx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.ir.graph import ancestors, depends_on, to_networkx, toposort
from graphc.testing.strategies import graphs

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(graph=graphs(params=True))
def test_toposort_is_networkx_lexicographical_order(graph):
    want = list(nx.lexicographical_topological_sort(to_networkx(graph.outputs), key=lambda n: n.serial))
    assert toposort(graph.outputs) == want


@SETTINGS
@given(graph=graphs(params=True), data=st.data())
def test_depends_on_is_the_descendants_of_the_sources(graph, data):
    every = toposort(graph.outputs)
    sources = data.draw(st.lists(st.sampled_from(every), max_size=4))
    nx_graph = to_networkx(graph.outputs)
    want = set(sources).union(*(nx.descendants(nx_graph, s) for s in sources))
    assert depends_on(graph.outputs, sources) == want


@SETTINGS
@given(graph=graphs(params=True), data=st.data())
def test_ancestors_stop_at_the_nodes_given(graph, data):
    every = toposort(graph.outputs)
    stop = set(data.draw(st.lists(st.sampled_from(every), max_size=4)))
    nx_graph = to_networkx(graph.outputs).subgraph(set(every) - stop)
    reachable = {o for o in graph.outputs if o not in stop}
    reachable |= set().union(*(nx.ancestors(nx_graph, o) for o in reachable))
    assert ancestors(graph.outputs, stop=stop) == reachable
