"""How the CUDA backend lowers each op that is not elementwise, named where the op is defined.

An elementwise op needs no rule here: its C expression serves the C loops and the
CUDA kernels alike.  Every other op names one of these lowerings in its
``define(..., cuda=CudaRule.X)``, and the CUDA code generator implements each of
them (:data:`graphc.backends.cuda.codegen.LOWERINGS`; a test holds the two equal).
A member rather than a method name: a misspelt rule fails where the op is defined,
and ``define`` refuses anything that is not a member.
"""
from __future__ import annotations

import enum

from graphc.ir import registry


class CudaRule(enum.Enum):
    VIEW = "view"            # a layout op: its operand read through strides, no code of its own
    INLINE = "inline"        # numel: an expression inside the kernels that read it
    MATMUL = "matmul"        # a cuBLAS GEMM, a transposed operand passed as a flag
    REDUCE = "reduce"        # a GEMM against ones, or a kernel with one thread per output
    ONE_HOT = "one_hot"      # a kernel, the labels checked on the host first
    RANDOM = "random"        # a Philox kernel keyed by the op and counted by the step counter
    CONCAT = "concat"        # copies of the pieces not computed in place
    ALLREDUCE = "allreduce"  # one process: a copy


registry.RULE_TYPES["cuda"] = CudaRule
