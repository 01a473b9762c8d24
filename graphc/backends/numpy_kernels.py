"""Helpers the generated NumPy code calls where NumPy has no single function.

Each takes an optional ``out`` so the memory planner can place its result in a
preallocated buffer like any ufunc's.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from graphc.errors import GraphcError
from graphc.parallel.communicator import active
from graphc.primitives.misc import check_labels


def sigmoid(x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """σ(x) = ½ tanh(x/2) + ½: one transcendental, and no overflow for large |x|."""
    if out is None:
        out = np.empty(np.shape(x), np.result_type(x))
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    np.multiply(out, 0.5, out=out)
    return np.add(out, 0.5, out=out)


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
