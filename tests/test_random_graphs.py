"""Properties of random well-typed graphs: gradients match finite differences, compiled code matches the interpreter.

Random graphs (:func:`graphc.testing.strategies.graphs`) reach op combinations
no hand-written test thinks of: a softmax of a broadcast of a reshape, a where
over a comparison of a matmul.  Smooth graphs are checked by finite differences
(relative error at most 1e-6); full graphs, with every kinked and
non-differentiable op, are compiled and compared with the reference
interpreter (relative 1e-10 for floats, exact for bool and int values).
``EXAMPLES`` (50) graphs per property, of at most 8 drawn ops each.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest
from hypothesis import assume, given, settings

import graphc as gc
from graphc.ir.graph import toposort
from graphc.ir.node import Node
from graphc.testing import check_grads
from graphc.testing.strategies import RandomGraph, graphs

EXAMPLES = 50
RTOL = 1e-10
F64 = "float64"


def assert_same_values(compiled: Sequence[object], reference: Sequence[np.ndarray]) -> None:
    """Floats within RTOL of the interpreter's, bools and ints equal, every shape and dtype the same."""
    assert len(compiled) == len(reference)
    for i, (value, expected) in enumerate(zip(compiled, reference)):
        actual = np.asarray(value)
        assert (actual.shape, actual.dtype) == (expected.shape, expected.dtype), f"output {i}"
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=0, equal_nan=True, err_msg=f"output {i}")
        else:
            np.testing.assert_array_equal(actual, expected, err_msg=f"output {i}")


@settings(max_examples=EXAMPLES, deadline=None)
@given(graphs(smooth=True))
def test_smooth_random_graph_gradients_match_finite_differences(graph: RandomGraph) -> None:
    errors = check_grads(graph.output, graph.values, graph.inputs)
    assert set(errors) == set(graph.values)


@settings(max_examples=EXAMPLES, deadline=None)
@given(graphs())
def test_compiled_random_graph_agrees_with_interpreter(graph: RandomGraph) -> None:
    step = gc.compile(graph.output)
    assert_same_values([step(**graph.values)], gc.evaluate([graph.output], graph.values))


@pytest.mark.parametrize("passes", [True, False], ids=["optimized", "unplanned"])
@settings(max_examples=EXAMPLES, deadline=None)
@given(graph=graphs())
def test_every_node_of_a_random_graph_compiles_to_the_interpreters_value(passes: bool, graph: RandomGraph) -> None:
    """All the nodes, floats, bools and ints, are outputs: each must survive the memory plan intact."""
    outputs = [graph.output, *graph.nodes]
    step = gc.compile(outputs, passes=passes)
    assert_same_values(step(**graph.values), gc.evaluate(outputs, graph.values))


# ---------------------------------------------------------------- bugs found by the properties above

def test_unplanned_sigmoid_of_a_scalar() -> None:
    x = gc.input("x", (), F64)
    value = {"x": np.array(0.3)}
    assert_same_values([gc.compile(gc.sigmoid(x), passes=False)(**value)], gc.evaluate([gc.sigmoid(x)], value))


def test_a_view_returned_as_output_keeps_its_buffer() -> None:
    """Found by the random graphs: a later op once reused the buffer under a returned view."""
    x = gc.input("x", (2, 2), F64)
    outputs = [gc.reshape(gc.exp(x), (4,)), gc.abs(x)]
    value = {"x": np.array([[-1.0, 0.5], [2.0, -3.0]])}
    assert_same_values(gc.compile(outputs)(**value), gc.evaluate(outputs, value))


def _compile_and_run(comparison_first: bool) -> tuple[bool, list[object], list[np.ndarray]]:
    """Compile [sum(p + p), p + p, p < p] for a fresh parameter p, building the branches in either order;
    return whether the code came from the cache, the step's values and the interpreter's."""
    p = gc.param("cache_order_probe", (), init=lambda rng, shape, dtype: np.full(shape, 1.5, dtype), dtype=F64)
    # Both orders on one line, so both builds carry the same source lines (part of the cache key).
    less, twice = (p < p, p + p) if comparison_first else reversed([p + p, p < p])
    outputs = [gc.sum(twice), twice, less]
    step = gc.compile(outputs)
    return step.cache_hit, step(), gc.evaluate(outputs, {}, {p.name: np.array(1.5)})


def test_compile_cache_hit_from_a_graph_built_in_another_order() -> None:
    """Found by the random graphs: cached code once indexed the buffers of the first build's memory plan.

    A fresh parameter makes every node new, so the second build creates them in its own order."""
    _, compiled, reference = _compile_and_run(comparison_first=False)
    assert_same_values(compiled, reference)
    cache_hit, compiled, reference = _compile_and_run(comparison_first=True)
    assert cache_hit
    assert_same_values(compiled, reference)
