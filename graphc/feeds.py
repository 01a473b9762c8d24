"""Checks on the values a user feeds, shared by the reference interpreter, the generated
NumPy code and the GPU binding, so every path rejects bad input with the same message:
shapes and dtypes against the declared inputs (learning the symbolic sizes), and
class labels within range."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from graphc.errors import FeedError
from graphc.ir import dtypes
from graphc.ir.node import Node
from graphc.ir.shapes import fmt


def bind_symbols(leaves: Sequence[Node], values: Sequence[Any]) -> dict[str, int]:
    """Check each fed value against its leaf and learn the sizes of symbolic dimensions."""
    symbols: dict[str, int] = {}
    for leaf, value in zip(leaves, values):
        shape = getattr(value, "shape", None)
        dtype = getattr(value, "dtype", None)
        what = f"{leaf.op} '{leaf.name}' expects {dtypes.SHORT[leaf.dtype]}{fmt(leaf.shape)}"
        if shape is None or dtype is None:
            raise FeedError(f"{what}, got {type(value).__name__}; pass a NumPy array")
        if len(shape) != leaf.ndim:
            raise FeedError(f"{what}, got an array of shape {tuple(shape)}")
        if np.dtype(dtype).name != leaf.dtype:
            raise FeedError(f"{what}, got dtype {np.dtype(dtype).name}; convert with .astype('{leaf.dtype}')")
        for declared, actual in zip(leaf.shape, shape):
            if isinstance(declared, int):
                if declared != actual:
                    raise FeedError(f"{what}, got an array of shape {tuple(shape)}")
            elif symbols.setdefault(declared, actual) != actual:
                raise FeedError(f"{what}, got an array of shape {tuple(shape)}, "
                                f"but another input set {declared}={symbols[declared]}")
    return symbols



def check_labels(labels: np.ndarray, depth: int, site: str = "") -> None:
    """Refuse class indices outside 0..depth-1 instead of giving their rows a zero one-hot.

    A zero row would silently drop the example from a cross-entropy (loss 0, no
    gradient), and the rewrite that sums one-hot rows to 1 relies on the range.
    Viewed as unsigned, a negative label is huge, so one max over the labels
    (a few microseconds for a batch) checks both ends.
    """
    if labels.size == 0:
        return
    unsigned = np.ascontiguousarray(labels).view(np.dtype(labels.dtype.str.replace("i", "u")))
    if unsigned.max() < depth:
        return
    bad = np.argwhere((labels < 0) | (labels >= depth))[0]
    where = f"row {bad[0]}" if labels.ndim == 1 else f"index {tuple(int(i) for i in bad)}"
    raise FeedError(f"one_hot: label {labels[tuple(bad)]} in {where} is out of range for {depth} classes "
                    f"(labels must lie in 0..{depth - 1}){site}")
