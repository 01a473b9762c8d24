"""``matmul``, with all its rules; on the GPU a cuBLAS GEMM, a transposed operand passed as a flag."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from graphc.lowering.numpy_rules import call
from graphc.ir.registry import LINALG, common_dtype, define
from graphc.ir.shapes import Shape, ShapeMismatch, fmt
from graphc.lowering.cuda_rules import CudaRule


def _matmul(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    a, b = inputs
    dtype = common_dtype(inputs, "float")
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise ShapeMismatch(f"expects two matrices, got {fmt(a.shape)} @ {fmt(b.shape)}")
    if a.shape[1] != b.shape[0]:
        raise ShapeMismatch(f"inner dimensions differ: {fmt(a.shape)} @ {fmt(b.shape)} "
                            f"({a.shape[1]} != {b.shape[0]})")
    return (a.shape[0], b.shape[1]), dtype


define("matmul", LINALG, _matmul, np.matmul, vjp=lambda g, out, a, b: (g @ b.T, a.T @ g),
       numpy=call("np.matmul"), cuda=CudaRule.MATMUL)
