"""``allreduce`` — the mean or sum of a value over the ranks of a data-parallel run — with all its rules.

It runs on the communicator active when the step runs (see
:mod:`graphc.parallel`), so one compiled step serves any launcher; in one
process it is the identity.  It is never folded: every rank runs the same
program, so every rank reaches each allreduce once per step.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from graphc import ops
from graphc.lowering.numpy_rules import out_arg
from graphc.ir.registry import COLLECTIVE, define, require
from graphc.ir.shapes import Shape
from graphc.parallel.communicator import active
from graphc.lowering.cuda_rules import CudaRule


def _allreduce(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    (x,) = inputs
    require(x.dtype, "float")
    return x.shape, x.dtype


# The mean or sum over ranks is a symmetric linear map of the ranks' stacked values: its own adjoint.
define("allreduce", COLLECTIVE, _allreduce, lambda x, reduction: active().allreduce(np.asarray(x), reduction),
       vjp=lambda g, out, x: (ops.allreduce(g, out.attrs["reduction"]),),
       numpy=lambda a, n, ctx, out: f"k.allreduce({a[0]}, {n.attrs['reduction']!r}{out_arg(out)})",
       cuda=CudaRule.ALLREDUCE)
