"""What the compiler and the runtime ask of a backend, and nothing more.

A backend turns an optimized program and its memory plan into an
:class:`Executable`; the runtime binds that to a variable store and calls it.
Neither the compiler nor the runtime names a particular backend: they look one
up by name (:func:`graphc.backends.get`), so adding a target touches neither.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from graphc.ir.node import Node
from graphc.passes.fusion import fuse, same_shape
from graphc.passes.memory import Plan, plan_memory
from graphc.program import Program

StepFunction = Callable[..., tuple]


class Executable(Protocol):
    """Generated code for one program, not yet bound to variables or a batch size."""

    source: str             # what ``show("source")`` prints: the host-side step
    kernels: str            # the kernel source, if the backend generates any
    inputs: list[Node]      # the fed leaves, in the order the step takes them
    variables: list[Node]   # the variables, in the order ``bind`` takes them

    def bind(self, variables: Sequence[np.ndarray], arenas: Sequence[np.ndarray], symbols: dict[str, int],
             store: Any) -> StepFunction:
        """The step function for one set of symbol sizes.  ``variables`` and ``arenas`` are the
        store's host arrays; after each call the step's updates are in them."""
        ...


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

    def plan(self, program: Program, passes: bool, fused: bool = True, reuse: bool = True) -> Plan:
        """Schedule, fusion groups and memory plan: the same passes for every backend (``reuse``:
        see :func:`graphc.passes.memory.plan_memory`)."""
        if not passes:
            return Plan(program.nodes())
        fused = fused and self.fuses()
        schedule, groups = fuse(program, program.nodes(), self.fusable, self.joins) if fused else (program.nodes(), [])
        return plan_memory(program, schedule, groups, reuse)

    @abstractmethod
    def generate(self, program: Program, plan: Plan) -> Executable:
        """Lower ``program`` placed as ``plan`` says; raises :class:`KernelBuildFailed` when the
        fused kernels do not build, and the compiler plans again without fusion."""


class KernelBuildFailed(Exception):
    """The kernel compiler could not build the fused kernels; compile again without fusion."""
