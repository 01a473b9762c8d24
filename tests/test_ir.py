"""Unit tests of the IR: node identity, shape and dtype rules, error messages, printing, feed checks.

Error messages are checked for what a user needs to fix the graph: the op, the
operands' shapes and dtypes, and the line of *this* file that built the bad
node.  Every builder that should fail is written as a one-line lambda, so that
line is the lambda's own first line.
"""
from __future__ import annotations

import inspect
import os
import re
from typing import Callable

import numpy as np
import pytest

import graphc as gc
from graphc.errors import DTypeError, FeedError, ShapeError
from graphc.ir.graph import depends_on, toposort
from graphc.ir.node import Node
from graphc.ir.printing import type_str

F64 = "float64"
THIS_FILE = os.path.basename(__file__)


def raised(kind: type[Exception], build: Callable[[], object]) -> str:
    with pytest.raises(kind) as info:
        build()
    return str(info.value)


def raised_here(kind: type[Exception], build: Callable[[], object]) -> str:
    """The message of the error ``build`` raises, checked to name the line that wrote ``build``."""
    message = raised(kind, build)
    assert f"{THIS_FILE}:{build.__code__.co_firstlineno}:" in message, message
    return message


def next_line() -> int:
    """The number of the line after the caller's."""
    return inspect.currentframe().f_back.f_lineno + 1  # type: ignore[union-attr]


# ---------------------------------------------------------------- hash-consing

def test_equal_expressions_are_one_node() -> None:
    x = gc.input("x", (2, 3), F64)
    assert gc.input("x", (2, 3), F64) is x
    assert gc.exp(x) is gc.exp(x)
    assert (x + 1.0) is (x + 1.0)
    assert gc.sum(x, axis=1) is gc.sum(x, axis=-1)
    assert gc.constant(np.arange(3.0)) is gc.constant(np.arange(3.0))


def test_different_expressions_are_different_nodes() -> None:
    x = gc.input("x", (2, 3), F64)
    assert gc.sum(x, axis=0) is not gc.sum(x, axis=1)
    assert gc.sum(x, axis=0) is not gc.sum(x, axis=0, keepdims=True)
    assert (x + 1.0) is not (x + 2.0)
    assert gc.constant(np.arange(3.0)) is not gc.constant(np.arange(3.0, dtype=np.float32))
    assert gc.input("x", (2, 3), "float32") is not x


def test_parameters_with_one_name_are_distinct_nodes() -> None:
    first, second = gc.param("w", (2,), dtype=F64), gc.param("w", (2,), dtype=F64)
    assert first is not second
    assert gc.exp(first) is not gc.exp(second)


def test_random_draws_of_one_shape_are_distinct_nodes() -> None:
    assert gc.normal((2,), F64) is not gc.normal((2,), F64)


def test_the_first_builder_of_a_node_keeps_its_site() -> None:
    p = gc.param("p", (2,), dtype=F64)  # a fresh leaf, so no other test has built tanh(p)
    first_line = next_line()
    node = gc.tanh(p)
    assert gc.tanh(p).site.lineno == first_line == node.site.lineno
    assert node.site.short() == f"{THIS_FILE}:{first_line}"


# ---------------------------------------------------------------- shapes

def test_batch_dimension_flows_through_shape_inference() -> None:
    x = gc.input("x", (None, 3), F64)
    w, b = gc.param("w", (3, 5), dtype=F64), gc.param("b", (5,), dtype=F64)
    h = x @ w + b
    assert x.shape == ("N", 3)
    assert h.shape == ("N", 5)
    assert gc.sum(h, axis=0).shape == (5,)
    assert gc.sum(h, axis=1, keepdims=True).shape == ("N", 1)
    assert gc.transpose(h).shape == (5, "N")
    assert gc.reshape(gc.input("z", (None, 2, 3), F64), (-1, 6)).shape == ("N", 6)
    assert gc.broadcast_to(b, h.shape).shape == ("N", 5)
    assert (h + gc.input("row", (1, 5), F64)).shape == ("N", 5)
    assert gc.mean(h).shape == ()


def test_mean_over_the_batch_divides_by_the_run_time_batch_size() -> None:
    x = gc.input("x", (None, 2), F64)
    value = np.arange(6.0).reshape(3, 2)
    (mean,) = gc.evaluate([gc.mean(x, axis=0)], {"x": value})
    np.testing.assert_allclose(mean, value.mean(axis=0))


def test_batch_dimension_only_broadcasts_with_itself_or_one() -> None:
    x = gc.input("x", (None, 3), F64)
    y = gc.input("y", (5, 3), F64)
    message = raised_here(ShapeError, lambda: x + y)
    assert "add" in message and "[N,3]" in message and "[5,3]" in message


def test_broadcasting_error_names_op_shapes_and_line() -> None:
    a, b = gc.input("a", (3, 4), F64), gc.input("b", (5,), F64)
    message = raised_here(ShapeError, lambda: a * b)
    assert "mul(f64[3,4], f64[5])" in message and "do not broadcast" in message


def test_matmul_error_names_the_inner_dimensions() -> None:
    a, b = gc.input("a", (2, 3), F64), gc.input("b", (4, 2), F64)
    message = raised_here(ShapeError, lambda: a @ b)
    assert "matmul(f64[2,3], f64[4,2])" in message and "3 != 4" in message


def test_reduction_axis_out_of_range_names_the_op() -> None:
    a = gc.input("a", (2, 3), F64)
    message = raised_here(ShapeError, lambda: gc.sum(a, axis=2))
    assert "sum(f64[2,3])" in message and "axis 2" in message


def test_reshape_to_another_size_is_refused() -> None:
    a = gc.input("a", (2, 3), F64)
    message = raised_here(ShapeError, lambda: gc.reshape(a, (4,)))
    assert "reshape(f64[2,3])" in message and "[4]" in message


def test_composite_error_names_the_composite_and_the_line() -> None:
    p, t = gc.input("p", (None, 3), F64), gc.input("t", (None, 4), F64)
    message = raised_here(ShapeError, lambda: gc.mse(p, t))
    assert "mse(f64[N,3], f64[N,4])" in message


# ---------------------------------------------------------------- dtypes

def test_mixing_float32_and_float64_nodes_is_refused() -> None:
    a, b = gc.input("a", (2,), "float32"), gc.input("b", (2,), F64)
    message = raised_here(DTypeError, lambda: a + b)
    assert "add(f32[2], f64[2])" in message and "float32 and float64" in message


def test_python_scalars_take_the_dtype_of_the_node() -> None:
    a = gc.input("a", (2,), "float32")
    assert (a * 2.5).dtype == "float32"
    assert (gc.input("i", (2,), "int32") + 1).dtype == "int32"


def test_float_scalar_with_an_int_node_is_refused() -> None:
    i = gc.input("i", (2,), "int32")
    message = raised(DTypeError, lambda: i * 0.5)
    assert "0.5" in message and "int32" in message


def test_float_scalar_with_an_int_node_error_names_op_shapes_and_line() -> None:
    i = gc.input("i", (2,), "int32")
    message = raised_here(DTypeError, lambda: i * 0.5)
    assert "mul(" in message and "i32[2]" in message


def test_float_op_on_an_int_node_is_refused() -> None:
    i = gc.input("i", (2,), "int32")
    message = raised_here(DTypeError, lambda: gc.log(i))
    assert "log(i32[2])" in message and "float" in message


def test_where_needs_a_bool_condition() -> None:
    a = gc.input("a", (2,), F64)
    message = raised_here(DTypeError, lambda: gc.where(a, a, a))
    assert "where(f64[2], f64[2], f64[2])" in message and "bool" in message


def test_a_node_has_no_truth_value() -> None:
    x = gc.input("x", (2,), F64)
    with pytest.raises(TypeError, match="gc.where"):
        bool(x > 0.0)
    with pytest.raises(TypeError):
        if x:
            pass
    with pytest.raises(TypeError):
        _ = x in [gc.input("y", (2,), F64)]  # membership tests compare with ==, which builds a node


# ---------------------------------------------------------------- printing

def _model() -> tuple[dict[str, Node], int, set[Node]]:
    """A small model and its weight gradient, the line that builds the forward nodes, and the nodes
    that depend on its parameters: only those are sure to be new, since hash-consing shares any
    node another test built first (with that test's site and provenance)."""
    x = gc.input("x", (None, 3), F64)
    w, b = gc.param("w", (3, 2), dtype=F64), gc.param("b", (2,), dtype=F64)
    line = next_line()
    loss = gc.sum(gc.tanh(x @ w + b) * gc.constant(np.array([0.5, 2.0])))
    (dw,) = gc.grad(loss, [w])
    outputs = {"loss": loss, "dw": dw}
    return outputs, line, depends_on(list(outputs.values()), [w, b])


def _printed_nodes(outputs: dict[str, Node]) -> list[Node]:
    """The nodes that get a line: all but leaves and single-value constants, in order."""
    def inline(n: Node) -> bool:
        return n.op in ("input", "param", "state") or (n.op == "constant" and n.attrs["value"].array.size == 1)
    return [n for n in toposort(list(outputs.values())) if not inline(n)]


def test_format_graph_prints_one_line_per_node() -> None:
    outputs, _, _ = _model()
    lines = gc.format_graph(outputs).splitlines()
    assert lines[0] == "graph(x: f64[N,3])"
    assert lines[1] == "  params w: f64[3,2], b: f64[2]"
    body, last = lines[2:-1], lines[-1]
    nodes = _printed_nodes(outputs)
    assert len(body) == len(nodes)
    for line, node in zip(body, nodes):
        name, _, statement = line.strip().partition(" ")
        assert re.fullmatch(r"%\d+", name), line
        assert statement.lstrip().startswith(f"{type_str(node)} = {node.op}"), line
    names = [line.split()[0] for line in body]
    assert len(set(names)) == len(names), "two nodes print under one name"
    assert re.fullmatch(r"  return loss=%\d+, dw=%\d+", last)


def test_format_graph_marks_gradient_nodes_with_their_forward_node() -> None:
    outputs, line, fresh = _model()
    body = gc.format_graph(outputs).splitlines()[2:-1]
    printed = dict(zip(_printed_nodes(outputs), body))
    names = {node: text.split()[0] for node, text in printed.items()}
    for node, text in printed.items():
        assert ("∂" in text) == (node.origin is not None), text
        if node.origin is not None:
            forward = names.get(node.origin.forward, node.origin.forward.op)
            assert f"∂{forward} {node.origin.rule}" in text, text
        if node in fresh:
            assert text.endswith(f"{THIS_FILE}:{line}"), text  # gradient nodes carry their forward node's line
    assert sum(node.origin is not None for node in fresh) > 0


# ---------------------------------------------------------------- feeds

def _feed_error(run: Callable[..., object], **feeds: object) -> str:
    return raised(FeedError, lambda: run(**feeds))


@pytest.fixture(params=["interpreter", "compiled"])
def run(request: pytest.FixtureRequest) -> Callable[..., object]:
    """The interpreter and a compiled step, for one graph of an input x (N, 3) and y (N,)."""
    x, y = gc.input("x", (None, 3), F64), gc.input("y", (None,), "int64")
    output = gc.softmax_cross_entropy(x, y)
    if request.param == "interpreter":
        return lambda **feeds: gc.evaluate([output], feeds)
    return gc.compile(output)


GOOD_X, GOOD_Y = np.zeros((4, 3)), np.zeros(4, dtype=np.int64)


def test_good_feeds_run(run: Callable[..., object]) -> None:
    value = np.asarray(run(x=GOOD_X, y=GOOD_Y)).reshape(-1)[0]
    np.testing.assert_allclose(value, np.log(3.0))


def test_wrong_feed_shape_is_refused_naming_the_input(run: Callable[..., object]) -> None:
    message = _feed_error(run, x=np.zeros((4, 2)), y=GOOD_Y)
    assert "'x'" in message and "f64[N,3]" in message and "(4, 2)" in message


def test_wrong_feed_rank_is_refused_naming_the_input(run: Callable[..., object]) -> None:
    message = _feed_error(run, x=GOOD_X, y=np.zeros((4, 1), dtype=np.int64))
    assert "'y'" in message and "(4, 1)" in message


def test_wrong_feed_dtype_is_refused_naming_the_input(run: Callable[..., object]) -> None:
    message = _feed_error(run, x=GOOD_X.astype(np.float32), y=GOOD_Y)
    assert "'x'" in message and "float32" in message and ".astype('float64')" in message


def test_inconsistent_batch_sizes_are_refused(run: Callable[..., object]) -> None:
    message = _feed_error(run, x=GOOD_X, y=np.zeros(5, dtype=np.int64))
    assert "'y'" in message and "N=4" in message


def test_missing_feed_is_refused_naming_the_input(run: Callable[..., object]) -> None:
    assert "'y'" in _feed_error(run, x=GOOD_X)


def test_non_array_feed_is_refused(run: Callable[..., object]) -> None:
    assert "NumPy array" in _feed_error(run, x=[[0.0, 0.0, 0.0]], y=GOOD_Y)



def test_feeds_the_function_does_not_read_are_ignored() -> None:
    x = gc.input("x", (2,), "float32")
    step = gc.compile(gc.exp(x))
    out = step(x=np.zeros(2, np.float32), y=np.ones(3, np.int32))
    np.testing.assert_array_equal(out, np.ones(2, np.float32))
