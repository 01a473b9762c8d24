"""``one_hot``, ``cast``, ``stop_gradient`` and ``numel``, with all their rules."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from graphc import ops
from graphc.autodiff.rules import no_gradient
from graphc.backends.c_style import C_TYPES
from graphc.backends.numpy_lowering import Context, out_arg, site_arg
from graphc.errors import FeedError
from graphc.ir.node import Node
from graphc.ir.primitives import INDEX, MISC, define, require
from graphc.ir.shapes import Shape


def _one_hot(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    (labels,) = inputs
    require(labels.dtype, "int")
    return labels.shape + (attrs["depth"],), attrs["dtype"]


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
       cuda="one_hot")
define("cast", MISC, _cast, lambda x, dtype: x.astype(dtype), vjp=lambda g, out, x: (ops.cast(g, x.dtype),),
       numpy=lambda a, n, ctx, out: f"k.cast({a[0]}, {ctx.dtype(n.dtype)}{out_arg(out)})",
       c=lambda d, a: f"(({a[0]} != 0) ? 1 : 0)" if d == "bool" else f"(({C_TYPES[d]}){a[0]})")
define("stop_gradient", MISC, _same, lambda x: x, vjp=no_gradient, numpy=lambda a, n, ctx, out: a[0],
       cuda="view")
# A size as a value: an expression inside the kernels that read it, on the GPU.
define("numel", MISC, _numel, _numel_impl, vjp=no_gradient, numpy=_numpy_numel, cuda="inline")
