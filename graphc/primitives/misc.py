"""``one_hot``, ``cast``, ``stop_gradient`` and ``numel``, with all their rules."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from graphc import ops
from graphc.autodiff.rules import no_gradient
from graphc.lowering.c_expressions import C_TYPES
from graphc.lowering.numpy_rules import Context, out_arg, site_arg
from graphc.feeds import check_labels
from graphc.ir.node import Node
from graphc.ir.registry import INDEX, MISC, define, require
from graphc.ir.shapes import Shape
from graphc.lowering.cuda_rules import CudaRule


def _one_hot(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    (labels,) = inputs
    require(labels.dtype, "int")
    return labels.shape + (attrs["depth"],), attrs["dtype"]


def _one_hot_impl(labels: np.ndarray, depth: int, dtype: str) -> np.ndarray:
    check_labels(labels, depth)
    return (labels[..., None] == np.arange(depth)).astype(dtype)


def _cast(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    return inputs[0].shape, attrs["dtype"]


def _same(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    return inputs[0].shape, inputs[0].dtype


def _numel(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    return (), attrs["dtype"]


def _numel_impl(x: np.ndarray, axes: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.asarray(np.prod([x.shape[a] for a in axes]), dtype=dtype)


def _numpy_numel(a: Sequence[str], n: Node, ctx: Context, out: Optional[str]) -> str:
    size = " * ".join(f"{a[0]}.shape[{ax}]" for ax in n.attrs["axes"])
    return f"{ctx.dtype(n.dtype)}({size})"


define("one_hot", INDEX, _one_hot, _one_hot_impl, vjp=no_gradient,
       numpy=lambda a, n, ctx, out: f"k.one_hot({a[0]}, {n.attrs['depth']}, {ctx.dtype(n.dtype)}{out_arg(out)}"
                                    f"{site_arg(n)})",
       cuda=CudaRule.ONE_HOT)
define("cast", MISC, _cast, lambda x, dtype: x.astype(dtype), vjp=lambda g, out, x: (ops.cast(g, x.dtype),),
       numpy=lambda a, n, ctx, out: f"k.cast({a[0]}, {ctx.dtype(n.dtype)}{out_arg(out)})",
       c=lambda d, a: f"(({a[0]} != 0) ? 1 : 0)" if d == "bool" else f"(({C_TYPES[d]}){a[0]})")
define("stop_gradient", MISC, _same, lambda x: x, vjp=no_gradient, view=True,
       numpy=lambda a, n, ctx, out: a[0],
       cuda=CudaRule.VIEW)
# A size as a value: an expression inside the kernels that read it, on the GPU.
define("numel", MISC, _numel, _numel_impl, vjp=no_gradient, no_buffer=True, numpy=_numpy_numel,
       cuda=CudaRule.INLINE)
