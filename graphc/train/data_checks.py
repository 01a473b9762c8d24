"""Checks that a model and its data belong together, made before any training.

A model with seven outputs trained on ten classes is refused by the
cross-entropy only when a batch holds a label it has no column for, once the
steps are compiled and training has begun, and a loss of the user's own may
not look at all.  A
NaN in the features poisons every parameter at the first step.  Both are cheap
to see from the arrays and the graph's shapes, so they are refused up front,
in one line that names the model's side and the data's side.  The data's
fingerprint, recorded in checkpoints, tells a resumed run whether it sees the
same data.
"""
from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np

from graphc.errors import DataError, ShapeError
from graphc.ir import dtypes
from graphc.ir.node import Node
from graphc.ir.shapes import fmt


def check_values(splits: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Features must be finite; integer labels must be class indices (0 or more)."""
    for split, (x, y) in splits.items():
        if len(x) and x.dtype.kind == "f" and not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0])
            raise DataError(f"example {bad} of the {split} split holds NaN or infinity; "
                            f"clean or drop it before training")
        if len(y) and y.dtype.kind == "f" and not np.isfinite(y).all():
            raise DataError(f"the {split} split's targets hold NaN or infinity; clean them before training")
        if len(y) and y.dtype.kind in "iu" and y.min() < 0:
            raise DataError(f"the {split} split has label {int(y.min())}; class labels must be 0 or more")


def fingerprint(splits: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """A digest of every array's shape, dtype and bytes: a resumed run must see the very same data
    (another data set of the same size would otherwise be accepted)."""
    digest = hashlib.blake2b(digest_size=12)
    for split, arrays in splits.items():
        for array in arrays:
            digest.update(f"{split}:{array.dtype.str}{array.shape};".encode())
            digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def check_model_fits(output: Node, x: Node, splits: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """The model's output must have a column for every class label (integer labels), or the
    targets' shape (other targets)."""
    label_arrays = [y for _, y in splits.values() if len(y)]
    if not label_arrays:
        return
    sample = label_arrays[0]
    what = f"the model maps x: {dtypes.SHORT[x.dtype]}{fmt(x.shape)} to {dtypes.SHORT[output.dtype]}{fmt(output.shape)}"
    if sample.ndim == 1 and sample.dtype.kind in "iu":
        classes = max(int(y.max()) for y in label_arrays) + 1
        width = output.shape[-1] if output.ndim == 2 else None
        if width is None or (isinstance(width, int) and width < classes):
            raise ShapeError(f"{what}, but the data set has {classes} classes (labels 0..{classes - 1}); "
                             f"the output needs shape [N,{classes}]: one column per class")
        return
    if tuple(output.shape[1:]) != sample.shape[1:]:
        raise ShapeError(f"{what}, but the data set's targets are {fmt(('N',) + sample.shape[1:])}; "
                         f"the output must have the targets' shape")
