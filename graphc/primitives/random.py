"""Random primitives — ``normal`` and ``uniform`` — with all their rules.

They take the step's generator (NumPy's on the CPU, Philox on the GPU); their
``key`` attribute keeps two draws of the same shape from being merged into one
node.  They have no operands, so no gradient rule.  A draw over the batch in a
data-parallel step draws the whole batch and keeps the rank's rows (see
:func:`graphc.lowering.numpy_helpers.draw`)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from graphc.lowering import numpy_helpers
from graphc.lowering.numpy_rules import out_arg
from graphc.ir.registry import RANDOM, define, require
from graphc.ir.shapes import Shape
from graphc.lowering.cuda_rules import CudaRule


def _random(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    require(attrs["dtype"], "float")
    return attrs["shape"], attrs["dtype"]


def _batched(node: Any) -> bool:
    """Is the value over the batch (its first dimension the batch size, a symbol)?"""
    return bool(node.shape) and isinstance(node.shape[0], str)


def _lowering(kind: str) -> Any:
    return lambda a, n, ctx, out: (f"k.draw(rng, {kind!r}, {ctx.shape(n.shape)}, {ctx.dtype(n.dtype)}, "
                                   f"{_batched(n)}{out_arg(out)})")


define("normal", RANDOM, _random,
       lambda rng, shape, dtype, key, batched: numpy_helpers.draw(rng, "normal", shape, dtype, batched),
       cuda=CudaRule.RANDOM, numpy=_lowering("normal"))
define("uniform", RANDOM, _random,
       lambda rng, shape, dtype, key, batched: numpy_helpers.draw(rng, "uniform", shape, dtype, batched),
       cuda=CudaRule.RANDOM, numpy=_lowering("uniform"))
