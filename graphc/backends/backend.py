"""What the compiler asks of a backend, and nothing more.

A backend says which nodes it fuses and turns an optimized program and its
memory plan into a :class:`~graphc.runtime.executable.Executable`.  The stages
around it (rewrites, fusion under the backend's policy, the memory plan) are the
same for every backend and listed in :mod:`graphc.compiler.pipeline`.  Nothing
above names a particular backend: it is looked up by name
(:func:`graphc.backends.get`), so adding a target touches neither the compiler
nor the runtime.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from graphc.backends.native import KernelBuildFailed
from graphc.ir.node import Node
from graphc.ir.program import Program
from graphc.passes.fusion import same_shape
from graphc.passes.memory import Plan
from graphc.runtime.executable import Executable

__all__ = ["Backend", "KernelBuildFailed"]


class Backend(ABC):
    """One target: its array module, which nodes it fuses, its code generator and runtime binding."""

    name: str = ""

    @abstractmethod
    def array_module(self) -> Any:
        """The module whose arrays this backend computes on (numpy, cupy)."""

    @abstractmethod
    def fusable(self, node: Node) -> bool:
        """May ``node`` be a member of a fused group?"""

    def joins(self, operand: Node, node: Node) -> bool:
        """May ``node`` join the fused group of its operand ``operand``?  By default when their
        shapes are equal: one loop over the elements."""
        return same_shape(operand, node)

    def fuses(self) -> bool:
        """Does this backend fuse at all on this machine (a kernel compiler is present)?"""
        return True

    def cache_tag(self, passes: bool) -> str:
        """What, besides the program, the generated code depends on: part of the cache key."""
        return self.name + ("" if passes else "-unplanned")

    @abstractmethod
    def generate(self, program: Program, plan: Plan) -> Executable:
        """Lower ``program`` placed as ``plan`` says; raises :class:`KernelBuildFailed` (the native
        toolchain's one failure, named here for the compiler that catches it) when the fused kernels
        do not build, and the compiler plans again without fusion."""
