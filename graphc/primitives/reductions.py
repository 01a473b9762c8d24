"""Reductions — ``sum`` and ``max`` over axes — with all their rules.

The CUDA lowering names the code generator's method (a GEMM against ones, or a
kernel with a thread per output; see :mod:`graphc.backends.cuda.codegen`)."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from graphc import ops
from graphc.autodiff.rules import keep_reduced
from graphc.lowering.numpy_rules import Context, Lower, out_arg
from graphc.ir.node import Node
from graphc.ir.registry import REDUCE, define, require
from graphc.ir.shapes import Shape, ShapeMismatch, fmt
from graphc.lowering.cuda_rules import CudaRule


def _reduce(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    (x,) = inputs
    require(x.dtype, "numeric")
    axes, keep = attrs["axes"], attrs["keepdims"]
    if any(not 0 <= a < len(x.shape) for a in axes):
        raise ShapeMismatch(f"axes {axes} out of range for {fmt(x.shape)}")
    shape = tuple((1 if keep else None) if i in axes else d for i, d in enumerate(x.shape))
    return tuple(d for d in shape if d is not None), x.dtype


def _numpy(fn: str) -> Lower:
    def lower(a: Sequence[str], n: Node, ctx: Context, out: Optional[str]) -> str:
        keep = ", keepdims=True" if n.attrs["keepdims"] else ""
        # np.sum widens int32 to int64 unless told: keep the IR's dtype.
        dtype = f", dtype={ctx.dtype(n.dtype)}" if fn == "np.sum" and n.dtype == "int32" else ""
        return f"{fn}({a[0]}, axis={n.attrs['axes']}{keep}{dtype}{out_arg(out)})"
    return lower


def _sum_rule(g: Node, out: Node, x: Node) -> tuple[Node]:
    return (ops.broadcast_to(keep_reduced(g, x, out.attrs["axes"], out.attrs["keepdims"]), x.shape),)


def _max_rule(g: Node, out: Node, x: Node) -> tuple[Node]:
    # Ties share the cotangent equally, so the rule is symmetric in tied inputs.
    axes, keep = out.attrs["axes"], out.attrs["keepdims"]
    hit = ops.cast(ops.equal(x, keep_reduced(out, x, axes, keep)), x.dtype)
    return (hit * (keep_reduced(g, x, axes, keep) / ops.sum(hit, axes, keepdims=True)),)


define("sum", REDUCE, _reduce, lambda x, axes, keepdims: np.sum(x, axis=axes, keepdims=keepdims),
       vjp=_sum_rule, numpy=_numpy("np.sum"), cuda=CudaRule.REDUCE)
define("max", REDUCE, _reduce, lambda x, axes, keepdims: np.max(x, axis=axes, keepdims=keepdims),
       vjp=_max_rule, numpy=_numpy("np.max"), cuda=CudaRule.REDUCE)
