"""C-style expressions for every C-like target: the fused C loops and the CUDA kernels.

Each elementwise primitive (and ``cast``) registers, beside its definition in
:mod:`graphc.primitives`, one C expression under the backend name ``c``: given
the result dtype and the operands' C expressions, the C expression of its
value.  The same text compiles as C for the host and as CUDA C++ for the GPU
(``expf``, ``tanhf``, ``fabsf``... exist in both), so an op's C meaning is
written once.  The arithmetic follows NumPy's where C can: IEEE float32/float64,
NaN-propagating max/relu/sign, sigmoid in the tanh form that never overflows.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from graphc.ir.node import Node
from graphc.ir.registry import lowering

# The int types come from <stdint.h>; the CUDA prelude defines them where NVRTC has no headers.
C_TYPES = {"float32": "float", "float64": "double", "int32": "int32_t", "int64": "int64_t",
           "bool": "unsigned char", "uint64": "uint64_t"}

Expression = Callable[[str, Sequence[str]], str]  # (result dtype, operand expressions) → C expression


def literal(value: float, dtype: str) -> str:
    """A scalar constant as a C literal of its dtype.  C has no literal for an infinity or a NaN:
    each target's prelude defines ``GRAPHC_INF`` and ``GRAPHC_NAN`` (``_F`` for float32)."""
    if dtype in ("float32", "float64") and not np.isfinite(value):
        name = ("GRAPHC_NAN" if np.isnan(value) else "GRAPHC_INF") + ("_F" if dtype == "float32" else "")
        return f"(-{name})" if value < 0 else name
    if dtype == "float32":
        text = np.format_float_positional(np.float32(value), unique=True, trim="0")
        return f"{text}f" if "." in text else f"{text}.0f"
    if dtype == "float64":
        return repr(float(value))
    if dtype == "bool":
        return "1" if value else "0"
    return str(int(value))


def math(fn: str, dtype: str) -> str:
    """The libm function for a dtype: ``expf`` for float32, ``exp`` for float64."""
    return fn + "f" if dtype == "float32" else fn


def call(fn: str) -> Expression:
    return lambda d, a: f"{math(fn, d)}({', '.join(a)})"


def infix(symbol: str) -> Expression:
    return lambda d, a: f"({a[0]} {symbol} {a[1]})"


def supports(op: str) -> bool:
    """Has ``op`` a C expression (can it be a member of a fused loop or kernel)?"""
    return lowering(op, "c") is not None


def expression(node: Node, operands: Sequence[str]) -> str:
    """The C expression of ``node``'s value, given its operands' expressions."""
    return lowering(node.op, "c")(node.dtype, operands)
