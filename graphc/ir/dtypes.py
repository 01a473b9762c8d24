"""The IR's five dtypes.

The IR is strict about dtypes, like a typed language: a binary op takes two
operands of one dtype and never promotes silently.  Python scalars are the one
exception (they take the dtype of the node they meet), which keeps ``2 * x``
readable without letting a float64 constant double the cost of a float32 model.
"""
from __future__ import annotations

import numpy as np

from graphc.errors import DTypeError

FLOATS = ("float32", "float64")
INTS = ("int32", "int64")
BOOL = "bool"
ALL = FLOATS + INTS + (BOOL,)

SHORT = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64", "bool": "bool"}


def canonical(dtype: object) -> str:
    """Name a dtype the way the IR does, from a string, a NumPy dtype or a type."""
    try:
        name = np.dtype(dtype).name  # type: ignore[call-overload]
    except TypeError as exc:
        raise DTypeError(f"unknown dtype {dtype!r}; use one of {', '.join(ALL)}") from exc
    if name not in ALL:
        raise DTypeError(f"dtype {name} is not supported; use one of {', '.join(ALL)}")
    return name


def is_float(dtype: str) -> bool:
    return dtype in FLOATS


def is_int(dtype: str) -> bool:
    return dtype in INTS
