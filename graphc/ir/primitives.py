"""The primitive ops: for each, its shape/dtype rule and its NumPy reference meaning.

This table is the definition of the IR.  Every other table (gradient rules in
:mod:`graphc.autodiff.rules`, the NumPy lowering and the C expressions in
:mod:`graphc.backends`) is keyed by the same names and must cover the ops it
serves; tests check each of them against this one (``tests/test_gradients.py``,
``tests/test_fused_edge_values.py``), and ``tests/test_formulas.py`` checks every
op's meaning here against an independent NumPy transcription.  Composite
operations (softmax, cross-entropy, batch norm, ...) are not here: they are DSL
functions built from these, so passes and backends only ever see this small set.

A shape rule takes the operand nodes and the attributes and returns
``(shape, dtype)``; it raises :class:`ShapeMismatch` or :class:`DTypeMismatch`
with the bare complaint, and the node builder adds the op, the operand shapes
and the user's line.  A reference implementation takes NumPy arrays and the
attributes (with symbolic shapes already resolved) and returns an array.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from graphc.errors import FeedError
from graphc.ir import dtypes
from graphc.ir.shapes import Shape, ShapeMismatch, broadcast, fmt, is_static, same_size


class DTypeMismatch(Exception):
    """Raised by dtype rules; the node builder turns it into a DTypeError with context."""


@dataclass(frozen=True)
class Primitive:
    name: str
    kind: str
    infer: Callable[[Sequence[Any], Mapping[str, Any]], tuple[Shape, str]]
    impl: Callable[..., Any]


# Kinds group ops the passes and backends treat alike.
LEAF, UNARY, BINARY, COMPARE, SELECT, REDUCE, LINALG, LAYOUT, INDEX, RANDOM, MISC = (
    "leaf", "unary", "binary", "compare", "select", "reduce", "linalg", "layout", "index", "random", "misc")
ELEMENTWISE = (UNARY, BINARY, COMPARE, SELECT)

PRIMITIVES: dict[str, Primitive] = {}


def _define(name: str, kind: str, infer: Callable, impl: Callable) -> None:
    PRIMITIVES[name] = Primitive(name, kind, infer, impl)


# ---------------------------------------------------------------- dtype checks

def _require(dtype: str, allowed: str) -> None:
    ok = {"float": dtypes.is_float(dtype),
          "numeric": dtype != dtypes.BOOL,
          "int": dtypes.is_int(dtype),
          "bool": dtype == dtypes.BOOL,
          "any": True}[allowed]
    if not ok:
        raise DTypeMismatch(f"expects {allowed} operands, got {dtype}")


def _common_dtype(nodes: Sequence[Any], allowed: str) -> str:
    kinds = {n.dtype for n in nodes}
    if len(kinds) > 1:
        raise DTypeMismatch("operands have different dtypes " + " and ".join(n.dtype for n in nodes)
                            + "; convert one with gc.cast(x, dtype)")
    dtype = kinds.pop()
    _require(dtype, allowed)
    return dtype


# ---------------------------------------------------------------- leaves
# Leaves carry their shape and dtype as attributes; their values come from the
# caller (inputs), the runtime (param, state) or the attribute itself (constant).

def _leaf(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    return attrs["shape"], attrs["dtype"]


def _no_impl(*args: Any, **attrs: Any) -> Any:
    raise AssertionError("leaves are bound by the evaluator, not computed")


for _name in ("input", "param", "state"):
    _define(_name, LEAF, _leaf, _no_impl)
_define("constant", LEAF, _leaf, lambda value, shape, dtype: value.array)


# ---------------------------------------------------------------- elementwise

def _unary(allowed: str) -> Callable:
    def infer(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
        (x,) = inputs
        _require(x.dtype, allowed)
        return x.shape, x.dtype
    return infer


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # The tanh form never overflows, unlike 1 / (1 + exp(-x)).
    return 0.5 * np.tanh(0.5 * x) + 0.5


for _name, _allowed, _fn in [
    ("neg", "numeric", np.negative), ("exp", "float", np.exp), ("log", "float", np.log),
    ("tanh", "float", np.tanh), ("sigmoid", "float", _sigmoid),
    ("relu", "numeric", lambda x: np.maximum(x, 0)), ("sqrt", "float", np.sqrt),
    ("abs", "numeric", np.abs), ("sign", "numeric", np.sign),
    ("sin", "float", np.sin), ("cos", "float", np.cos),
]:
    _define(_name, UNARY, _unary(_allowed), _fn)


def _binary(allowed: str, result: str | None = None) -> Callable:
    def infer(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
        dtype = _common_dtype(inputs, allowed)
        return broadcast(*(n.shape for n in inputs)), result or dtype
    return infer


for _name, _allowed, _fn in [
    ("add", "numeric", np.add), ("sub", "numeric", np.subtract), ("mul", "numeric", np.multiply),
    ("div", "float", np.divide), ("pow", "float", np.power),
    ("maximum", "numeric", np.maximum), ("minimum", "numeric", np.minimum),
]:
    _define(_name, BINARY, _binary(_allowed), _fn)

for _name, _allowed, _fn in [
    ("lt", "numeric", np.less), ("le", "numeric", np.less_equal),
    ("gt", "numeric", np.greater), ("ge", "numeric", np.greater_equal),
    ("eq", "any", np.equal), ("ne", "any", np.not_equal),
]:
    _define(_name, COMPARE, _binary(_allowed, result=dtypes.BOOL), _fn)


def _where(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    cond, a, b = inputs
    if cond.dtype != dtypes.BOOL:
        raise DTypeMismatch(f"the condition must be bool, got {cond.dtype}")
    return broadcast(cond.shape, a.shape, b.shape), _common_dtype((a, b), "any")


_define("where", SELECT, _where, np.where)


# ---------------------------------------------------------------- reductions

def _reduce(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    (x,) = inputs
    _require(x.dtype, "numeric")
    axes, keep = attrs["axes"], attrs["keepdims"]
    if any(not 0 <= a < len(x.shape) for a in axes):
        raise ShapeMismatch(f"axes {axes} out of range for {fmt(x.shape)}")
    shape = tuple((1 if keep else None) if i in axes else d for i, d in enumerate(x.shape))
    return tuple(d for d in shape if d is not None), x.dtype


_define("sum", REDUCE, _reduce, lambda x, axes, keepdims: np.sum(x, axis=axes, keepdims=keepdims))
_define("max", REDUCE, _reduce, lambda x, axes, keepdims: np.max(x, axis=axes, keepdims=keepdims))


# ---------------------------------------------------------------- matmul

def _matmul(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    a, b = inputs
    dtype = _common_dtype(inputs, "float")
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise ShapeMismatch(f"expects two matrices, got {fmt(a.shape)} @ {fmt(b.shape)}")
    if a.shape[1] != b.shape[0]:
        raise ShapeMismatch(f"inner dimensions differ: {fmt(a.shape)} @ {fmt(b.shape)} "
                            f"({a.shape[1]} != {b.shape[0]})")
    return (a.shape[0], b.shape[1]), dtype


_define("matmul", LINALG, _matmul, np.matmul)


# ---------------------------------------------------------------- layout

def _reshape(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    (x,) = inputs
    if not same_size(x.shape, attrs["shape"]):
        raise ShapeMismatch(f"cannot reshape {fmt(x.shape)} into {fmt(attrs['shape'])}")
    return attrs["shape"], x.dtype


def _transpose(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    (x,) = inputs
    perm = attrs["perm"]
    if sorted(perm) != list(range(len(x.shape))):
        raise ShapeMismatch(f"{perm} is not a permutation of the axes of {fmt(x.shape)}")
    return tuple(x.shape[p] for p in perm), x.dtype


def _broadcast_to(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    (x,) = inputs
    target = attrs["shape"]
    if len(x.shape) > len(target) or broadcast(x.shape, target) != target:
        raise ShapeMismatch(f"cannot broadcast {fmt(x.shape)} to {fmt(target)}")
    return target, x.dtype


def _concat(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    dtype = _common_dtype(inputs, "any")
    if any(len(n.shape) != 1 or not is_static(n.shape) for n in inputs):
        raise ShapeMismatch("concatenates vectors of static length only")
    return (sum(n.shape[0] for n in inputs),), dtype


def _slice(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    (x,) = inputs
    start, stop = attrs["start"], attrs["stop"]
    if len(x.shape) != 1 or not is_static(x.shape) or not 0 <= start <= stop <= x.shape[0]:
        raise ShapeMismatch(f"cannot take [{start}:{stop}] of {fmt(x.shape)}")
    return (stop - start,), x.dtype


_define("reshape", LAYOUT, _reshape, lambda x, shape: np.reshape(x, shape))
_define("transpose", LAYOUT, _transpose, lambda x, perm: np.transpose(x, perm))
_define("broadcast_to", LAYOUT, _broadcast_to, lambda x, shape: np.broadcast_to(x, shape))
_define("concat", LAYOUT, _concat, lambda *xs: np.concatenate(xs))
_define("slice", LAYOUT, _slice, lambda x, start, stop: x[start:stop])


# ---------------------------------------------------------------- index / misc

def _one_hot(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    (labels,) = inputs
    _require(labels.dtype, "int")
    return labels.shape + (attrs["depth"],), attrs["dtype"]


def check_labels(labels: np.ndarray, depth: int, site: str = "") -> None:
    """Refuse class indices outside 0..depth-1 instead of giving their rows a zero one-hot.

    A zero row would silently drop the example from a cross-entropy (loss 0, no
    gradient), and the rewrite that sums one-hot rows to 1 relies on the range.
    Viewed as unsigned, a negative label is huge, so one max over the labels
    (a few microseconds for a batch) checks both ends.
    """
    if labels.size == 0:
        return
    unsigned = np.ascontiguousarray(labels).view(np.dtype(labels.dtype.str.replace("i", "u")))
    if unsigned.max() < depth:
        return
    bad = np.argwhere((labels < 0) | (labels >= depth))[0]
    where = f"row {bad[0]}" if labels.ndim == 1 else f"index {tuple(int(i) for i in bad)}"
    raise FeedError(f"one_hot: label {labels[tuple(bad)]} in {where} is out of range for {depth} classes "
                    f"(labels must lie in 0..{depth - 1}){site}")


def _one_hot_impl(labels: np.ndarray, depth: int, dtype: str) -> np.ndarray:
    check_labels(labels, depth)
    return (labels[..., None] == np.arange(depth)).astype(dtype)


def _cast(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    return inputs[0].shape, attrs["dtype"]


def _same(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    return inputs[0].shape, inputs[0].dtype


def _numel(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    return (), attrs["dtype"]


def _numel_impl(x: np.ndarray, axes: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.asarray(np.prod([x.shape[a] for a in axes]), dtype=dtype)


_define("one_hot", INDEX, _one_hot, _one_hot_impl)
_define("cast", MISC, _cast, lambda x, dtype: x.astype(dtype))
_define("stop_gradient", MISC, _same, lambda x: x)
_define("numel", MISC, _numel, _numel_impl)


# ---------------------------------------------------------------- random
# Random ops take the step's generator; their ``key`` attribute keeps two draws
# of the same shape from being merged into one node.

def _random(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    _require(attrs["dtype"], "float")
    return attrs["shape"], attrs["dtype"]


_define("normal", RANDOM, _random,
        lambda rng, shape, dtype, key: rng.standard_normal(shape, dtype=dtype))
_define("uniform", RANDOM, _random,
        lambda rng, shape, dtype, key: rng.random(shape, dtype=dtype))
