"""The GPU runtime: the device protocol of :mod:`graphc.backends.cuda.binding` on CuPy.

Kernels are compiled by NVRTC through ``cupy.RawModule``; GEMMs go to cuBLAS
through :mod:`graphc.backends.cuda.cublas`; the whole step is captured once per
batch shape with ``Stream.begin_capture`` and replayed as one CUDA graph.
CuPy is imported here only, when a step is bound, so a machine without a GPU
can still compile, show and emulate CUDA programs.
"""
from __future__ import annotations

import os
import sys
import threading
import weakref
from typing import Any, Callable, Sequence

import numpy as np

from graphc.backends.cuda.cublas import WORKSPACE_BYTES, Cublas
from graphc.backends.cuda.device_program import Gemm, GemmSizes
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


# NVRTC's options: C++17, and multiply-adds contracted into FMA (NVRTC's default, said outright).
# CuPy adds -ftz=true to every RawModule compile, so float32 subnormals flush to zero, as in the CPU's
# fused loops (float64 has no flush-to-zero mode on the GPU).  See docs/gpu.md, "Float semantics".
NVRTC_OPTIONS = ("--std=c++17", "--fmad=true")


class CupyModule:
    """A program's kernels, compiled once by NVRTC and shared by every step bound from the program."""

    def __init__(self, translation_unit: str):
        self.cp = import_cupy()
        self.module = self.cp.RawModule(code=translation_unit, options=NVRTC_OPTIONS)
        self.functions: dict[str, Any] = {}  # every kernel a step launches, the prelude's included
        self.lock = threading.Lock()  # steps bound in several threads look kernels up at once

    def function(self, kernel: str) -> Any:
        """The kernel, looked up by the name the launch gives: the step's own list of names once left one out."""
        with self.lock:
            fn = self.functions.get(kernel)
            if fn is None:
                fn = self.functions[kernel] = self.module.get_function(kernel)
            return fn


class CupyDevice:
    """One bound step's stream, events, cuBLAS handle and workspace, over its program's kernels.
    Each batch size of each thread binds a step of its own, so no thread issues work on another's
    stream or into another's capture, and the handle and workspace are freed with the step.  The
    step still holds ``lock`` while it issues work: another thread reading the store's variables
    fetches them from this step."""

    def __init__(self, kernels: CupyModule):
        self.cp = kernels.cp
        self.kernels = kernels
        self.stream = self.cp.cuda.Stream(non_blocking=True)
        self.workspace = self.cp.empty(WORKSPACE_BYTES, dtype=self.cp.uint8)
        self.blas = Cublas(self.stream.ptr, self.workspace.data.ptr)
        weakref.finalize(self, self.blas.close)  # the handle goes with the device (its workspace too)
        self.graphs = os.environ.get("GRAPHC_CUDA_GRAPHS", "1") != "0"
        self.lock = threading.RLock()
        self.ready = self.cp.cuda.Event(disable_timing=True)  # inputs made on another stream are ready
        self.copied = self.cp.cuda.Event(disable_timing=True)  # ... and read: their stream may go on

    def allocate(self, nbytes: int) -> tuple[int, Any]:
        """The arena, zeroed on this device's stream: work on it is ordered after the zeroing (a memset
        on the legacy default stream is not, for a non-blocking stream, and once zeroed the ones)."""
        memory = self.cp.empty(nbytes, dtype=self.cp.uint8)
        self.cp.cuda.runtime.memsetAsync(int(memory.data.ptr), 0, nbytes, self.stream.ptr)
        return int(memory.data.ptr), memory

    def upload(self, address: int, host: np.ndarray) -> None:
        self.cp.cuda.runtime.memcpyAsync(address, host.ctypes.data, host.nbytes, H2D, self.stream.ptr)

    def copy_in(self, address: int, array: Any) -> None:
        """Copy from an array made on another stream: this stream waits for that one first, and that
        one waits for the copy before it may change or free the array."""
        array = self.cp.ascontiguousarray(array)
        producer = self.cp.cuda.get_current_stream()
        self.ready.record(producer)
        self.stream.wait_event(self.ready)
        self.cp.cuda.runtime.memcpyAsync(address, array.data.ptr, array.nbytes, D2D, self.stream.ptr)
        self.copied.record(self.stream)
        producer.wait_event(self.copied)

    def download(self, host: np.ndarray, address: int) -> None:
        self.cp.cuda.runtime.memcpyAsync(host.ctypes.data, address, host.nbytes, D2H, self.stream.ptr)

    def launch(self, kernel: str, blocks: int, threads: int, args: Sequence[tuple[str, int]]) -> Callable[[], None]:
        fn = self.kernels.function(kernel)
        values = tuple(np.uint64(v) if kind == "pointer" else np.int64(v) for kind, v in args)
        stream = self.stream

        def call() -> None:
            with stream:
                fn((blocks,), (threads,), values)
        return call

    def gemm(self, step: Gemm, a: int, b: int, c: int, sizes: GemmSizes) -> Callable[[], None]:
        blas, s = self.blas, sizes
        return lambda: blas.gemm(step.dtype, step.trans_a, step.trans_b, s.m, s.n, s.k, a, s.lda, b, s.ldb, c, s.ldc)

    def copy(self, dst: int, src: int, nbytes: int) -> Callable[[], None]:
        runtime, stream = self.cp.cuda.runtime, self.stream
        return lambda: runtime.memcpyAsync(dst, src, nbytes, D2D, stream.ptr)

    def capture(self, calls: list[Callable[[], None]]) -> Callable[[], None]:
        """The calls as one CUDA graph (or one by one with GRAPHC_CUDA_GRAPHS=0, or when capturing
        fails: then after one warning naming the cause, such as a cuBLAS status)."""
        def one_by_one() -> None:
            for call in calls:
                call()
        if not self.graphs:
            return one_by_one
        # No synchronize first: a capture records only what is issued after it begins, and the
        # graph's launches are ordered after the stream's earlier work (the uploads).
        self.stream.begin_capture()
        try:
            one_by_one()
        except Exception as exc:  # the capture is invalid now: end it, and report what broke it, not that
            try:
                self.stream.end_capture()
            except Exception:
                pass
            print(f"graphc: warning: the step could not be captured as one CUDA graph ({exc}); its kernels "
                  f"and GEMMs are launched one by one", file=sys.stderr)
            return one_by_one
        graph = self.stream.end_capture()
        stream = self.stream
        return lambda: graph.launch(stream)

    def synchronize(self) -> None:
        self.stream.synchronize()
