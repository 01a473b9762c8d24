"""Properties of random well-typed graphs: gradients match finite differences, compiled code matches the interpreter.

Random graphs (:func:`graphc.testing.strategies.graphs`) reach op combinations
no hand-written test thinks of: a softmax of a broadcast of a reshape, a where
over a comparison of a matmul, a reshape of a transpose of a parameter.  Smooth
graphs are checked by finite differences (relative error at most 1e-6); full
graphs, with every primitive (layout ops, random draws, parameters and a batch
dimension included), are compiled with and without C loops, in float32 and
float64, and every compiled function is called twice, with different values
(and batch sizes), against the reference interpreter; each is compiled again
with the memory plan's reuse off (every value a buffer of its own), and the two
must agree bit for bit, while the plan verifier (:mod:`graphc.passes.plan_check`,
on in the whole suite) replays every plan on a model of memory.  A last test
checks that the generator really draws every primitive, the layout pairs that
once hid bugs, and loops over rows with as many rows as columns, so a narrowed
generator cannot pass unnoticed.
"""
from __future__ import annotations

import copy
import os
from collections import Counter
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.backends.cpu import c_loops
from graphc.ir.graph import toposort
from graphc.passes import optimize
from graphc.passes.fusion import Group, fuse
from graphc.ir.program import Program
from graphc.ir.registry import PRIMITIVES
from graphc.testing import check_grads
from graphc.testing.strategies import RandomGraph, graphs

EXAMPLES = int(os.environ.get("GRAPHC_GRAPH_EXAMPLES", 40))  # more for a longer local search
F64 = "float64"
TOLERANCE = {"float64": 1e-10, "float32": 2e-4}
# The fixture only swaps a function for one that checks its result: nothing to reset per example.
SLOW_OK = settings(max_examples=EXAMPLES, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                          HealthCheck.function_scoped_fixture])
pytestmark = pytest.mark.usefixtures("c_kernels_must_build")  # values right after a fallback are not enough


def assert_same_values(compiled: Sequence[object], reference: Sequence[np.ndarray], tolerance: float = 1e-10) -> None:
    """Floats close to the interpreter's (relative to the output's scale), bools and ints equal,
    every shape and dtype the same."""
    assert len(compiled) == len(reference)
    for i, (value, expected) in enumerate(zip(compiled, reference)):
        actual = np.asarray(value)
        assert (actual.shape, actual.dtype) == (expected.shape, expected.dtype), f"output {i}"
        if expected.dtype.kind == "f":
            finite = np.abs(expected[np.isfinite(expected)])
            scale = float(finite.max()) if finite.size else 1.0
            np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * max(scale, 1.0),
                                       equal_nan=True, err_msg=f"output {i}")
        else:
            np.testing.assert_array_equal(actual, expected, err_msg=f"output {i}")


@contextmanager
def kernels(which: str) -> Iterator[None]:
    """Compile with fused C loops ('c') or NumPy alone ('numpy')."""
    saved = os.environ.get("GRAPHC_KERNELS")
    os.environ["GRAPHC_KERNELS"] = which
    try:
        yield
    finally:
        if saved is None:
            del os.environ["GRAPHC_KERNELS"]
        else:
            os.environ["GRAPHC_KERNELS"] = saved


def row_loops(groups: Sequence[Group]) -> list[Group]:
    return [g for g in groups if c_loops.runs_by_rows(g)]


def square_rows(groups: Sequence[Group]) -> bool:
    """Does a loop over rows have a static row count equal to its row length (R == C)?"""
    return any(m.ndim == 2 and m.shape[0] == m.shape[1] for g in row_loops(groups) for m in g.members)


def record_row_loops(step: gc.CompiledStep) -> None:
    """Tell Hypothesis's statistics (``--hypothesis-show-statistics``) how the row loops were shaped."""
    if row_loops(step.plan.groups):
        event("row loop, R == C" if square_rows(step.plan.groups) else "row loop, R != C")


def run_twice_against_the_interpreter(graph: RandomGraph, outputs: list[gc.Node], passes: bool, dtype: str) -> None:
    """Compile ``outputs`` twice, with the memory plan's reuse on and off; then for each of the
    graph's two calls: load that call's parameter values, run both steps, and compare the first
    with the interpreter run from the same generator state, and the second with the first bit
    for bit (the same loops, writing elsewhere, must compute the same bits)."""
    step = gc.compile(outputs, passes=passes)
    fresh = gc.compile(outputs, passes=passes, reuse=False)
    record_row_loops(step)
    for feeds, variables in graph.calls:
        values, rngs = [], []
        for each in (step, fresh):
            each.state.load({name: value.copy() for name, value in variables.items()})
            for p in graph.params:  # first call: the store makes them, then takes the drawn values
                each.state.ensure(p)[...] = variables[p.name]
            rngs.append(copy.deepcopy(each.state.rng))
            values.append(each(**feeds))
        compiled, unplanned = values
        assert_same_values(compiled, gc.evaluate(outputs, feeds, variables, rng=rngs[0]), TOLERANCE[dtype])
        assert_same_bits(compiled, unplanned)


def assert_same_bits(actual: Sequence[object], expected: Sequence[object]) -> None:
    for i, (a, b) in enumerate(zip(actual, expected)):
        a, b = np.asarray(a), np.asarray(b)
        assert (a.shape, a.dtype) == (b.shape, b.dtype), f"output {i}"
        assert a.tobytes() == b.tobytes(), f"output {i} differs between the planned step and one with no reuse"


@pytest.mark.parametrize("which", ["c", "numpy"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@SLOW_OK
@given(data=st.data())
def test_compiled_random_graph_agrees_with_interpreter(which: str, dtype: str, data: st.DataObject) -> None:
    """A few outputs, so the plan reuses and overwrites buffers freely."""
    graph = data.draw(graphs(params=True, batch=True, random=True, max_ops=10, dtype=dtype))
    with kernels(which):
        run_twice_against_the_interpreter(graph, graph.outputs, passes=True, dtype=dtype)


@pytest.mark.parametrize("passes", [True, False], ids=["optimized", "unplanned"])
@SLOW_OK
@given(graph=graphs(params=True, batch=True, random=True, max_ops=10))
def test_every_node_of_a_random_graph_compiles_to_the_interpreters_value(passes: bool, graph: RandomGraph) -> None:
    """All the nodes, floats, bools and ints, are outputs: each must survive the memory plan intact."""
    run_twice_against_the_interpreter(graph, [graph.output, *graph.nodes], passes, F64)


@SLOW_OK
@given(graph=graphs(smooth=True))
def test_smooth_random_graph_gradients_match_finite_differences(graph: RandomGraph) -> None:
    errors = check_grads(graph.output, graph.values, graph.inputs)
    assert set(errors) == {n.name for n in graph.inputs}


@SLOW_OK
@given(graph=graphs(smooth=True, params=True, batch=True, max_ops=10))
def test_compiled_gradient_graphs_agree_with_the_interpreter(graph: RandomGraph) -> None:
    """The gradient graph, optimized and compiled, against the same gradient nodes interpreted."""
    grads = gc.grad(graph.output, graph.inputs + graph.params)
    # The inputs ride along: the gradient of an input the output ignores is zeros of its shape,
    # whose batch size only an output that reads the input can tell.
    run_twice_against_the_interpreter(graph, [graph.output, *grads, *graph.inputs], passes=True, dtype=F64)


def test_the_generator_draws_every_primitive_and_layout_pairs() -> None:
    """What the properties above prove is bounded by what the generator draws: count it, and the
    share of loops over rows whose row count equals their row length (where a [C] operand and an
    [R] result are one size)."""
    ops: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    shared_layout = 0
    row_loop_graphs = square = 0  # graphs whose C plan has a loop over rows; those with R == C

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(graph=graphs(params=True, batch=True, random=True, max_ops=10))
    def tally(graph: RandomGraph) -> None:
        nonlocal shared_layout
        order = toposort(graph.outputs + graph.nodes)
        consumers: Counter[gc.Node] = Counter(i for n in order for i in n.inputs)
        ops.update(n.op for n in order)
        pairs.update((i.op, n.op) for n in order for i in n.inputs)
        shared_layout += any(n.kind == "layout" and consumers[n] > 1 for n in order)
        nonlocal row_loop_graphs, square
        program, _ = optimize(Program("tally", {f"o{i}": n for i, n in enumerate(graph.outputs)}))
        _, groups = fuse(program, program.nodes(), c_loops.eligible, c_loops.joins)
        row_loop_graphs += bool(row_loops(groups))
        square += square_rows(groups)

    tally()
    assert set(PRIMITIVES) <= set(ops), f"never drawn: {sorted(set(PRIMITIVES) - set(ops))}"
    assert row_loop_graphs >= 20 and square / row_loop_graphs >= 0.2, \
        f"{square} of {row_loop_graphs} graphs with a loop over rows have R == C"
    layout = ("reshape", "transpose", "broadcast_to", "slice", "concat")
    for pair in [("transpose", "reshape"), ("broadcast_to", "reshape"), ("reshape", "transpose"),
                 ("reshape", "concat"), ("reshape", "slice"), ("transpose", "matmul")]:
        assert pairs[pair] > 0, f"never drew {pair[1]} of {pair[0]}"
    assert sum(c for (a, b), c in pairs.items() if a in layout and b in layout) >= 30
    assert shared_layout >= 20, "layout nodes with two consumers are rare"


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
