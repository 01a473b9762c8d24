"""The CPU backend (named ``numpy``): generated NumPy code (:mod:`~graphc.backends.cpu.codegen`)
calling fused C loops (:mod:`~graphc.backends.cpu.c_loops`) where a C compiler exists."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.backends.backend import Backend
from graphc.backends.cpu import c_loops, vector_math
from graphc.backends.cpu.codegen import Generated, generate
from graphc.ir.node import Node
from graphc.ir.program import Program
from graphc.passes.memory import Plan


class NumpyBackend(Backend):
    """NumPy calls with ``out=`` into planned buffers, and fused C loops where a compiler exists."""

    name = "numpy"

    def array_module(self) -> Any:
        return np

    def fusable(self, node: Node) -> bool:
        return c_loops.eligible(node)

    def joins(self, operand: Node, node: Node) -> bool:
        return c_loops.joins(operand, node)

    def fuses(self) -> bool:
        return c_loops.compiler() is not None

    def cache_tag(self, passes: bool) -> str:
        if passes and self.fuses():  # the C loops call libmvec or scalar libm, built with debug flags or not
            debug_flags = "".join(f"+{flag}" for flag in c_loops.flags()[len(c_loops.FLAGS):])
            return "numpy+c" + ("+libmvec" if vector_math.enabled() else "") + debug_flags
        return "numpy" if passes else "numpy-unplanned"

    def generate(self, program: Program, plan: Plan) -> Generated:
        return generate(program, plan)


BACKEND = NumpyBackend()

