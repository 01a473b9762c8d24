"""The GPU runtime: the device protocol of :mod:`graphc.backends.cuda.binding` on CuPy.

Kernels are compiled by NVRTC through ``cupy.RawModule``; GEMMs go to cuBLAS
through :mod:`graphc.backends.cuda.cublas`; the whole step is captured once per
batch shape with ``Stream.begin_capture`` and replayed as one CUDA graph.
CuPy is imported here only, when a step is bound, so a machine without a GPU
can still compile, show and emulate CUDA programs.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from graphc.backends.cuda.cublas import WORKSPACE_BYTES, Cublas
from graphc.backends.cuda.program import Gemm
from graphc.errors import GraphcError

H2D, D2H, D2D = 1, 2, 3  # cudaMemcpyKind


def import_cupy() -> Any:
    """CuPy with a usable device, or graphc's error saying which of the two is missing."""
    try:
        import cupy
    except ImportError:
        raise GraphcError("the cupy backend needs CuPy, which is not installed: pip install 'graphc[cuda]' "
                          "(or use --backend numpy)") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy raises its own CUDARuntimeError without a driver
        raise GraphcError(f"the cupy backend found no CUDA device ({exc}); use --backend numpy") from None
    if count == 0:
        raise GraphcError("the cupy backend found no CUDA device; use --backend numpy")
    return cupy


class CupyDevice:
    def __init__(self, translation_unit: str, kernel_names: Sequence[str]):
        self.cp = import_cupy()
        module = self.cp.RawModule(code=translation_unit, options=("--std=c++17",))
        self.functions = {name: module.get_function(name) for name in kernel_names}
        self.stream = self.cp.cuda.Stream(non_blocking=True)
        self.workspace = self.cp.empty(WORKSPACE_BYTES, dtype=self.cp.uint8)
        self.blas = Cublas(self.stream.ptr, self.workspace.data.ptr)
        self.graphs = os.environ.get("GRAPHC_CUDA_GRAPHS", "1") != "0"
        self.ready = self.cp.cuda.Event(disable_timing=True)  # inputs made on another stream are ready

    def allocate(self, nbytes: int) -> tuple[int, Any]:
        memory = self.cp.zeros(nbytes, dtype=self.cp.uint8)
        return int(memory.data.ptr), memory

    def upload(self, address: int, host: np.ndarray) -> None:
        self.cp.cuda.runtime.memcpyAsync(address, host.ctypes.data, host.nbytes, H2D, self.stream.ptr)

    def copy_in(self, address: int, array: Any) -> None:
        """Copy from an array made on another stream: this stream waits for that one first."""
        array = self.cp.ascontiguousarray(array)
        self.ready.record(self.cp.cuda.get_current_stream())
        self.stream.wait_event(self.ready)
        self.cp.cuda.runtime.memcpyAsync(address, array.data.ptr, array.nbytes, D2D, self.stream.ptr)

    def download(self, host: np.ndarray, address: int) -> None:
        self.cp.cuda.runtime.memcpyAsync(host.ctypes.data, address, host.nbytes, D2H, self.stream.ptr)

    def launch(self, kernel: str, blocks: int, threads: int, args: Sequence[tuple[str, int]]) -> Callable[[], None]:
        fn = self.functions[kernel]
        values = tuple(np.uint64(v) if kind == "pointer" else np.int64(v) for kind, v in args)
        stream = self.stream

        def call() -> None:
            with stream:
                fn((blocks,), (threads,), values)
        return call

    def gemm(self, step: Gemm, a: int, b: int, c: int, sizes: Mapping[str, int]) -> Callable[[], None]:
        m, n, k, lda, ldb, ldc = (s.resolve(sizes) for s in (step.m, step.n, step.k, step.lda, step.ldb, step.ldc))
        blas = self.blas
        return lambda: blas.gemm(step.dtype, step.trans_a, step.trans_b, m, n, k, a, lda, b, ldb, c, ldc)

    def copy(self, dst: int, src: int, nbytes: int) -> Callable[[], None]:
        runtime, stream = self.cp.cuda.runtime, self.stream
        return lambda: runtime.memcpyAsync(dst, src, nbytes, D2D, stream.ptr)

    def capture(self, calls: list[Callable[[], None]]) -> Callable[[], None]:
        """The calls as one CUDA graph (or one by one with GRAPHC_CUDA_GRAPHS=0)."""
        def one_by_one() -> None:
            for call in calls:
                call()
        if not self.graphs:
            return one_by_one
        self.stream.synchronize()
        self.stream.begin_capture()
        try:
            one_by_one()
        finally:
            graph = self.stream.end_capture()
        stream = self.stream
        return lambda: graph.launch(stream)

    def synchronize(self) -> None:
        self.stream.synchronize()
