"""Helpers the generated NumPy code calls where NumPy has no single function.

Each takes an optional ``out`` so the memory planner can place its result in a
preallocated buffer like any ufunc's.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def sigmoid(x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """σ(x) = ½ tanh(x/2) + ½: one transcendental, and no overflow for large |x|."""
    if out is None:
        out = np.empty(np.shape(x), np.result_type(x))
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    np.multiply(out, 0.5, out=out)
    return np.add(out, 0.5, out=out)


def where(cond: np.ndarray, a: object, b: object, out: Optional[np.ndarray] = None) -> np.ndarray:
    """np.where into ``out``, correct when ``out`` is ``a`` or ``b`` (the planner's in-place case)."""
    if out is None:
        return np.where(cond, a, b)
    if out is cond:  # the condition is about to be overwritten: read it all first
        np.copyto(out, np.where(cond, a, b))
    elif out is a:
        np.copyto(out, b, where=np.logical_not(cond))
    else:
        if out is not b:
            np.copyto(out, b)
        np.copyto(out, a, where=cond)
    return out


def one_hot(labels: np.ndarray, depth: int, dtype: type, out: Optional[np.ndarray] = None) -> np.ndarray:
    if out is None:
        out = np.empty(labels.shape + (depth,), dtype)
    return np.equal(labels[..., None], np.arange(depth, dtype=labels.dtype), out=out)


def cast(x: np.ndarray, dtype: type, out: Optional[np.ndarray] = None) -> np.ndarray:
    if out is None:
        return x.astype(dtype)
    np.copyto(out, x, casting="unsafe")
    return out
