"""The DSL: functions that build primitive nodes, with NumPy-like signatures.

These are thin: they turn Python scalars and arrays into constants, normalize
arguments (negative axes, ``-1`` in reshape), and call :func:`make`.  All
checking lives in the shape rules, so the DSL and the gradient rules (which call
these same functions) cannot disagree about what an op accepts.
"""
from __future__ import annotations

import builtins
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from graphc.errors import DTypeError, GraphcError, ShapeError
from graphc.ir import dtypes
from graphc.ir.node import Literal, Node, describe_failure, make, unique_key
from graphc.ir.shapes import Shape, ShapeMismatch, canonical_shape, normalize_axes, static_size, symbols_of
from graphc.ir.site import at_site, user_site
from graphc.parallel.communicator import REDUCTIONS

__all__ = [
    "abs", "add", "allreduce", "broadcast_to", "cast", "concat", "constant", "cos", "div", "equal", "exp",
    "greater", "greater_equal", "input", "less", "less_equal", "log", "matmul", "max", "maximum",
    "mean", "min", "minimum", "mul", "neg", "normal", "not_equal", "numel", "one_hot", "ones_like",
    "param", "pow", "relu", "reshape", "sigmoid", "sign", "sin", "slice", "sqrt", "square", "state",
    "stop_gradient", "sub", "sum", "tanh", "transpose", "uniform", "where", "zeros_like", "lift",
]

Operand = Union[Node, float, int, bool, np.ndarray, np.generic]
Axes = Union[int, Sequence[int], None]

# ---------------------------------------------------------------- leaves


def input(name: str, shape: Sequence[Any], dtype: Any = "float32") -> Node:  # noqa: A001
    """A value fed to every call of the compiled step.  ``None`` in ``shape`` is the batch size."""
    return make("input", (), name=_leaf_name("input", name), shape=_shape(shape), dtype=dtypes.canonical(dtype))


def param(name: str, shape: Sequence[int], init: Optional[Callable] = None,
          dtype: Any = "float32") -> Node:
    """A trainable variable, held by the runtime.  ``init(rng, shape, dtype)`` makes its first value.

    Each call makes a new parameter, even with an equal name: two layers must not
    silently share weights because their names collide (the compiler refuses that).
    """
    node = make("param", (), name=_leaf_name("param", name), shape=_shape(shape), dtype=dtypes.canonical(dtype),
                uid=unique_key())
    node.meta["init"] = init
    return node


def state(name: str, shape: Sequence[int], init: Optional[Callable] = None,
          dtype: Any = "float32") -> Node:
    """A non-trainable variable held by the runtime (running statistics, optimizer moments)."""
    node = make("state", (), name=_leaf_name("state", name), shape=_shape(shape), dtype=dtypes.canonical(dtype),
                uid=unique_key())
    node.meta["init"] = init
    return node


def _leaf_name(op: str, name: Any) -> str:
    """A leaf's name is printed in generated code, pictures and checkpoints: printable text, then."""
    if not isinstance(name, str) or not name or not name.isprintable():
        raise GraphcError(f"{op} names must be non-empty printable text, without control characters such as "
                          f"a line break or NUL; got {name!r}{at_site(user_site())}")
    return name


def constant(value: Any, dtype: Any = None, *, op: str = "constant", like: Sequence[Node] = ()) -> Node:
    """A constant node.  A value that ``dtype`` cannot hold (``2**40`` as int32, ``1e40`` as
    float32, ``2.5`` as an integer) is a DTypeError naming ``op``, its operands ``like`` and the
    user's line, rather than a silent wrap-around or infinity."""
    array = np.asarray(value)
    dt = dtypes.canonical(dtype if dtype is not None else _default_dtype(array))
    complaint = dtypes.misfit(array, dt)
    if complaint is not None:
        raise DTypeError(describe_failure(op, like, complaint))
    lit = Literal(array, dt)
    return make("constant", (), value=lit, shape=lit.array.shape, dtype=dt)


def _default_dtype(array: np.ndarray) -> str:
    if array.dtype == np.float64 and array.ndim == 0:
        return "float32"
    if array.dtype == np.int64 and array.ndim == 0:
        return "int32"
    return array.dtype.name


def _shape(shape: Any) -> Shape:
    try:
        return canonical_shape(shape)
    except ShapeMismatch as exc:
        raise ShapeError(str(exc)) from None


def lift(value: Operand, like: Optional[Node] = None, op: str = "constant") -> Node:
    """A node for ``value``; Python scalars take the dtype of ``like`` (weak typing)."""
    if isinstance(value, Node):
        return value
    if isinstance(value, (bool, int, float)) and like is not None:
        if isinstance(value, float) and not dtypes.is_float(like.dtype):
            raise DTypeError(describe_failure(op, (like,), f"cannot combine the float {value!r} with a "
                                              f"{like.dtype} operand; cast it first with gc.cast(x, 'float32')"))
        return constant(value, like.dtype, op=op, like=(like,))
    return constant(value, op=op)


def _pair(a: Operand, b: Operand, op: str) -> tuple[Node, Node]:
    if not isinstance(a, Node) and not isinstance(b, Node):
        raise TypeError(f"{op}: at least one operand must be a graph node")
    like = a if isinstance(a, Node) else b
    return lift(a, like, op), lift(b, like, op)  # type: ignore[arg-type]


# ---------------------------------------------------------------- elementwise

def _unary(op: str) -> Callable[[Operand], Node]:
    def build(x: Operand) -> Node:
        return make(op, (lift(x),))
    build.__name__ = op
    return build


def _binary(op: str) -> Callable[[Operand, Operand], Node]:
    def build(a: Operand, b: Operand) -> Node:
        return make(op, _pair(a, b, op))
    build.__name__ = op
    return build


neg, exp, log, tanh, sigmoid, relu = (_unary(o) for o in ("neg", "exp", "log", "tanh", "sigmoid", "relu"))
sqrt, abs, sign, sin, cos = (_unary(o) for o in ("sqrt", "abs", "sign", "sin", "cos"))  # noqa: A001
add, sub, mul, div, pow = (_binary(o) for o in ("add", "sub", "mul", "div", "pow"))  # noqa: A001
maximum, minimum = _binary("maximum"), _binary("minimum")
less, less_equal, greater, greater_equal = (_binary(o) for o in ("lt", "le", "gt", "ge"))
equal, not_equal = _binary("eq"), _binary("ne")


def square(x: Operand) -> Node:
    x = lift(x)
    return mul(x, x)


def where(cond: Node, a: Operand, b: Operand) -> Node:
    a_node, b_node = _pair(a, b, "where")
    return make("where", (cond, a_node, b_node))


# ---------------------------------------------------------------- reductions

def _axes(x: Node, axis: Axes, op: str) -> tuple[int, ...]:
    try:
        return normalize_axes(axis, x.ndim)
    except ShapeMismatch as exc:
        raise ShapeError(describe_failure(op, (x,), str(exc))) from None


def sum(x: Operand, axis: Axes = None, keepdims: bool = False) -> Node:  # noqa: A001
    x = lift(x)
    return make("sum", (x,), axes=_axes(x, axis, "sum"), keepdims=bool(keepdims))


def max(x: Operand, axis: Axes = None, keepdims: bool = False) -> Node:  # noqa: A001
    x = lift(x)
    return make("max", (x,), axes=_axes(x, axis, "max"), keepdims=bool(keepdims))


def min(x: Operand, axis: Axes = None, keepdims: bool = False) -> Node:  # noqa: A001
    return neg(max(neg(x), axis, keepdims))


def numel(x: Node, axis: Axes = None, dtype: Optional[str] = None) -> Node:
    """The number of elements along ``axis``, as a scalar node; symbolic sizes resolve at run time."""
    axes = _axes(x, axis, "numel")
    sizes = [x.shape[a] for a in axes]
    dt = dtype or x.dtype
    if builtins.all(isinstance(d, int) for d in sizes):
        return constant(float(np.prod(sizes)) if dtypes.is_float(dt) else int(np.prod(sizes)), dt)
    return make("numel", (x,), axes=axes, dtype=dt)


def mean(x: Operand, axis: Axes = None, keepdims: bool = False) -> Node:
    x = lift(x)
    return div(sum(x, axis, keepdims), numel(x, axis))


# ---------------------------------------------------------------- linear algebra and layout

def matmul(a: Operand, b: Operand) -> Node:
    return make("matmul", _pair(a, b, "matmul"))


def reshape(x: Operand, shape: Sequence[Any]) -> Node:
    x = lift(x)
    return make("reshape", (x,), shape=_infer_minus_one(x, tuple(shape)))


def _infer_minus_one(x: Node, shape: tuple[Any, ...]) -> Shape:
    """Resolve one ``-1`` entry from the element count, symbols included."""
    if -1 not in shape:
        return _shape(shape)
    rest = _shape(tuple(d for d in shape if d != -1))
    missing_symbols = list(symbols_of(x.shape))
    for s in symbols_of(rest):
        if s in missing_symbols:
            missing_symbols.remove(s)
    known = static_size(rest)
    total = static_size(x.shape)
    if len(missing_symbols) > 1 or known == 0 or total % known:
        raise ShapeError(describe_failure("reshape", (x,), f"cannot infer -1 in {shape}"))
    if missing_symbols:
        if total != known:
            raise ShapeError(describe_failure("reshape", (x,), f"cannot infer -1 in {shape}"))
        fill: Any = missing_symbols[0]
    else:
        fill = total // known
    return _shape(tuple(fill if d == -1 else d for d in shape))


def transpose(x: Operand, perm: Optional[Sequence[int]] = None) -> Node:
    x = lift(x)
    order = tuple(reversed(range(x.ndim))) if perm is None else tuple(p % builtins.max(x.ndim, 1) for p in perm)
    return make("transpose", (x,), perm=order)


def broadcast_to(x: Operand, shape: Sequence[Any]) -> Node:
    x = lift(x)
    return make("broadcast_to", (x,), shape=_shape(shape))


def concat(xs: Sequence[Node]) -> Node:
    return make("concat", tuple(xs))


def slice(x: Node, start: int, stop: int) -> Node:  # noqa: A001
    return make("slice", (x,), start=int(start), stop=int(stop))


# ---------------------------------------------------------------- conversions, indexing, random

def cast(x: Operand, dtype: Any) -> Node:
    x = lift(x)
    dt = dtypes.canonical(dtype)
    return x if x.dtype == dt else make("cast", (x,), dtype=dt)


def one_hot(labels: Node, depth: int, dtype: Any = "float32") -> Node:
    return make("one_hot", (labels,), depth=int(depth), dtype=dtypes.canonical(dtype))


def stop_gradient(x: Node) -> Node:
    """The value of ``x``, treated as a constant by :func:`graphc.grad`."""
    return make("stop_gradient", (x,))


def allreduce(x: Node, reduction: str = "mean") -> Node:
    """The mean (or ``"sum"``) of ``x`` over the ranks of a data-parallel run (``x`` itself in one process)."""
    if reduction not in REDUCTIONS:
        raise GraphcError(f"allreduce: reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return make("allreduce", (x,), reduction=reduction)


def normal(shape: Sequence[Any], dtype: Any = "float32") -> Node:
    """Standard normal noise, drawn afresh at every step from the runtime's generator."""
    return make("normal", (), shape=_shape(shape), dtype=dtypes.canonical(dtype), key=unique_key())


def uniform(shape: Sequence[Any], dtype: Any = "float32") -> Node:
    """Uniform noise on [0, 1), drawn afresh at every step."""
    return make("uniform", (), shape=_shape(shape), dtype=dtypes.canonical(dtype), key=unique_key())


def zeros_like(x: Node) -> Node:
    return broadcast_to(constant(0, x.dtype), x.shape)


def ones_like(x: Node) -> Node:
    return broadcast_to(constant(1, x.dtype), x.shape)


# ---------------------------------------------------------------- operators on nodes
# The IR knows nothing of the DSL; the DSL gives nodes their Python operators and
# methods, so that ``x @ W + b`` builds the same nodes as ``add(matmul(x, W), b)``.

def _reshape_method(self: Node, *shape: Any) -> Node:
    return reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)


_OPERATORS: dict[str, Any] = {
    "__add__": lambda a, b: add(a, b), "__radd__": lambda a, b: add(b, a),
    "__sub__": lambda a, b: sub(a, b), "__rsub__": lambda a, b: sub(b, a),
    "__mul__": lambda a, b: mul(a, b), "__rmul__": lambda a, b: mul(b, a),
    "__truediv__": lambda a, b: div(a, b), "__rtruediv__": lambda a, b: div(b, a),
    "__pow__": lambda a, b: pow(a, b), "__rpow__": lambda a, b: pow(b, a),
    "__matmul__": lambda a, b: matmul(a, b), "__rmatmul__": lambda a, b: matmul(b, a),
    "__neg__": lambda a: neg(a), "__abs__": lambda a: abs(a),
    "__lt__": lambda a, b: less(a, b), "__le__": lambda a, b: less_equal(a, b),
    "__gt__": lambda a, b: greater(a, b), "__ge__": lambda a, b: greater_equal(a, b),
    "__eq__": lambda a, b: equal(a, b), "__ne__": lambda a, b: not_equal(a, b),
    "T": property(lambda a: transpose(a)),
    "reshape": _reshape_method,
    "sum": lambda a, axis=None, keepdims=False: sum(a, axis, keepdims),
    "mean": lambda a, axis=None, keepdims=False: mean(a, axis, keepdims),
    "max": lambda a, axis=None, keepdims=False: max(a, axis, keepdims),
    "astype": lambda a, dtype: cast(a, dtype),
}
for _name, _method in _OPERATORS.items():
    setattr(Node, _name, _method)
