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
from typing import Any, Optional

from graphc.errors import GraphcError

OP_N, OP_T = 0, 1
WORKSPACE_BYTES = 32 << 20  # what NVIDIA recommends for Hopper


SYMBOLS = ("cublasCreate_v2", "cublasDestroy_v2", "cublasSetStream_v2", "cublasSetWorkspace_v2", "cublasSetMathMode",
           "cublasSgemm_v2", "cublasDgemm_v2")  # every entry point the binding calls
DEFAULT_MATH = 0  # CUBLAS_DEFAULT_MATH: IEEE float32 products (no TF32 tensor-op shortcut)
STATUS = {1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED", 7: "CUBLAS_STATUS_INVALID_VALUE",
          8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR", 13: "CUBLAS_STATUS_EXECUTION_FAILED",
          14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED", 16: "CUBLAS_STATUS_LICENSE_ERROR"}


def _library() -> ctypes.CDLL:
    """libcublas, loaded the way CuPy finds it: through ``cuda.pathfinder``, which looks in the
    ``nvidia-cublas`` wheel that ``cupy-cuda13x[ctk]`` (or ``-cuda12x``) installs, then in a
    CUDA toolkit (``CUDA_HOME``, the system's libraries); else whatever the dynamic linker finds.
    CuPy's own wheel brings no CUDA libraries."""
    try:
        from cuda import pathfinder
        return ctypes.CDLL(pathfinder.load_nvidia_dynamic_lib("cublas").abs_path)
    except ImportError:
        pass
    except Exception as exc:  # the finder's own errors: not found, not loadable
        found = _linked()
        if found is None:
            raise GraphcError(f"libcublas was not found ({exc}); pip install 'graphc[cuda]' brings it") from None
        return found
    found = _linked()
    if found is None:
        raise GraphcError("libcublas was not found; pip install 'graphc[cuda]' brings it")
    return found


def _linked() -> Optional[ctypes.CDLL]:
    for name in ("libcublas.so", "libcublas.so.13", "libcublas.so.12", ctypes.util.find_library("cublas")):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
    return None


class Cublas:
    def __init__(self, stream_ptr: int, workspace_ptr: int):
        self.lib = _library()
        self.handle = ctypes.c_void_p()
        self._check(self.lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate")
        self._check(self.lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(stream_ptr)), "cublasSetStream")
        self._check(self.lib.cublasSetWorkspace_v2(self.handle, ctypes.c_void_p(workspace_ptr),
                                                   ctypes.c_size_t(WORKSPACE_BYTES)), "cublasSetWorkspace")
        self._check(self.lib.cublasSetMathMode(self.handle, DEFAULT_MATH), "cublasSetMathMode")
        self.scalars = {"float32": (ctypes.c_float(1.0), ctypes.c_float(0.0)),
                        "float64": (ctypes.c_double(1.0), ctypes.c_double(0.0))}

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            name = STATUS.get(status, "an unknown status")
            raise GraphcError(f"{what} failed with cuBLAS status {status} ({name})")

    def close(self) -> None:
        """Free the handle (cuBLAS's own state; the workspace belongs to the device)."""
        if self.handle.value:
            self.lib.cublasDestroy_v2(self.handle)
            self.handle = ctypes.c_void_p()

    def gemm(self, dtype: str, trans_a: bool, trans_b: bool, m: int, n: int, k: int,
             a: int, lda: int, b: int, ldb: int, c: int, ldc: int) -> Any:
        """c = op(a)·op(b), column-major, as cublas<t>gemm."""
        fn = self.lib.cublasSgemm_v2 if dtype == "float32" else self.lib.cublasDgemm_v2
        one, zero = self.scalars[dtype]
        status = fn(self.handle, OP_T if trans_a else OP_N, OP_T if trans_b else OP_N, m, n, k,
                    ctypes.byref(one), ctypes.c_void_p(a), lda, ctypes.c_void_p(b), ldb,
                    ctypes.byref(zero), ctypes.c_void_p(c), ldc)
        self._check(status, "cublasGemm")
