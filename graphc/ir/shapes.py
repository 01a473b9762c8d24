"""Shapes with symbolic dimensions.

A dimension is an ``int`` or a ``str`` naming a size known only when the step
runs.  ``None`` in a user-declared shape means the batch dimension ``"N"``, so a
graph built once serves every batch size.  Symbols only ever meet equal symbols
or 1 under broadcasting: we refuse to guess that ``N`` equals 5.
"""
from __future__ import annotations

from math import prod
from typing import Iterable, Mapping, Sequence, Union

Dim = Union[int, str]
Shape = tuple[Dim, ...]

BATCH = "N"


class ShapeMismatch(Exception):
    """Raised by shape rules; the node builder turns it into a ShapeError with context."""


def canonical_shape(shape: Iterable[object] | int) -> Shape:
    if isinstance(shape, int):
        shape = (shape,)
    dims: list[Dim] = []
    for d in shape:
        if d is None:
            dims.append(BATCH)
        elif isinstance(d, str) and d.isidentifier():
            dims.append(d)
        elif isinstance(d, (int,)) and not isinstance(d, bool) and d >= 0:
            dims.append(int(d))
        elif hasattr(d, "__index__") and int(d) >= 0:  # NumPy integers
            dims.append(int(d))
        else:
            raise ShapeMismatch(f"bad dimension {d!r}: use a non-negative int, None (batch) or a name")
    return tuple(dims)


def fmt(shape: Shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def is_static(shape: Shape) -> bool:
    return all(isinstance(d, int) for d in shape)


def broadcast(*shapes: Shape) -> Shape:
    """NumPy's broadcasting rule, extended to symbols (a symbol meets only itself or 1)."""
    ndim = max(len(s) for s in shapes)
    out: list[Dim] = []
    for axis in range(ndim):
        dims = {s[len(s) - ndim + axis] for s in shapes if len(s) - ndim + axis >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ShapeMismatch("shapes " + " and ".join(fmt(s) for s in shapes) + " do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def static_size(shape: Shape) -> int:
    """Product of the integer dimensions (symbols excluded)."""
    return prod(d for d in shape if isinstance(d, int))


def symbols_of(shape: Shape) -> list[str]:
    return sorted(d for d in shape if isinstance(d, str))


def same_size(a: Shape, b: Shape) -> bool:
    return static_size(a) == static_size(b) and symbols_of(a) == symbols_of(b)


def normalize_axes(axes: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, int):
        axes = (axes,)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeMismatch(f"axis {a} is out of range for a {ndim}-d operand")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeMismatch(f"repeated axis in {tuple(axes)}")
    return tuple(sorted(out))


def resolve(shape: Shape, symbols: Mapping[str, int]) -> tuple[int, ...]:
    """Concrete shape once the step knows its symbols."""
    return tuple(d if isinstance(d, int) else symbols[d] for d in shape)
