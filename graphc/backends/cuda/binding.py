"""Running a :class:`DeviceProgram` on a device: the part the GPU and the emulator share.

A device (CuPy's, or the CPU emulator) knows how to allocate an arena, copy
bytes in and out of it, launch a kernel, run a GEMM and capture a sequence of
those into something replayable.  This module lays the program's regions out
in the arena for one batch size, writes the constants and variables in, and
makes the step function: copy the inputs in, replay the captured step, copy
the results out.  The variables the step changes stay on the device, which the
store records (``store.ahead``): they come back to the host when someone reads
them (:mod:`graphc.runtime.store`), not at every step.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from graphc.backends.cuda.kernels import BLOCK, MAX_BLOCKS
from graphc.backends.cuda.device_program import ITEM_BYTES, Copy, DeviceProgram, Gemm, GemmSizes, Launch, Symbol, View
from graphc.ir.shapes import resolve
from graphc.feeds import check_labels

ALIGN = 256  # bytes: every region starts on a boundary cuBLAS and vector loads like


class Device(Protocol):
    lock: Any  # held while a step issues work, and while a reader of the store fetches its variables
    def allocate(self, nbytes: int) -> tuple[int, Any]: ...           # the arena's address, and its owner
    def upload(self, address: int, host: np.ndarray) -> None: ...
    def copy_in(self, address: int, array: Any) -> None: ...               # from an array on the device
    def download(self, host: np.ndarray, address: int) -> None: ...
    def launch(self, kernel: str, blocks: int, threads: int, args: Sequence[tuple[str, int]]) -> Callable[[], None]: ...
    def gemm(self, step: Gemm, a: int, b: int, c: int, sizes: GemmSizes) -> Callable[[], None]: ...
    def copy(self, dst: int, src: int, nbytes: int) -> Callable[[], None]: ...
    def capture(self, calls: list[Callable[[], None]]) -> Callable[[], None]: ...
    def synchronize(self) -> None: ...


def layout(device: DeviceProgram, symbols: Mapping[str, int]) -> tuple[dict[str, int], int]:
    """Byte offset of every region in the arena, and the arena's size."""
    offsets, total = {}, 0
    for name, region in device.regions.items():
        total = -(-total // ALIGN) * ALIGN
        offsets[name] = total
        total += region.size.resolve(symbols) * ITEM_BYTES[region.dtype]
    return offsets, max(total, ALIGN)


def _nothing() -> None:
    """The step of a GEMM with no output element."""


def blocks_for(count: int) -> int:
    return max(1, min(-(-count // BLOCK), MAX_BLOCKS))


class DeviceStep:
    """The step for one batch size: a device arena with the program laid out in it."""

    def __init__(self, program: DeviceProgram, device: Device, variables: Sequence[np.ndarray],
                 arenas: Sequence[np.ndarray], symbols: dict[str, int], store: Any, owner: Any = None):
        self.program, self.device, self.symbols, self.store = program, device, symbols, store
        self.owner = owner  # the executable this step was bound from (its other bindings sync among themselves)
        self.offsets, total = layout(program, symbols)
        self.base, self.arena = device.allocate(total)
        self.host_variables = {var.name: value for (var, _), value in zip(program.variables, variables)}
        self.host_arenas = dict(zip(program.arenas, arenas))
        self.synced = None
        for name, value in program.constants.items():
            device.upload(self.region(name), value)
        for name, length in program.ones.items():
            device.upload(self.region(name), np.ones(length.resolve(symbols), program.regions[name].dtype))
        # The random stream's counter is a variable like the others: uploaded with them, fetched with them.
        self.counter = store.counter() if program.rng and store is not None else None
        self.calls = [self._call(step) for step in program.steps]
        self.replay: Callable[[], None] | None = None
        self.results = [(name, np.empty(resolve(view.shape, symbols), view.dtype), self.address(view))
                        for name, view in program.outputs]

    def region(self, name: str) -> int:
        return self.base + self.offsets[name]

    def address(self, view: View) -> int:
        return self.region(view.region) + view.offset * ITEM_BYTES[view.dtype]

    def _call(self, step: Any) -> Callable[[], None]:
        if isinstance(step, Launch):
            args = []
            for arg in step.args:
                if isinstance(arg, View):
                    args.append(("pointer", self.address(arg)))
                elif isinstance(arg, Symbol):
                    args.append(("int64", self.symbols[arg.name]))
                else:
                    args.append(("int64", arg.resolve(self.symbols)))
            return self.device.launch(step.kernel, blocks_for(step.threads.resolve(self.symbols)), BLOCK, args)
        if isinstance(step, Gemm):
            sizes = GemmSizes.of(step, self.symbols)
            if sizes.empty:
                return _nothing
            return self.device.gemm(step, self.address(step.a), self.address(step.b), self.address(step.c), sizes)
        assert isinstance(step, Copy)
        nbytes = step.count.resolve(self.symbols) * ITEM_BYTES[step.dst.dtype]
        return self.device.copy(self.address(step.dst), self.address(step.src), nbytes)

    # ---- the step -------------------------------------------------------------
    def _sync_variables_in(self) -> None:
        """Copy the store's values in, unless the device already holds the newest ones.  After a
        ``launch`` of another batch size the newest values are that binding's: they come here first."""
        ahead = getattr(self.store, "ahead", None)
        if ahead is not None and ahead is not self:
            ahead.fetch_variables()
        if self.synced == getattr(self.store, "generation", None):
            return
        for name, host in self.host_arenas.items():
            self.device.upload(self.region(name), host)
        for var, view in self.program.variables:
            if view.region not in self.host_arenas:
                self.device.upload(self.address(view), np.ascontiguousarray(self.host_variables[var.name], var.dtype))
        if self.counter is not None:
            self.device.upload(self.region(self.program.rng), self.counter)

    def launch(self, *inputs: np.ndarray) -> None:
        """Copy the inputs in and run the step, without waiting for it or copying anything back."""
        with self.device.lock:
            self._launch(inputs)

    def _launch(self, inputs: Sequence[np.ndarray]) -> None:
        """Issue the step; the newest values of the variables it writes are then on the device."""
        fed = {node.name: value for (node, _), value in zip(self.program.inputs, inputs)}
        for name, depth, site in self.program.labels:
            if isinstance(fed[name], np.ndarray):
                check_labels(fed[name], depth, site)
        self._sync_variables_in()
        for (node, region), value in zip(self.program.inputs, inputs):
            if hasattr(value, "__cuda_array_interface__"):  # already on the device: a device copy
                self.device.copy_in(self.region(region), value)
            else:  # bytes as the device reads them: contiguous, in the machine's byte order
                self.device.upload(self.region(region), np.ascontiguousarray(value, dtype=node.dtype))
        if self.replay is None:
            for call in self.calls:  # the first step runs eagerly: it loads kernels, warms cuBLAS
                call()
            self.replay = self.device.capture(self.calls)
        else:
            self.replay()
        generation = getattr(self.store, "generation", 0)
        self.synced = generation + 1 if self.program.written else generation
        if self.program.written and self.store is not None:
            self.store.ahead = self

    def __call__(self, *inputs: np.ndarray) -> tuple:
        """Run the step and copy its results back; the variables it writes stay on the device."""
        with self.device.lock:
            self._launch(inputs)
            for _, host, address in self.results:
                self.device.download(host, address)
            self.device.synchronize()
            return tuple(host.copy() for _, host, _ in self.results)

    def fetch_variables(self) -> None:
        """Copy the variables the step writes back into the store's arrays, and wait for the device."""
        with self.device.lock:
            for region in self.program.written:
                if region in self.host_arenas:
                    self.device.download(self.host_arenas[region], self.region(region))
            for var, view in self.program.variables:
                if view.region in self.program.written and view.region not in self.host_arenas:
                    self.device.download(self.host_variables[var.name], self.address(view))
            if self.counter is not None:
                self.device.download(self.counter, self.region(self.program.rng))
            self.device.synchronize()
            if getattr(self.store, "ahead", None) is self:
                self.store.ahead = None
