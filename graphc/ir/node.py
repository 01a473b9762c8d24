"""IR nodes: structurally immutable, and hash-consed so that structurally equal nodes are one object.

Hash-consing gives common-subexpression elimination for free (the gradient of
``exp(x)`` reuses the forward ``exp(x)`` node) and makes node identity the
same thing as structural equality, so graphs can live in dicts and sets keyed
by identity.  The table holds nodes weakly: a graph nobody references is freed.

Op, operands, attributes, shape and dtype never change once a node exists.
Non-structural facts ride along and do not take part in its identity: the
user's source line and the gradient rule that made it (set once, by its first
builder: a second model that builds an equal node shares it, provenance
included), and the ``meta`` dict, which is mutable on purpose: a parameter's
initializer and the layer that built a node are attached after it is made.
"""
from __future__ import annotations

import itertools
import weakref
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from graphc.errors import DTypeError, ShapeError
from graphc.ir import dtypes
from graphc.ir.registry import PRIMITIVES, DTypeMismatch, Primitive
from graphc.ir.shapes import Shape, ShapeMismatch, fmt
from graphc.ir.site import Origin, Site, at_site, current_origin, inherited_meta, user_site


class Literal:
    """An array constant, hashable by value so equal constants are one node."""

    __slots__ = ("array", "_key")

    def __init__(self, value: Any, dtype: str):
        array = np.array(value, dtype=dtype)
        array.setflags(write=False)
        self.array = array
        self._key = (array.shape, array.dtype.str, array.tobytes())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Literal) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        if self.array.ndim == 0:
            return str(self.array[()])
        return f"array{list(self.array.shape)}"


_serials = itertools.count()
_table: "weakref.WeakValueDictionary[tuple, Node]" = weakref.WeakValueDictionary()


# Drawing sits above the IR: :mod:`graphc.draw` registers how to picture a node when it is imported.
picture: Optional[Callable[["Node"], Optional[str]]] = None


class Node:
    """One value of the graph: an op applied to input nodes with static attributes."""

    __slots__ = ("op", "inputs", "attrs", "shape", "dtype", "serial", "site", "origin", "meta",
                 "__weakref__")

    op: str
    inputs: tuple["Node", ...]
    attrs: Mapping[str, Any]
    shape: Shape
    dtype: str
    serial: int
    site: Optional[Site]
    origin: Optional[Origin]
    meta: dict[str, Any]

    # ---- introspection --------------------------------------------------------
    @property
    def primitive(self) -> Primitive:
        return PRIMITIVES[self.op]

    @property
    def kind(self) -> str:
        return PRIMITIVES[self.op].kind

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def name(self) -> Optional[str]:
        """The user's name for a leaf (input, param, state); None for computed nodes."""
        return self.attrs.get("name")

    @property
    def is_variable(self) -> bool:
        """Held by the runtime between steps (parameters and state)."""
        return self.op in ("param", "state")

    def __repr__(self) -> str:
        label = self.name or self.op
        return f"<{label} {dtypes.SHORT[self.dtype]}{fmt(self.shape)}>"

    def __bool__(self) -> bool:
        raise TypeError("a graph node has no truth value while the graph is being built; "
                        "use gc.where(cond, a, b) to select values")

    __hash__ = object.__hash__

    def _repr_svg_(self) -> Optional[str]:
        """Jupyter's picture of a node: the graph that computes it, drawn by :mod:`graphc.draw`
        (None before that is imported, or without Graphviz's ``dot``: Jupyter shows the text)."""
        return picture(self) if picture is not None else None


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def make(op: str, inputs: Sequence[Node] = (), **attrs: Any) -> Node:
    """Build (or find) the node ``op(*inputs)``; the one door through which nodes are made."""
    prim = PRIMITIVES[op]
    attrs = {k: _freeze(v) for k, v in attrs.items()}
    inputs = tuple(inputs)
    try:
        shape, dtype = prim.infer(inputs, attrs)
    except ShapeMismatch as exc:
        raise ShapeError(describe_failure(op, inputs, str(exc))) from None
    except DTypeMismatch as exc:
        raise DTypeError(describe_failure(op, inputs, str(exc))) from None
    key = (op, tuple(id(i) for i in inputs), tuple(sorted(attrs.items())))
    node = _table.get(key)
    if node is None:
        node = object.__new__(Node)
        node.op, node.inputs, node.attrs = op, inputs, attrs
        node.shape, node.dtype = shape, dtype
        node.serial = next(_serials)
        node.site = user_site()
        node.origin = current_origin()
        node.meta = inherited_meta()
        _table[key] = node
    return node


def describe_failure(op: str, inputs: Sequence[Node], complaint: str) -> str:
    """One message naming the op, its operands' shapes and dtypes, and the user's line."""
    operands = ", ".join(f"{dtypes.SHORT[n.dtype]}{fmt(n.shape)}" for n in inputs)
    return f"{op}({operands}): {complaint}{at_site(user_site())}"


def unique_key() -> int:
    """A fresh integer for attributes that must keep otherwise-equal nodes apart."""
    return next(_serials)
