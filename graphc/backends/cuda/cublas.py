"""cuBLAS through ctypes, with the backend's own handle, stream and workspace.

CuPy refuses its own cuBLAS calls while a stream is being captured into a CUDA
graph (cupy/cupy#6290).  libcublas itself captures fine once the handle is
bound to the capturing stream (``cublasSetStream``) and given a preallocated
workspace (``cublasSetWorkspace``), so that no call allocates memory inside
the capture.  Scalars are passed by host pointer, read at call time.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib
from typing import Any

from graphc.errors import GraphcError

OP_N, OP_T = 0, 1
WORKSPACE_BYTES = 32 << 20  # what NVIDIA recommends for Hopper


def _library() -> ctypes.CDLL:
    """The libcublas CuPy uses (found among the loaded libraries once CuPy's cuBLAS module is
    imported: CuPy's wheels bring their own), else one the dynamic linker finds."""
    for module in ("cupy_backends.cuda.libs.cublas", "cupy.cuda.cublas"):
        try:
            importlib.import_module(module)
            break
        except ImportError:
            continue
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "/libcublas.so" in path:
                    return ctypes.CDLL(path)
    except OSError:
        pass
    for name in ("libcublas.so", "libcublas.so.13", "libcublas.so.12", ctypes.util.find_library("cublas")):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
    raise GraphcError("libcublas was not found; install CuPy with its CUDA libraries (pip install 'graphc[cuda]')")


class Cublas:
    def __init__(self, stream_ptr: int, workspace_ptr: int):
        self.lib = _library()
        self.handle = ctypes.c_void_p()
        self._check(self.lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate")
        self._check(self.lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(stream_ptr)), "cublasSetStream")
        self._check(self.lib.cublasSetWorkspace_v2(self.handle, ctypes.c_void_p(workspace_ptr),
                                                   ctypes.c_size_t(WORKSPACE_BYTES)), "cublasSetWorkspace")
        self.scalars = {"float32": (ctypes.c_float(1.0), ctypes.c_float(0.0)),
                        "float64": (ctypes.c_double(1.0), ctypes.c_double(0.0))}

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise GraphcError(f"{what} failed with cuBLAS status {status}")

    def gemm(self, dtype: str, trans_a: bool, trans_b: bool, m: int, n: int, k: int,
             a: int, lda: int, b: int, ldb: int, c: int, ldc: int) -> Any:
        """c = op(a)·op(b), column-major, as cublas<t>gemm."""
        fn = self.lib.cublasSgemm_v2 if dtype == "float32" else self.lib.cublasDgemm_v2
        one, zero = self.scalars[dtype]
        status = fn(self.handle, OP_T if trans_a else OP_N, OP_T if trans_b else OP_N, m, n, k,
                    ctypes.byref(one), ctypes.c_void_p(a), lda, ctypes.c_void_p(b), ldb,
                    ctypes.byref(zero), ctypes.c_void_p(c), ldc)
        self._check(status, "cublasGemm")
