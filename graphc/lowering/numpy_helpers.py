"""Helpers the generated NumPy code calls where NumPy has no single function.

Each takes an optional ``out`` so the memory planner can place its result in a
preallocated buffer like any ufunc's.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from graphc.errors import GraphcError
from graphc.parallel.communicator import active, batch_window
from graphc.feeds import check_labels


def sigmoid(x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """σ(x) = 1 / (1 + e) for x ≥ 0 and e / (1 + e) below, with e = exp(-|x|) ≤ 1: it never
    overflows, and keeps its relative precision in both tails (the form ½ tanh(x/2) + ½ is left
    with rounding noise below about -20).  ``out`` may be ``x``."""
    x = np.asarray(x)
    e = np.asarray(np.exp(-np.abs(x)))  # an array even for a 0-d x, so that it takes out=
    numerator = np.where(x >= 0, x.dtype.type(1), e)
    np.add(e, 1, out=e)
    if out is None:
        return np.divide(numerator, e)
    return np.divide(numerator, e, out=out)


def draw(rng: np.random.Generator, kind: str, shape: tuple, dtype: type, batched: bool,
         out: Optional[np.ndarray] = None) -> np.ndarray:
    """Normal or uniform numbers of ``shape`` from ``rng``.  For a value over the batch (``batched``)
    computed as a share of a global batch (:func:`graphc.parallel.communicator.batch_window`), the
    numbers of the whole batch are drawn and this share's rows kept, so every rank draws what one
    process would, and the generators of all ranks stay in step."""
    window = batch_window() if batched else None
    full = shape if window is None else (window[0],) + tuple(shape[1:])
    values = rng.standard_normal(full, dtype=dtype) if kind == "normal" else rng.random(full, dtype=dtype)
    if window is not None:
        values = values[window[1]:window[1] + shape[0]]
    if out is None:
        return values
    np.copyto(out, values)
    return out


def where(cond: np.ndarray, a: object, b: object, out: Optional[np.ndarray] = None) -> np.ndarray:
    """np.where into ``out``, allocating nothing; ``out`` may be ``b`` (the plan's only in-place case)."""
    if out is None:
        return np.where(cond, a, b)
    if out is not b:
        np.copyto(out, b)
    np.copyto(out, a, where=cond)
    return out


def one_hot(labels: np.ndarray, depth: int, dtype: type, out: Optional[np.ndarray] = None,
            site: str = "") -> np.ndarray:
    check_labels(labels, depth, site)
    if out is None:
        out = np.empty(labels.shape + (depth,), dtype)
    return np.equal(labels[..., None], np.arange(depth, dtype=labels.dtype), out=out)


def cast(x: np.ndarray, dtype: type, out: Optional[np.ndarray] = None) -> np.ndarray:
    if out is None:
        return x.astype(dtype)
    np.copyto(out, x, casting="unsafe")
    return out


def allreduce(x: np.ndarray, reduction: str, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The mean or sum over ranks, on the communicator active when the step runs (not when it was compiled)."""
    return active().allreduce(np.asarray(x), reduction, out)


def bound_view(view: np.ndarray, base: np.ndarray, node: str) -> np.ndarray:
    """A view made once when the step is bound, checked to be one.

    The step reads such a view in every call, so it must share memory with the
    buffer or variable it views; a copy would be a snapshot of the bind-time
    contents.  The memory plan makes a reshape that NumPy cannot view a planned
    copy instead, so this only fires on a planning bug, and fires loudly.
    """
    if view.size and not np.may_share_memory(view, base):
        raise GraphcError(f"internal error: the view {node} made when binding the step is a copy of its operand; "
                          f"please report this graph (compile with passes=False to work around it)")
    return view
