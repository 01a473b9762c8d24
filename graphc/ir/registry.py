"""What a primitive op is, and the registry of them.

A :class:`Primitive` has a shape/dtype rule and a NumPy reference meaning, and
slots for everything else that is said about it: its reverse-mode rule, its
lowering for each backend, and the facts about its memory that the passes and
backends read (is it a leaf, a view, a strided view, a value without a buffer),
so that no module keeps a list of op names of its own.  The ops themselves are
defined in :mod:`graphc.primitives`, one family per module, each op with all its
rules in one place (the way JAX registers ``defjvp`` and ``register_lowering``
beside each primitive).  Only the leaves are defined here, because the IR's own
evaluator binds them.  Composite operations (softmax, cross-entropy, batch norm,
...) are not primitives: they are DSL functions built from these, so passes and
backends only ever see this small set.

Tests check each slot against the ops it serves (``tests/test_gradients.py``,
``tests/test_fused_edge_values.py``, ``tests/test_backends.py``, the facts in
``tests/test_contracts.py``), and ``tests/test_formulas.py`` checks every op's
NumPy meaning against an independent NumPy transcription.

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
    # where a leaf's value comes from (FED, HELD or LITERAL); None for a computed value
    leaf: Optional[str] = None
    # shares its operand's memory wherever the memory plan allows (a layout op NumPy does as a view)
    view: bool = False
    # a view whose elements are not at consecutive addresses (a transpose, a broadcast)
    strided: bool = False
    # a scalar expression NumPy returns as a Python number: the plan gives it no buffer
    no_buffer: bool = False


# Kinds group ops the passes and backends treat alike.
LEAF, UNARY, BINARY, COMPARE, SELECT, REDUCE, LINALG, LAYOUT, INDEX, RANDOM, COLLECTIVE, MISC = (
    "leaf", "unary", "binary", "compare", "select", "reduce", "linalg", "layout", "index", "random", "collective",
    "misc")
ELEMENTWISE = (UNARY, BINARY, COMPARE, SELECT)

# Where a leaf's value comes from: the caller, in every call (an input); the runtime's store,
# across calls (a param, a state); the node's own attribute (a constant).
FED, HELD, LITERAL = "fed", "held", "literal"

BACKENDS = ("numpy", "c", "cuda")
FACTS = ("leaf", "view", "strided", "no_buffer")
# The type a backend's rules must have, where the backend's lowering table says so
# (graphc.lowering.cuda_rules registers its enum: the IR imports nothing above it).
RULE_TYPES: dict[str, type] = {}

PRIMITIVES: dict[str, Primitive] = {}


def define(name: str, kind: str, infer: Infer, impl: Callable[..., Any], *,
           vjp: Optional[Callable[..., tuple]] = None, **rules: Any) -> Primitive:
    """Define the primitive ``name`` with its rules: a lowering per backend and the facts about it.

    An unknown key is refused rather than stored, so that a misspelt backend or fact cannot
    silently leave an op without its lowering or make it lose a fact the planner relies on."""
    unknown = sorted(set(rules) - set(BACKENDS) - set(FACTS))
    if unknown:
        raise TypeError(f"define({name!r}): unknown keyword {', '.join(map(repr, unknown))}; "
                        f"the valid ones are vjp, the backends {', '.join(BACKENDS)} "
                        f"and the facts {', '.join(FACTS)}")
    lowerings = {k: v for k, v in rules.items() if k in BACKENDS}
    for backend, rule in lowerings.items():
        expected = RULE_TYPES.get(backend)
        if expected is not None and not isinstance(rule, expected):
            raise TypeError(f"define({name!r}): the {backend} rule must be a {expected.__name__}, "
                            f"one of {', '.join(m.name for m in expected)}; got {rule!r}")
    facts = {k: v for k, v in rules.items() if k in FACTS}
    prim = PRIMITIVES[name] = Primitive(name, kind, infer, impl, vjp, lowerings, **facts)
    return prim


def lowering(op: str, backend: str) -> Any:
    """The rule ``backend`` lowers ``op`` with (None if it has none)."""
    return PRIMITIVES[op].lowerings.get(backend)


# ---------------------------------------------------------------- facts

def is_leaf(op: str) -> bool:
    """Is ``op`` a value that lives outside the memory plan (an input, a variable, a constant)?"""
    return PRIMITIVES[op].leaf is not None


def is_named_leaf(op: str) -> bool:
    """Is ``op`` a leaf whose value is looked up by its name when the graph runs (fed or held)?"""
    return PRIMITIVES[op].leaf in (FED, HELD)


def is_literal(op: str) -> bool:
    """Is ``op`` a leaf whose value is its own attribute (a constant, which no step writes)?"""
    return PRIMITIVES[op].leaf == LITERAL


def is_fed(op: str) -> bool:
    """Is ``op`` a leaf the caller passes to every call (so its memory is new in each call)?"""
    return PRIMITIVES[op].leaf == FED


def is_view(op: str) -> bool:
    """Does ``op`` share its operand's memory wherever the plan allows?"""
    return PRIMITIVES[op].view


def is_strided(op: str) -> bool:
    """Is ``op`` a view whose elements are not at consecutive addresses?"""
    return PRIMITIVES[op].strided


def has_no_buffer(op: str) -> bool:
    """Is ``op`` a scalar expression that NumPy returns as a number, needing no buffer?"""
    return PRIMITIVES[op].no_buffer


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


define("input", LEAF, _leaf, _no_impl, leaf=FED)
define("param", LEAF, _leaf, _no_impl, leaf=HELD)
define("state", LEAF, _leaf, _no_impl, leaf=HELD)
define("constant", LEAF, _leaf, lambda value, shape, dtype: value.array, leaf=LITERAL)
