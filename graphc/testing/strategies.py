"""Hypothesis strategies for property tests of graphs: shapes, well-conditioned values, random graphs.

Finite differences are only valid where a function is smooth at the scale of
the step, so the value strategies keep away from kinks (relu and abs at 0, ties
of ``maximum`` and of ``max``) by construction: values are pushed out of a
margin around each kink, or drawn from lattices that cannot tie.  Filtering
instead would discard most draws, since Hypothesis favours exactly the values
(0, repeated elements) that sit on kinks.

Random graphs come in two modes.  ``smooth`` graphs use only ops that are
differentiable everywhere on the values they can see: ``log`` and ``sqrt`` only
of provably positive operands, ``exp`` only of bounded ones, division only by
operands bounded away from zero; they are for gradient checks.  Full graphs add
every kinked or non-differentiable op (relu, abs, sign, maximum, max, where,
comparisons, casts, stop_gradient); they are for checking compiled code against
the interpreter, where kinks do not matter.  Graphs stay small (a few inputs of
at most 3 dimensions of size at most 4, at most ``max_ops`` drawn ops) so each
example evaluates in milliseconds.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from graphc import composites, ops
from graphc.ir.node import Node

Shape = tuple[int, ...]
Draw = Callable[[st.SearchStrategy[Any]], Any]
FLOAT64 = "float64"
MAX_DIMS = 3
MAX_SIDE = 4


# ---------------------------------------------------------------- shapes

def shapes(min_dims: int = 0, max_dims: int = MAX_DIMS, min_side: int = 1,
           max_side: int = MAX_SIDE) -> st.SearchStrategy[Shape]:
    """Small static shapes: scalars up to ``max_dims`` dimensions, each of size 1 to ``max_side``."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(num_shapes: int = 2, min_dims: int = 0, max_dims: int = MAX_DIMS,
                         max_side: int = MAX_SIDE) -> st.SearchStrategy[tuple[Shape, ...]]:
    """``num_shapes`` shapes that broadcast together (size-1 and missing leading axes included)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims,
                                             min_side=1, max_side=max_side).map(lambda b: b.input_shapes)


@st.composite
def matmul_shapes(draw: Draw, max_side: int = MAX_SIDE) -> tuple[Shape, Shape]:
    """Shapes ``(m, k)`` and ``(k, n)`` of two matrices that multiply."""
    m, k, n = (draw(st.integers(1, max_side)) for _ in range(3))
    return (m, k), (k, n)


@st.composite
def reshape_targets(draw: Draw, shape: Shape, max_dims: int = MAX_DIMS) -> Shape:
    """A shape with as many elements as ``shape``: its prime factors dealt out to 0 to ``max_dims`` axes."""
    factors = _prime_factors(math.prod(shape))
    ndim = draw(st.integers(1 if factors else 0, max_dims))
    dims = [1] * ndim
    for factor in factors:
        dims[draw(st.integers(0, ndim - 1))] *= factor
    return tuple(dims)


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors


@st.composite
def broadcast_targets(draw: Draw, shape: Shape, max_dims: int = MAX_DIMS) -> Shape:
    """A shape ``shape`` broadcasts to: size-1 axes may grow, leading axes may be added."""
    grown = tuple(draw(st.integers(1, 3)) if d == 1 else d for d in shape)
    lead = draw(st.lists(st.integers(1, 3), max_size=max_dims - len(shape)))
    return tuple(lead) + grown


@st.composite
def axes(draw: Draw, ndim: int) -> Optional[tuple[int, ...]]:
    """Reduction axes of a ``ndim``-d operand: None (all), or a subset, possibly empty, with negative indices."""
    if draw(st.booleans()):
        return None
    chosen = draw(st.lists(st.integers(0, max(ndim - 1, 0)), unique=True, max_size=ndim)) if ndim else []
    return tuple(a - ndim if draw(st.booleans()) else a for a in chosen)


# ---------------------------------------------------------------- values

def arrays(shape: Shape, low: float = -3.0, high: float = 3.0, *, away_from: Sequence[float] = (),
           margin: float = 0.05) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` with values in [low, high], none within ``margin`` of a point in ``away_from``.

    A value that falls too close to a kink is pushed out to the nearest edge of
    its margin, so kinks should lie at least ``2 * margin`` apart and that far
    inside the range.
    """
    elements = st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    drawn = hnp.arrays(np.float64, shape, elements=elements)
    return drawn.map(lambda values: _push_away(values, away_from, margin)) if away_from else drawn


def _push_away(values: np.ndarray, kinks: Sequence[float], margin: float) -> np.ndarray:
    pushed = np.array(values, dtype=np.float64)
    for kink in kinks:
        close = np.abs(pushed - kink) < margin
        pushed[close] = np.where(pushed[close] >= kink, kink + margin, kink - margin)
    return pushed


def lattice_arrays(shape: Shape, low: float = -3.0, high: float = 3.0, *, spacing: float = 0.1,
                   offset: float = 0.0, unique: bool = False) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` with values on the lattice ``offset + spacing * k`` within [low, high].

    Arrays on two interleaved lattices (offsets 0 and ``spacing / 2``) never tie,
    element against element, whatever the broadcasting; a ``unique`` array has a
    single maximum along any axis.  Either way no two values are closer than
    the spacing allows, far more than a finite-difference step.
    """
    first, last = math.ceil((low - offset) / spacing), math.floor((high - offset) / spacing)
    if unique and math.prod(shape) > last - first + 1:
        raise ValueError(f"the lattice on [{low}, {high}] with spacing {spacing} has too few points "
                         f"for {math.prod(shape)} unique values")
    steps = hnp.arrays(np.int64, shape, elements=st.integers(first, last), unique=unique)
    return steps.map(lambda k: offset + spacing * k.astype(np.float64))


# ---------------------------------------------------------------- random graphs

class RandomGraph(NamedTuple):
    output: Node                 # a float64 scalar: the sum of the last float node built
    inputs: list[Node]           # float64 inputs named x0, x1, ...
    values: dict[str, np.ndarray]  # a value for each input, by name
    nodes: list[Node]            # every node the drawn ops made, in order: float, bool and int


class _Pools:
    """The nodes built so far, by what they can be used as."""

    def __init__(self, inputs: list[Node]) -> None:
        self.floats: list[Node] = list(inputs)
        self.bools: list[Node] = []
        self.ints: list[Node] = []
        self.made: dict[Node, None] = {}

    def add(self, node: Node) -> None:
        pool = self.bools if node.dtype == "bool" else self.floats if node.dtype == FLOAT64 else self.ints
        if node not in self.made:
            pool.append(node)
            self.made[node] = None


Builder = Callable[[Draw, _Pools], Optional[Node]]


def _broadcasts(a: Shape, b: Shape) -> bool:
    try:
        np.broadcast_shapes(a, b)
    except ValueError:
        return False
    return True


def _pick(draw: Draw, nodes: Sequence[Node]) -> Node:
    return draw(st.sampled_from(nodes))


def _partner(draw: Draw, pools: _Pools, like: Shape) -> Node:
    """A float node whose shape broadcasts with ``like`` (there is always one: ``like``'s own node, at least)."""
    return _pick(draw, [n for n in pools.floats if _broadcasts(n.shape, like)])


def _positive(x: Node) -> Node:
    """A transform of ``x`` with values in (0.5, 1.5): safe under log, sqrt, division and as a power's base."""
    return ops.sigmoid(x) + 0.5


def _unary(fn: Callable[[Node], Node]) -> Builder:
    return lambda draw, pools: fn(_pick(draw, pools.floats))


def _binary(fn: Callable[[Node, Node], Node]) -> Builder:
    def build(draw: Draw, pools: _Pools) -> Node:
        a = _pick(draw, pools.floats)
        return fn(a, _partner(draw, pools, a.shape))
    return build


def _scale(draw: Draw, pools: _Pools) -> Node:
    return _pick(draw, pools.floats) * draw(st.floats(-2.0, 2.0, allow_subnormal=False))


def _reduce(fn: Callable[..., Node]) -> Builder:
    def build(draw: Draw, pools: _Pools) -> Node:
        x = _pick(draw, pools.floats)
        return fn(x, draw(axes(x.ndim)), draw(st.booleans()))
    return build


def _along_axis(fn: Callable[[Node, int], Node]) -> Builder:
    def build(draw: Draw, pools: _Pools) -> Optional[Node]:
        x = _pick(draw, pools.floats)
        return fn(x, draw(st.integers(-x.ndim, x.ndim - 1))) if x.ndim else None
    return build


def _logsumexp(draw: Draw, pools: _Pools) -> Optional[Node]:
    keepdims = draw(st.booleans())
    return _along_axis(lambda x, axis: composites.logsumexp(x, axis, keepdims))(draw, pools)


def _matmul(draw: Draw, pools: _Pools) -> Optional[Node]:
    matrices = [n for n in pools.floats if n.ndim == 2]
    if not matrices:
        return None
    a = _pick(draw, matrices)
    return a @ _pick(draw, [n for n in matrices if n.shape[0] == a.shape[1]] + [ops.transpose(a)])


def _reshape(draw: Draw, pools: _Pools) -> Node:
    x = _pick(draw, pools.floats)
    target = list(draw(reshape_targets(x.shape)))
    if target and draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return ops.reshape(x, target)


def _transpose(draw: Draw, pools: _Pools) -> Node:
    x = _pick(draw, pools.floats)
    return ops.transpose(x, draw(st.permutations(range(x.ndim))))


def _broadcast_to(draw: Draw, pools: _Pools) -> Node:
    x = _pick(draw, pools.floats)
    return ops.broadcast_to(x, draw(broadcast_targets(x.shape)))


def _flat(x: Node) -> Node:
    return ops.reshape(x, (-1,))


def _concat(draw: Draw, pools: _Pools) -> Node:
    return ops.concat([_flat(_pick(draw, pools.floats)), _flat(_pick(draw, pools.floats))])


def _slice(draw: Draw, pools: _Pools) -> Node:
    x = _flat(_pick(draw, pools.floats))
    start = draw(st.integers(0, x.shape[0] - 1))
    return ops.slice(x, start, draw(st.integers(start + 1, x.shape[0])))


_COMPARISONS = (ops.less, ops.less_equal, ops.greater, ops.greater_equal, ops.equal, ops.not_equal)


def _comparison(draw: Draw, pools: _Pools) -> Node:
    a = _pick(draw, pools.floats)
    b = 0.0 if draw(st.booleans()) else _partner(draw, pools, a.shape)
    return draw(st.sampled_from(_COMPARISONS))(a, b)


def _where(draw: Draw, pools: _Pools) -> Node:
    cond = _comparison(draw, pools)
    a = _partner(draw, pools, cond.shape)
    shape = np.broadcast_shapes(cond.shape, a.shape)
    b = 0.0 if draw(st.booleans()) else _partner(draw, pools, shape)
    return ops.where(cond, a, b)


def _mask(draw: Draw, pools: _Pools) -> Optional[Node]:
    return ops.cast(_pick(draw, pools.bools), FLOAT64) if pools.bools else None


def _count(draw: Draw, pools: _Pools) -> Optional[Node]:
    if not pools.bools:
        return None
    flags = ops.cast(_pick(draw, pools.bools), draw(st.sampled_from(["int32", "int64"])))
    return ops.sum(flags, draw(axes(flags.ndim)))


def _float32_round_trip(x: Node) -> Node:
    return ops.cast(ops.cast(x, "float32"), FLOAT64)


SMOOTH_OPS: dict[str, Builder] = {
    "neg": _unary(ops.neg), "tanh": _unary(ops.tanh), "sigmoid": _unary(ops.sigmoid),
    "sin": _unary(ops.sin), "cos": _unary(ops.cos), "square": _unary(ops.square),
    "exp": _unary(lambda x: ops.exp(ops.tanh(x))),
    "log": _unary(lambda x: ops.log(_positive(x))),
    "sqrt": _unary(lambda x: ops.sqrt(ops.exp(ops.tanh(x)))),
    "scale": _scale,
    "add": _binary(ops.add), "sub": _binary(ops.sub), "mul": _binary(ops.mul),
    "div": _binary(lambda a, b: a / _positive(b)),
    "pow": _binary(lambda a, b: _positive(a) ** ops.tanh(b)),
    "sum": _reduce(ops.sum), "mean": _reduce(ops.mean),
    "matmul": _matmul, "reshape": _reshape, "transpose": _transpose, "broadcast_to": _broadcast_to,
    "concat": _concat, "slice": _slice,
    "softmax": _along_axis(composites.softmax), "log_softmax": _along_axis(composites.log_softmax),
    "logsumexp": _logsumexp,
}

KINKED_OPS: dict[str, Builder] = {
    "relu": _unary(ops.relu), "abs": _unary(ops.abs), "sign": _unary(ops.sign),
    "stop_gradient": _unary(ops.stop_gradient), "float32_round_trip": _unary(_float32_round_trip),
    "maximum": _binary(ops.maximum), "minimum": _binary(ops.minimum),
    "max": _reduce(ops.max), "min": _reduce(ops.min),
    "comparison": _comparison, "where": _where, "mask": _mask, "count": _count,
}


@st.composite
def graphs(draw: Draw, smooth: bool = False, max_inputs: int = 3, max_ops: int = 8) -> RandomGraph:
    """A random well-typed float64 graph ending in a scalar sum, with values for its inputs.

    Input shapes share a few drawn sizes, so broadcasting partners and matrices
    that multiply turn up often.  Each drawn op applies to earlier nodes whose
    types fit it; one that fits none is skipped.  See the module docstring for
    what ``smooth`` guarantees.
    """
    sides = draw(st.lists(st.integers(1, MAX_SIDE), min_size=1, max_size=3))
    inputs = [ops.input(f"x{i}", draw(st.lists(st.sampled_from(sides), max_size=MAX_DIMS)), FLOAT64)
              for i in range(draw(st.integers(1, max_inputs)))]
    low, high = (-2.0, 2.0) if smooth else (-3.0, 3.0)
    values = {x.name: draw(arrays(x.shape, low, high)) for x in inputs}
    builders = SMOOTH_OPS if smooth else {**SMOOTH_OPS, **KINKED_OPS}
    pools = _Pools(inputs)
    for _ in range(draw(st.integers(1, max_ops))):
        node = builders[draw(st.sampled_from(sorted(builders)))](draw, pools)
        if node is not None:
            pools.add(node)
    return RandomGraph(ops.sum(pools.floats[-1]), inputs, values, list(pools.made))
