"""What a primitive op is, and the registry of them.

A :class:`Primitive` has a shape/dtype rule and a NumPy reference meaning, and
slots for everything else that is said about it: its reverse-mode rule and its
lowering for each backend.  The ops themselves are defined in
:mod:`graphc.primitives`, one family per module, each op with all its rules in
one place (the way JAX registers ``defjvp`` and ``register_lowering`` beside each
primitive).  Only the leaves are defined here, because the IR's own evaluator
binds them.  Composite operations (softmax, cross-entropy, batch norm, ...) are
not primitives: they are DSL functions built from these, so passes and backends
only ever see this small set.

Tests check each slot against the ops it serves (``tests/test_gradients.py``,
``tests/test_fused_edge_values.py``, ``tests/test_backends.py``), and
``tests/test_formulas.py`` checks every op's NumPy meaning against an
independent NumPy transcription.

A shape rule takes the operand nodes and the attributes and returns
``(shape, dtype)``; it raises :class:`ShapeMismatch` or :class:`DTypeMismatch`
with the bare complaint, and the node builder adds the op, the operand shapes
and the user's line.  A reference implementation takes NumPy arrays and the
attributes (with symbolic shapes already resolved) and returns an array.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from graphc.ir import dtypes
from graphc.ir.shapes import Shape


class DTypeMismatch(Exception):
    """Raised by dtype rules; the node builder turns it into a DTypeError with context."""


Infer = Callable[[Sequence[Any], Mapping[str, Any]], tuple[Shape, str]]


@dataclass(eq=False)
class Primitive:
    name: str
    kind: str
    infer: Infer
    impl: Callable[..., Any]
    # (g, out, *operands) → one cotangent per operand (None where not differentiable), in the DSL
    vjp: Optional[Callable[..., tuple]] = None
    # backend ("numpy", "c", "cuda") → that backend's rule for this op
    lowerings: dict[str, Any] = field(default_factory=dict)


# Kinds group ops the passes and backends treat alike.
LEAF, UNARY, BINARY, COMPARE, SELECT, REDUCE, LINALG, LAYOUT, INDEX, RANDOM, COLLECTIVE, MISC = (
    "leaf", "unary", "binary", "compare", "select", "reduce", "linalg", "layout", "index", "random", "collective",
    "misc")
ELEMENTWISE = (UNARY, BINARY, COMPARE, SELECT)

PRIMITIVES: dict[str, Primitive] = {}


def define(name: str, kind: str, infer: Infer, impl: Callable[..., Any], *,
           vjp: Optional[Callable[..., tuple]] = None, **lowerings: Any) -> Primitive:
    """Define the primitive ``name`` with its rules; ``lowerings`` are keyed by backend."""
    prim = PRIMITIVES[name] = Primitive(name, kind, infer, impl, vjp, dict(lowerings))
    return prim


def lowering(op: str, backend: str) -> Any:
    """The rule ``backend`` lowers ``op`` with (None if it has none)."""
    return PRIMITIVES[op].lowerings.get(backend)


# ---------------------------------------------------------------- dtype checks

def require(dtype: str, allowed: str) -> None:
    ok = {"float": dtypes.is_float(dtype),
          "numeric": dtype != dtypes.BOOL,
          "int": dtypes.is_int(dtype),
          "bool": dtype == dtypes.BOOL,
          "any": True}[allowed]
    if not ok:
        raise DTypeMismatch(f"expects {allowed} operands, got {dtype}")


def common_dtype(nodes: Sequence[Any], allowed: str) -> str:
    kinds = {n.dtype for n in nodes}
    if len(kinds) > 1:
        raise DTypeMismatch("operands have different dtypes " + " and ".join(n.dtype for n in nodes)
                            + "; convert one with gc.cast(x, dtype)")
    dtype = kinds.pop()
    require(dtype, allowed)
    return dtype


# ---------------------------------------------------------------- leaves
# Leaves carry their shape and dtype as attributes; their values come from the
# caller (inputs), the runtime (param, state) or the attribute itself (constant).

def _leaf(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    return attrs["shape"], attrs["dtype"]


def _no_impl(*args: Any, **attrs: Any) -> Any:
    raise AssertionError("leaves are bound by the evaluator, not computed")


for _name in ("input", "param", "state"):
    define(_name, LEAF, _leaf, _no_impl)
define("constant", LEAF, _leaf, lambda value, shape, dtype: value.array)
