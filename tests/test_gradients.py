"""Every gradient rule against central finite differences, in float64.

Coverage: the 27 primitives whose reverse-mode rule (``Primitive.vjp``, beside
its definition in :mod:`graphc.primitives`) is differentiable (a test fails
when a primitive with a rule is in neither table below), 11 composites built from them, second-order gradients of the 17
elementwise primitives and matmul, and the 10 primitives without a gradient.
Each property runs on ``EXAMPLES`` (30) drawn cases per op, second order on
``SECOND_ORDER_EXAMPLES`` (20), the ops without a gradient on 5, over drawn
shapes of 0 to 3 axes of size 1 to 4, with broadcasting for binary ops and
symbolic batch sizes for the batch losses.
A case passes when the norm-wise relative error of the symbolic gradient is at
most ``RTOL`` = 1e-6 (see :mod:`graphc.testing.gradcheck`).  Values keep away
from kinks and poles (relu and abs at 0, ties of maximum, minimum and max, log,
sqrt and division near 0, powers of non-positive bases), so every failure is a
wrong rule, not a finite difference straddling a kink.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import graphc as gc
from graphc import ops
from graphc.ir.graph import toposort
from graphc.ir.node import Node
from graphc.ir.registry import LEAF, PRIMITIVES, RANDOM
from graphc.testing import check_grads
from graphc.testing import strategies as gst

RTOL = 1e-6
EXAMPLES = 30
SECOND_ORDER_EXAMPLES = 20
FLOAT64 = "float64"


@dataclass(frozen=True)
class Case:
    """One drawn gradient check: values of the differentiated operands and how to build the output."""

    values: tuple[np.ndarray, ...]
    build: Callable[..., Node]                     # operand nodes -> output node
    fixed: dict[str, np.ndarray] = field(default_factory=dict)  # values of inputs not differentiated
    batch: bool = False                            # declare the operands' first axis symbolic
    eps: float = 1e-6

    def operands(self) -> list[Node]:
        return [ops.input(f"a{i}", ((None,) + v.shape[1:]) if self.batch else v.shape, FLOAT64)
                for i, v in enumerate(self.values)]

    def feeds(self) -> dict[str, np.ndarray]:
        return {**{f"a{i}": v for i, v in enumerate(self.values)}, **self.fixed}


def check_case(case: Case, seed: int, expect_op: Optional[str] = None) -> None:
    operands = case.operands()
    output = case.build(*operands)
    if expect_op is not None:
        assert expect_op in {n.op for n in toposort([output])}, f"the case for {expect_op} never builds it"
    errors = check_grads(output, case.feeds(), operands, eps=case.eps, rtol=RTOL, seed=seed)
    assert set(errors) == {x.name for x in operands}


# ---------------------------------------------------------------- drawing cases

Values = Callable[[tuple[int, ...]], st.SearchStrategy[np.ndarray]]


def uniform(low: float = -3.0, high: float = 3.0, away_from: tuple[float, ...] = (),
            margin: float = 0.05) -> Values:
    return lambda shape: gst.arrays(shape, low, high, away_from=away_from, margin=margin)


def lattice(offset: float = 0.0, spacing: float = 0.1, unique: bool = False) -> Values:
    return lambda shape: gst.lattice_arrays(shape, spacing=spacing, offset=offset, unique=unique)


def unary(fn: Callable[[Node], Node], values: Values = uniform()) -> st.SearchStrategy[Case]:
    @st.composite
    def draw_case(draw: Any) -> Case:
        return Case((draw(values(draw(gst.shapes()))),), fn)
    return draw_case()


def binary(fn: Callable[[Node, Node], Node], a: Values = uniform(), b: Values = uniform()) -> st.SearchStrategy[Case]:
    @st.composite
    def draw_case(draw: Any) -> Case:
        a_shape, b_shape = draw(gst.broadcastable_shapes())
        return Case((draw(a(a_shape)), draw(b(b_shape))), fn)
    return draw_case()


def along_axes(fn: Callable[[Node, Any, bool], Node], values: Values = uniform()) -> st.SearchStrategy[Case]:
    """A reduction-like op with drawn axes and keepdims."""
    @st.composite
    def draw_case(draw: Any) -> Case:
        shape = draw(gst.shapes())
        axes, keepdims = draw(gst.axes(len(shape))), draw(st.booleans())
        return Case((draw(values(shape)),), lambda x: fn(x, axes, keepdims))
    return draw_case()


def along_axis(fn: Callable[[Node, int], Node]) -> st.SearchStrategy[Case]:
    """A composite over one drawn axis (softmax and friends), the first axis possibly symbolic."""
    @st.composite
    def draw_case(draw: Any) -> Case:
        shape = draw(gst.shapes(min_dims=1))
        axis = draw(st.integers(-len(shape), len(shape) - 1))
        return Case((draw(gst.arrays(shape)),), lambda x: fn(x, axis), batch=draw(st.booleans()))
    return draw_case()


@st.composite
def logsumexp_case(draw: Any) -> Case:
    keepdims = draw(st.booleans())
    return draw(along_axis(lambda x, axis: gc.logsumexp(x, axis, keepdims)))


@st.composite
def matmul_case(draw: Any) -> Case:
    a_shape, b_shape = draw(gst.matmul_shapes())
    return Case((draw(gst.arrays(a_shape)), draw(gst.arrays(b_shape))), ops.matmul)


@st.composite
def where_case(draw: Any) -> Case:
    cond_shape, a_shape, b_shape = draw(gst.broadcastable_shapes(3))
    cond = draw(hnp.arrays(np.bool_, cond_shape))
    return Case((draw(gst.arrays(a_shape)), draw(gst.arrays(b_shape))),
                lambda a, b: ops.where(ops.input("cond", cond_shape, "bool"), a, b), fixed={"cond": cond})


@st.composite
def reshape_case(draw: Any) -> Case:
    shape = draw(gst.shapes())
    target = draw(gst.reshape_targets(shape))
    return Case((draw(gst.arrays(shape)),), lambda x: ops.reshape(x, target))


@st.composite
def transpose_case(draw: Any) -> Case:
    shape = draw(gst.shapes(min_dims=2))  # 3 axes have permutations that are not their own inverse
    perm = draw(st.permutations(range(len(shape))))
    return Case((draw(gst.arrays(shape)),), lambda x: ops.transpose(x, perm))


@st.composite
def broadcast_to_case(draw: Any) -> Case:
    shape = draw(gst.shapes())
    target = draw(gst.broadcast_targets(shape))
    return Case((draw(gst.arrays(shape)),), lambda x: ops.broadcast_to(x, target))


@st.composite
def concat_case(draw: Any) -> Case:
    lengths = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    return Case(tuple(draw(gst.arrays((n,))) for n in lengths), lambda *xs: ops.concat(xs))


@st.composite
def slice_case(draw: Any) -> Case:
    n = draw(st.integers(1, 6))
    start = draw(st.integers(0, n))
    stop = draw(st.integers(start, n))
    return Case((draw(gst.arrays((n,))),), lambda x: ops.slice(x, start, stop))


@st.composite
def cast_case(draw: Any) -> Case:
    # Values and step on a dyadic grid make x ± eps exact in float32 too, so the
    # difference quotient through a float32 round trip is exact.
    shape = draw(gst.shapes())
    return Case((draw(gst.lattice_arrays(shape, spacing=1 / 16)),),
                lambda x: ops.cast(ops.cast(x, "float32"), FLOAT64), eps=2.0 ** -10)


@st.composite
def cross_entropy_labels_case(draw: Any) -> Case:
    batch, classes = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    labels = draw(hnp.arrays(np.int64, (batch,), elements=st.integers(0, classes - 1)))
    reduction = draw(st.sampled_from(["mean", "sum"]))
    symbolic = draw(st.booleans())

    def build(logits: Node) -> Node:
        return gc.softmax_cross_entropy(logits, ops.input("labels", logits.shape[:-1], "int64"), reduction)
    return Case((draw(gst.arrays((batch, classes))),), build, fixed={"labels": labels}, batch=symbolic)


@st.composite
def cross_entropy_one_hot_case(draw: Any) -> Case:
    batch, classes = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    labels = draw(hnp.arrays(np.int64, (batch,), elements=st.integers(0, classes - 1)))
    reduction = draw(st.sampled_from(["mean", "sum"]))
    targets = np.eye(classes)[labels]
    return Case((draw(gst.arrays((batch, classes))), targets),
                lambda logits, t: gc.softmax_cross_entropy(logits, t, reduction), batch=draw(st.booleans()))


@st.composite
def batch_mean_case(draw: Any) -> Case:
    """The mean over a symbolic batch axis divides by a size known only at run time."""
    return Case((draw(gst.arrays(draw(gst.shapes(min_dims=1)))),), lambda x: ops.mean(x, axis=0), batch=True)


def pair_loss(loss: Callable[..., Node], prediction: Values, target: Values) -> st.SearchStrategy[Case]:
    """A batch loss of two same-shaped operands, both differentiated, with a drawn reduction."""
    @st.composite
    def draw_case(draw: Any) -> Case:
        shape = draw(gst.shapes(min_dims=1))
        reduction = draw(st.sampled_from(["mean", "sum"]))
        return Case((draw(prediction(shape)), draw(target(shape))), lambda p, t: loss(p, t, reduction),
                    batch=draw(st.booleans()))
    return draw_case()


POSITIVE = uniform(0.1, 4.0)
AWAY_FROM_ZERO = uniform(away_from=(0.0,))

# Every primitive with a differentiable rule, with values where its derivative exists.
PRIMITIVE_CASES: dict[str, st.SearchStrategy[Case]] = {
    "neg": unary(ops.neg), "exp": unary(ops.exp), "log": unary(ops.log, POSITIVE),
    "tanh": unary(ops.tanh), "sigmoid": unary(ops.sigmoid, uniform(-4.0, 4.0)),
    "relu": unary(ops.relu, AWAY_FROM_ZERO), "sqrt": unary(ops.sqrt, POSITIVE),
    "abs": unary(ops.abs, AWAY_FROM_ZERO), "sin": unary(ops.sin), "cos": unary(ops.cos),
    "add": binary(ops.add), "sub": binary(ops.sub), "mul": binary(ops.mul),
    "div": binary(ops.div, b=uniform(away_from=(0.0,), margin=0.25)),
    "pow": binary(ops.pow, a=uniform(0.2, 3.0), b=uniform(-2.0, 2.0)),
    "maximum": binary(ops.maximum, a=lattice(0.0), b=lattice(0.05)),
    "minimum": binary(ops.minimum, a=lattice(0.0), b=lattice(0.05)),
    "where": where_case(),
    "sum": along_axes(ops.sum),
    "max": along_axes(ops.max, lattice(spacing=0.05, unique=True)),
    "matmul": matmul_case(), "reshape": reshape_case(), "transpose": transpose_case(),
    "broadcast_to": broadcast_to_case(), "concat": concat_case(), "slice": slice_case(),
    "cast": cast_case(),
    "allreduce": unary(ops.allreduce),
}

COMPOSITE_CASES: dict[str, st.SearchStrategy[Case]] = {
    "softmax": along_axis(gc.softmax),
    "log_softmax": along_axis(gc.log_softmax),
    "logsumexp": logsumexp_case(),
    "softmax_cross_entropy/labels": cross_entropy_labels_case(),
    "softmax_cross_entropy/one_hot": cross_entropy_one_hot_case(),
    "mse": pair_loss(gc.mse, uniform(), uniform()),
    "sigmoid_binary_cross_entropy": pair_loss(gc.sigmoid_binary_cross_entropy, AWAY_FROM_ZERO, uniform(0.0, 1.0)),
    "mean": along_axes(ops.mean),
    "mean/batch": batch_mean_case(),
    "min": along_axes(ops.min, lattice(spacing=0.05, unique=True)),
    "square": unary(ops.square),
}

ELEMENTWISE = [op for op in PRIMITIVE_CASES if PRIMITIVES[op].kind in ("unary", "binary")]
SECOND_ORDER = ELEMENTWISE + ["matmul"]

@dataclass(frozen=True)
class Blocked:
    """A primitive whose rule gives no cotangent, applied to a float input x of ``shape``.

    ``flat``: the op is locally constant in x there, so finite differences must
    see a zero gradient too (stop_gradient is zero by decree, not by calculus)."""

    build: Callable[[Node], Node]
    shape: tuple[Any, ...] = (2, 3)
    flat: bool = True


NON_DIFFERENTIABLE: dict[str, Blocked] = {
    **{op: Blocked(lambda x, fn=fn: fn(x, ops.tanh(x) * 0.5))
       for op, fn in [("lt", ops.less), ("le", ops.less_equal), ("gt", ops.greater),
                      ("ge", ops.greater_equal), ("eq", ops.equal), ("ne", ops.not_equal)]},
    "sign": Blocked(ops.sign),
    "one_hot": Blocked(lambda x: ops.one_hot(ops.cast(ops.greater(x, 0.0), "int32"), 2, FLOAT64)),
    "numel": Blocked(lambda x: ops.numel(x, 0, FLOAT64), shape=(None, 3)),
    "stop_gradient": Blocked(ops.stop_gradient, flat=False),
}


# ---------------------------------------------------------------- coverage

def test_every_primitive_with_operands_has_a_gradient_rule() -> None:
    needs_rule = {name for name, prim in PRIMITIVES.items() if prim.kind not in (LEAF, RANDOM)}
    assert {name for name in needs_rule if PRIMITIVES[name].vjp is None} == set()


def test_every_gradient_rule_is_in_a_table() -> None:
    ruled = {name for name, prim in PRIMITIVES.items() if prim.vjp is not None}
    assert ruled - set(PRIMITIVE_CASES) - set(NON_DIFFERENTIABLE) == set(), "add a case for the new rule"
    assert set(PRIMITIVE_CASES) & set(NON_DIFFERENTIABLE) == set()
    assert set(PRIMITIVE_CASES) | set(NON_DIFFERENTIABLE) <= ruled, "a table lists an op that no longer exists"


# ---------------------------------------------------------------- first order

@pytest.mark.parametrize("op", sorted(PRIMITIVE_CASES))
@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_primitive_gradient_matches_finite_differences(op: str, data: st.DataObject, seed: int) -> None:
    check_case(data.draw(PRIMITIVE_CASES[op]), seed, expect_op=op)


@pytest.mark.parametrize("name", sorted(COMPOSITE_CASES))
@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_composite_gradient_matches_finite_differences(name: str, data: st.DataObject, seed: int) -> None:
    check_case(data.draw(COMPOSITE_CASES[name]), seed)


# ---------------------------------------------------------------- second order

@pytest.mark.parametrize("op", SECOND_ORDER)
@settings(max_examples=SECOND_ORDER_EXAMPLES, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_gradient_of_gradient_matches_finite_differences(op: str, data: st.DataObject, seed: int) -> None:
    """Each first-order gradient, itself a graph, checked like any output (projected on a random cotangent)."""
    case = data.draw(PRIMITIVE_CASES[op])
    operands = case.operands()
    output = case.build(*operands)
    cotangent = ops.constant(np.random.default_rng(seed).standard_normal(output.shape), FLOAT64)
    for first in gc.grad(output, operands, seed=cotangent):
        check_grads(first, case.feeds(), operands, rtol=RTOL, seed=seed)


# ---------------------------------------------------------------- no gradient

@pytest.mark.parametrize("op", sorted(NON_DIFFERENTIABLE))
@settings(max_examples=5, deadline=None)
@given(values=gst.arrays((3, 3), away_from=(-0.5, 0.0, 0.5), margin=0.05))
def test_non_differentiable_primitive_has_zero_gradient(op: str, values: np.ndarray) -> None:
    blocked = NON_DIFFERENTIABLE[op]
    x = ops.input("x", blocked.shape, FLOAT64)
    node = blocked.build(x)
    assert node.op == op
    assert PRIMITIVES[op].vjp(ops.zeros_like(node), node, *node.inputs) == (None,) * len(node.inputs)
    output = ops.sum(ops.cast(node, FLOAT64))
    _, gradient = gc.evaluate([x, *gc.grad(output, [x])], {"x": values[:2]})
    assert gradient.shape == (2, 3) and not np.any(gradient)
    if blocked.flat:
        check_grads(output, {"x": values[:2]}, [x], rtol=RTOL)


# ---------------------------------------------------------------- the checker itself

def test_check_grads_reports_a_wrong_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PRIMITIVES["sin"], "vjp", lambda g, out, x: (g * ops.cos(x) * 1.001,))
    x, w = ops.input("x", (2, 3), FLOAT64), gc.param("w", (3,), dtype=FLOAT64)
    values = {"x": np.linspace(-1.0, 1.0, 6).reshape(2, 3)}
    with pytest.raises(AssertionError) as info:
        check_grads(ops.sin(x) * w, values, [x, w], variables={"w": np.array([1.0, -2.0, 0.5])})
    message = str(info.value)
    assert "input 'x' f64[2,3]" in message and "largest difference at index" in message
    assert "param 'w'" not in message


def test_check_grads_returns_small_errors_for_a_right_rule() -> None:
    x, w = ops.input("x", (None, 3), FLOAT64), gc.param("w", (3, 2), dtype=FLOAT64)
    rng = np.random.default_rng(0)
    errors = check_grads(gc.softmax(ops.tanh(x) @ w), {"x": rng.standard_normal((4, 3))}, [x, w],
                         variables={"w": rng.standard_normal((3, 2))})
    assert set(errors) == {"x", "w"} and max(errors.values()) < RTOL


def test_check_grads_refuses_float32() -> None:
    x32, x64 = ops.input("x32", (2,), "float32"), ops.input("x64", (2,), FLOAT64)
    with pytest.raises(gc.DTypeError, match="float64"):
        check_grads(ops.sum(ops.cast(x32, FLOAT64)), {"x32": np.zeros(2, np.float32)}, [x32])
    with pytest.raises(gc.DTypeError, match="x64"):
        check_grads(ops.sum(x64), {"x64": np.zeros(2, np.float32)}, [x64])
    with pytest.raises(gc.DTypeError, match="output"):
        check_grads(ops.sum(x32), {"x32": np.zeros(2, np.float32)}, [])


def test_check_grads_refuses_a_computed_wrt_node() -> None:
    x = ops.input("x", (2,), FLOAT64)
    with pytest.raises(gc.GraphcError, match="inputs, params or state"):
        check_grads(ops.sum(ops.exp(x)), {"x": np.zeros(2)}, [ops.exp(x)])


def _evaluate_alone(output: Node, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return gc.evaluate([output], feeds)[0]


def _compile_alone(output: Node, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(gc.compile(output)(**feeds))


@pytest.mark.parametrize("run", [_evaluate_alone, _compile_alone], ids=["interpreter", "compiled"])
def test_gradient_with_respect_to_a_batch_input_alone_names_the_unknown_size(
        run: Callable[[Node, dict[str, np.ndarray]], np.ndarray]) -> None:
    """d sum(x)/dx is broadcast_to(1, (N, 3)): a graph that reads no input, so nothing gives N.
    That is refused with a message naming N, not a bare KeyError or NameError."""
    x = ops.input("x", (None, 3), FLOAT64)
    (gradient,) = gc.grad(ops.sum(x), [x])
    with pytest.raises(gc.FeedError, match="size N is not known"):
        run(gradient, {"x": np.zeros((2, 3))})


def test_gradient_with_respect_to_a_batch_input_with_a_reader_of_it() -> None:
    x = ops.input("x", (None, 3), FLOAT64)
    (gradient,) = gc.grad(ops.sum(x), [x])
    value, _ = gc.compile([gradient, ops.sum(x)])(x=np.zeros((2, 3)))
    np.testing.assert_array_equal(value, np.ones((2, 3)))
