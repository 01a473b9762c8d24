"""The IR's five dtypes.

The IR is strict about dtypes, like a typed language: a binary op takes two
operands of one dtype and never promotes silently.  Python scalars are the one
exception (they take the dtype of the node they meet), which keeps ``2 * x``
readable without letting a float64 constant double the cost of a float32 model.
"""
from __future__ import annotations

from typing import Optional

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


def misfit(array: np.ndarray, dtype: str) -> Optional[str]:
    """Why the values of ``array`` cannot be stored as ``dtype`` without changing, or None if they can.

    Integers must be whole and in range, floats must not overflow to infinity
    (infinities and NaN given as such are kept), bools must be 0 or 1.
    """
    values = array.ravel()
    if values.size == 0:
        return None
    shown = values[0] if array.ndim == 0 else f"array with values in [{min(values)}, {max(values)}]"
    if values.dtype == object:  # Python integers too large for int64
        if not all(isinstance(v, int) for v in values):
            return f"the constant {shown} is not a number"
        if is_int(dtype):
            info = np.iinfo(dtype)
            return None if info.min <= min(values) and max(values) <= info.max else \
                f"the constant {shown} does not fit {dtype}"
        values = np.array([float(v) for v in values])
    if values.dtype.kind not in "biuf":
        return f"the constant {shown} is not a number"
    if dtype == BOOL:
        ok = np.isin(values, (0, 1)).all()
    elif is_int(dtype):
        info = np.iinfo(dtype)
        whole = values.dtype.kind != "f" or bool((np.isfinite(values) & (values == np.round(values))).all())
        ok = whole and info.min <= values.min() and values.max() <= info.max
    else:
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        ok = finite.size == 0 or float(np.max(np.abs(finite))) <= float(np.finfo(dtype).max)
    return None if ok else f"the constant {shown} does not fit {dtype}"
