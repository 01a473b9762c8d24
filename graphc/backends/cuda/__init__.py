"""The CUDA backend: generated kernels, cuBLAS GEMMs, the whole step as one CUDA graph.

``backend="cupy"`` runs the program on a GPU through CuPy; ``backend="cuda-emulator"``
runs the same program on the CPU (see :mod:`graphc.backends.cuda.emulator`).
Both generate, print and cache the same program; only binding differs, so
``show`` works without a GPU, and so do the tests of the program's meaning.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from graphc.backends.backend import Backend
from graphc.runtime.executable import StepFunction
from graphc.backends.cuda.binding import DeviceStep
from graphc.backends import row_groups
from graphc.backends.cuda.codegen import lower, translation_unit
from graphc.backends.cuda.listing import listing
from graphc.backends.cuda.device_program import DeviceProgram
from graphc.ir.node import Node
from graphc.passes.memory import Plan
from graphc.ir.program import Program


@dataclass
class CudaExecutable:
    device_program: DeviceProgram
    source: str        # the host schedule
    kernels: str       # the CUDA translation unit
    inputs: list[Node]
    variables: list[Node]
    emulated: bool
    _compiled: Any = field(default=None, repr=False)  # the emulator's library, or CuPy's module: one per program

    def bind(self, variables: Sequence[np.ndarray], arenas: Sequence[np.ndarray], symbols: dict[str, int],
             store: Any) -> StepFunction:
        """A step for one batch size: its own arena and graph, on a device made for it."""
        return DeviceStep(self.device_program, self._step_device(), variables, arenas, symbols, store, owner=self)

    def _step_device(self) -> Any:
        """The emulator is one device shared by every step (it runs each call through under its
        lock); on a GPU each step gets its own stream and cuBLAS handle over the program's kernels."""
        if self.emulated:
            if self._compiled is None:
                from graphc.backends.cuda.emulator import EmulatedDevice
                self._compiled = EmulatedDevice(self.kernels)
            return self._compiled
        from graphc.backends.cuda.cupy_device import CupyDevice, CupyModule
        if self._compiled is None:
            self._compiled = CupyModule(self.kernels)
        return CupyDevice(self._compiled)


class CudaBackend(Backend):
    def __init__(self, name: str, emulated: bool):
        self.name, self.emulated = name, emulated

    def array_module(self) -> Any:
        if self.emulated:
            return np
        from graphc.backends.cuda.cupy_device import import_cupy
        return import_cupy()

    def fusable(self, node: Node) -> bool:
        return row_groups.fusable(node)

    def joins(self, operand: Node, node: Node) -> bool:
        return row_groups.joins(operand, node)

    def generate(self, program: Program, plan: Plan) -> CudaExecutable:
        device = lower(program, plan)
        return CudaExecutable(device, listing(device), translation_unit(device), [n for n, _ in device.inputs],
                              [v for v, _ in device.variables], self.emulated)


BACKEND = CudaBackend("cupy", emulated=False)
EMULATOR = CudaBackend("cuda-emulator", emulated=True)
