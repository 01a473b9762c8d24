"""Layout primitives — reshape, transpose, broadcast, concat, slice — with all their rules.

On both backends the first four are views of their operand where memory allows
(the memory plan gives a reshape of a strided value a buffer of its own, filled
by a copy); ``concat`` fills the pieces the plan did not compute in place."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from graphc import ops
from graphc.autodiff.rules import unbroadcast
from graphc.lowering.numpy_rules import Context, out_arg
from graphc.ir.node import Node
from graphc.ir.registry import LAYOUT, common_dtype, define
from graphc.ir.shapes import Shape, ShapeMismatch, broadcast, fmt, is_static, same_size
from graphc.lowering.cuda_rules import CudaRule


def _reshape(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    (x,) = inputs
    if not same_size(x.shape, attrs["shape"]):
        raise ShapeMismatch(f"cannot reshape {fmt(x.shape)} into {fmt(attrs['shape'])}")
    return attrs["shape"], x.dtype


def _numpy_reshape(a: Sequence[str], n: Node, ctx: Context, out: Optional[str]) -> str:
    if out:  # a planned copy: the buffer, viewed in the operand's shape, receives it in C order
        return f"np.copyto({out}.reshape({ctx.shape(n.inputs[0].shape)}), {a[0]})"
    return f"{a[0]}.reshape({ctx.shape(n.shape)})"


def _transpose(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    (x,) = inputs
    perm = attrs["perm"]
    if sorted(perm) != list(range(len(x.shape))):
        raise ShapeMismatch(f"{perm} is not a permutation of the axes of {fmt(x.shape)}")
    return tuple(x.shape[p] for p in perm), x.dtype


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(range(len(perm)), key=lambda i: perm[i]))


def _numpy_transpose(a: Sequence[str], n: Node, ctx: Context, out: Optional[str]) -> str:
    perm = n.attrs["perm"]
    return f"{a[0]}.T" if perm == (1, 0) else f"{a[0]}.transpose({perm})"


def _broadcast_to(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    (x,) = inputs
    target = attrs["shape"]
    if len(x.shape) > len(target) or broadcast(x.shape, target) != target:
        raise ShapeMismatch(f"cannot broadcast {fmt(x.shape)} to {fmt(target)}")
    return target, x.dtype


def _concat(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    dtype = common_dtype(inputs, "any")
    if any(len(n.shape) != 1 or not is_static(n.shape) for n in inputs):
        raise ShapeMismatch("concatenates vectors of static length only")
    return (sum(n.shape[0] for n in inputs),), dtype


def _concat_rule(g: Node, out: Node, *xs: Node) -> tuple[Node, ...]:
    starts = [0]
    for x in xs:
        starts.append(starts[-1] + x.shape[0])
    return tuple(ops.slice(g, a, b) for a, b in zip(starts, starts[1:]))


def _slice(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    (x,) = inputs
    start, stop = attrs["start"], attrs["stop"]
    if len(x.shape) != 1 or not is_static(x.shape) or not 0 <= start <= stop <= x.shape[0]:
        raise ShapeMismatch(f"cannot take [{start}:{stop}] of {fmt(x.shape)}")
    return (stop - start,), x.dtype


def _slice_rule(g: Node, out: Node, x: Node) -> tuple[Node]:
    start, stop, n = out.attrs["start"], out.attrs["stop"], x.shape[0]
    pieces = [ops.zeros_like(ops.slice(x, 0, start))] if start else []
    pieces.append(g)
    if stop < n:
        pieces.append(ops.zeros_like(ops.slice(x, stop, n)))
    return (ops.concat(pieces) if len(pieces) > 1 else g,)


define("reshape", LAYOUT, _reshape, lambda x, shape: np.reshape(x, shape), view=True,
       vjp=lambda g, out, x: (ops.reshape(g, x.shape),), numpy=_numpy_reshape, cuda=CudaRule.VIEW)
define("transpose", LAYOUT, _transpose, lambda x, perm: np.transpose(x, perm), view=True, strided=True,
       vjp=lambda g, out, x: (ops.transpose(g, _inverse(out.attrs["perm"])),), numpy=_numpy_transpose,
       cuda=CudaRule.VIEW)
define("broadcast_to", LAYOUT, _broadcast_to, lambda x, shape: np.broadcast_to(x, shape), view=True, strided=True,
       vjp=lambda g, out, x: (unbroadcast(g, x.shape),),
       numpy=lambda a, n, ctx, out: f"np.broadcast_to({a[0]}, {ctx.shape(n.shape)})", cuda=CudaRule.VIEW)
define("concat", LAYOUT, _concat, lambda *xs: np.concatenate(xs), vjp=_concat_rule,
       numpy=lambda a, n, ctx, out: f"np.concatenate(({', '.join(a)},){out_arg(out)})", cuda=CudaRule.CONCAT)
define("slice", LAYOUT, _slice, lambda x, start, stop: x[start:stop], vjp=_slice_rule, view=True,
       numpy=lambda a, n, ctx, out: f"{a[0]}[{n.attrs['start']}:{n.attrs['stop']}]", cuda=CudaRule.VIEW)
