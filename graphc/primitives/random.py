"""Random primitives — ``normal`` and ``uniform`` — with all their rules.

They take the step's generator (NumPy's on the CPU, Philox on the GPU); their
``key`` attribute keeps two draws of the same shape from being merged into one
node.  They have no operands, so no gradient rule."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from graphc.backends.numpy_lowering import out_arg
from graphc.ir.primitives import RANDOM, define, require
from graphc.ir.shapes import Shape


def _random(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    require(attrs["dtype"], "float")
    return attrs["shape"], attrs["dtype"]


define("normal", RANDOM, _random, lambda rng, shape, dtype, key: rng.standard_normal(shape, dtype=dtype),
       cuda="random",
       numpy=lambda a, n, ctx, out: f"rng.standard_normal({ctx.shape(n.shape)}, dtype={ctx.dtype(n.dtype)}"
                                    f"{out_arg(out)})")
define("uniform", RANDOM, _random, lambda rng, shape, dtype, key: rng.random(shape, dtype=dtype),
       cuda="random",
       numpy=lambda a, n, ctx, out: f"rng.random({ctx.shape(n.shape)}, dtype={ctx.dtype(n.dtype)}{out_arg(out)})")
