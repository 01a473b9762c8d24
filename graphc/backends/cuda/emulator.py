"""The GPU program, run on the CPU: the check of its semantics on machines without a GPU.

The emulator executes the very :class:`DeviceProgram` the GPU runs: the same
arena layout, launches, GEMM calls (with cuBLAS's column-major conventions and
transpose flags) and copies.  Only the kernels are compiled by the host C++
compiler instead of NVRTC, through a small shim header that makes ``blockIdx``,
``threadIdx``, ``blockDim`` and ``gridDim`` ordinary variables.  A launch of a
kernel whose threads never wait for each other loops over every block and
thread of its grid, each thread run to completion.  A kernel that uses
``__syncthreads()`` or ``__shfl_down_sync`` (the block reductions) runs each
block's threads as fibers (``ucontext``) under a scheduler: each thread runs
until it waits at a barrier or a shuffle, or ends; when every thread of the
block waits at ``__syncthreads()``, or every lane of a warp at a shuffle, they
go on.  Shared arrays are static, shared by the block's fibers.  Threads that
can never all meet (some wait at a barrier that others have left, or have
ended) are a fault in CUDA; here the launch reports it.
"""
from __future__ import annotations

import ctypes
import threading
import re
from types import SimpleNamespace
from typing import Callable, Optional, Sequence

import numpy as np

from graphc.backends.cuda.kernels import PRELUDE
from graphc.backends.cuda.device_program import ITEM_BYTES, Gemm, GemmSizes
from graphc.backends import native
from graphc.errors import GraphcError

SHIM = r"""// CUDA built-ins as host variables: a launch sets them and calls the kernel once per thread.
#include <stdint.h>
#include <math.h>
#if defined(__SSE2__)
#include <xmmintrin.h>
#define FLUSH_SUBNORMALS_BEGIN const unsigned int saved_csr = _mm_getcsr(); _mm_setcsr(saved_csr | 0x8040);
#define FLUSH_SUBNORMALS_END _mm_setcsr(saved_csr);
#else
#define FLUSH_SUBNORMALS_BEGIN
#define FLUSH_SUBNORMALS_END
#endif
struct graphc_dim3 { unsigned int x, y, z; };
static graphc_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __shared__ static

// The threads of one block as fibers: each runs until it waits (at __syncthreads or a shuffle) or ends.
#include <ucontext.h>
#include <stdlib.h>
#include <string.h>
#define GRAPHC_WARP 32
#define GRAPHC_MAX_THREADS 1024
#define GRAPHC_STACK (64 * 1024)
enum { GRAPHC_RUNS, GRAPHC_AT_BARRIER, GRAPHC_AT_SHUFFLE, GRAPHC_ENDED };
struct graphc_fiber { ucontext_t context; int state; unsigned int parity; };
static graphc_fiber graphc_fibers[GRAPHC_MAX_THREADS];
static char *graphc_stacks;
static ucontext_t graphc_scheduler;
static unsigned int graphc_current;
static void (*graphc_body)(void **);
static void **graphc_args;
// A shuffle's values, in two sets used in turn: a lane may write its next value before a slower
// lane has read the previous one, never two shuffles ahead (each shuffle waits for the whole warp).
static unsigned char graphc_exchange[2][GRAPHC_MAX_THREADS][8];

static void graphc_wait(int state) {
    graphc_fiber *fiber = &graphc_fibers[graphc_current];
    fiber->state = state;
    swapcontext(&fiber->context, &graphc_scheduler);
}

static void __syncthreads() { graphc_wait(GRAPHC_AT_BARRIER); }

template <typename T> static T __shfl_down_sync(unsigned int mask, T value, unsigned int delta) {
    const unsigned int t = threadIdx.x, set = graphc_fibers[t].parity;
    graphc_fibers[t].parity ^= 1;
    memcpy(graphc_exchange[set][t], &value, sizeof(T));
    graphc_wait(GRAPHC_AT_SHUFFLE);
    if (t % GRAPHC_WARP + delta >= GRAPHC_WARP || t + delta >= blockDim.x) return value;
    T other;
    memcpy(&other, graphc_exchange[set][t + delta], sizeof(T));
    return other;
}

static void graphc_entry() {
    graphc_body(graphc_args);
    graphc_fibers[graphc_current].state = GRAPHC_ENDED;
}

// Lets the waiting threads go on: a warp whose lanes all wait at a shuffle, else the whole block when
// every thread waits at the barrier.  Returns 0 when none can: all ended, or a fault.
static int graphc_release(unsigned int threads, int *fault) {
    int released = 0, at_barrier = 0, ended = 0;
    for (unsigned int w = 0; w < threads; w += GRAPHC_WARP) {
        const unsigned int end = w + GRAPHC_WARP < threads ? w + GRAPHC_WARP : threads;
        int all = 1;
        for (unsigned int t = w; t < end; t++) all &= graphc_fibers[t].state == GRAPHC_AT_SHUFFLE;
        if (all) {
            for (unsigned int t = w; t < end; t++) graphc_fibers[t].state = GRAPHC_RUNS;
            released = 1;
        }
    }
    if (released) return 1;
    for (unsigned int t = 0; t < threads; t++) {
        at_barrier += graphc_fibers[t].state == GRAPHC_AT_BARRIER;
        ended += graphc_fibers[t].state == GRAPHC_ENDED;
    }
    if (at_barrier == (int)threads) {
        for (unsigned int t = 0; t < threads; t++) graphc_fibers[t].state = GRAPHC_RUNS;
        return 1;
    }
    *fault = ended != (int)threads;
    return 0;
}

// One block of a kernel that synchronizes: its threads as fibers, run in turn until each waits or ends.
static int graphc_run_block(unsigned int threads, void (*body)(void **), void **args) {
    if (threads > GRAPHC_MAX_THREADS || threads % GRAPHC_WARP) return 1;
    if (!graphc_stacks) graphc_stacks = (char *)malloc((size_t)GRAPHC_MAX_THREADS * GRAPHC_STACK);
    if (!graphc_stacks) return 1;
    graphc_body = body;
    graphc_args = args;
    for (unsigned int t = 0; t < threads; t++) {
        graphc_fiber *fiber = &graphc_fibers[t];
        getcontext(&fiber->context);
        fiber->context.uc_stack.ss_sp = graphc_stacks + (size_t)t * GRAPHC_STACK;
        fiber->context.uc_stack.ss_size = GRAPHC_STACK;
        fiber->context.uc_link = &graphc_scheduler;
        makecontext(&fiber->context, graphc_entry, 0);
        fiber->state = GRAPHC_RUNS;
        fiber->parity = 0;
    }
    int fault = 0;
    do {
        for (unsigned int t = 0; t < threads; t++) {
            if (graphc_fibers[t].state != GRAPHC_RUNS) continue;
            graphc_current = t;
            threadIdx.x = t;
            swapcontext(&graphc_scheduler, &graphc_fibers[t].context);
        }
    } while (graphc_release(threads, &fault));
    return fault;
}
"""
# The GPU's float rules, as near as the host comes: multiply-adds contracted into FMA where the CPU has
# it (NVRTC contracts them too), and subnormals flushed to zero in every launch (CuPy compiles with
# -ftz=true; on the GPU that is float32 only, here both widths).  So the emulator differs from the NumPy
# backend the way the GPU does, and the tests' tolerances must allow for it.
FLAGS = ["-O2", "-march=native", "-fno-math-errno", "-ffp-contract=fast", "-shared", "-fPIC", "-x", "c++"]
_SIGNATURE = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)')
_KERNEL = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)(.*?)(?=extern "C"|\Z)', re.DOTALL)
_SYNCHRONIZES = re.compile(r"__syncthreads|__shfl_")


def host_compiler() -> Optional[str]:
    """The host C++ compiler ($CXX, else g++ or c++); None where there is none."""
    return native.find_compiler("CXX", "g++", "c++")


def launchers(translation_unit: str) -> str:
    """For each kernel, ``launch_<name>(blocks, threads, args)``: args points at each parameter's value,
    as cuLaunchKernel takes them.  It returns nonzero where the threads of a block could not all meet at
    a barrier or shuffle (or the block is not whole warps, of at most 1024 threads)."""
    out = []
    for name, params, body in _KERNEL.findall(translation_unit):
        types = [re.sub(r"\s*\w+$", "", p.strip()) for p in params.split(",") if p.strip()]
        values = ", ".join(f"*({t} *)args[{k}]" for k, t in enumerate(types))
        head = (f'extern "C" int launch_{name}(unsigned int blocks, unsigned int threads, void **args) {{\n'
                f"    FLUSH_SUBNORMALS_BEGIN\n"
                f"    gridDim.x = blocks; blockDim.x = threads; gridDim.y = gridDim.z = blockDim.y = blockDim.z = 1;\n"
                f"    int fault = 0;\n")
        if _SYNCHRONIZES.search(body):
            out.append(f"static void body_{name}(void **args) {{ {name}({values}); }}\n\n" + head +
                       f"    for (unsigned int b = 0; b < blocks && !fault; b++) {{\n"
                       f"        blockIdx.x = b;\n"
                       f"        fault = graphc_run_block(threads, body_{name}, args);\n"
                       f"    }}\n"
                       f"    FLUSH_SUBNORMALS_END\n    return fault;\n}}")
        else:
            out.append(head +
                       f"    for (unsigned int b = 0; b < blocks; b++)\n"
                       f"        for (unsigned int t = 0; t < threads; t++) {{\n"
                       f"            blockIdx.x = b; threadIdx.x = t;\n"
                       f"            {name}({values});\n"
                       f"        }}\n"
                       f"    FLUSH_SUBNORMALS_END\n    return fault;\n}}")
    return "\n\n".join(out)


_loaded: dict[str, SimpleNamespace] = {}  # translation unit → the launchers of a library holding its kernels


def preload(translation_units: Sequence[str]) -> None:
    """Compile the kernels of many programs as one library (one compiler run instead of one each);
    programs bound later find their kernels there.  Kernel names must differ between the programs."""
    bodies = [tu.split(PRELUDE, 1)[1] if PRELUDE in tu else tu for tu in translation_units]
    library = _compile(PRELUDE + "\n".join(bodies))
    for tu in translation_units:
        _loaded[tu] = library


def build(translation_unit: str) -> SimpleNamespace:
    """The launchers of a translation unit's kernels, ``launch_<kernel>`` (compiled once, cached on disk)."""
    library = _loaded.get(translation_unit)
    if library is None:
        library = _loaded[translation_unit] = _compile(translation_unit)
    return library


def _compile(translation_unit: str) -> SimpleNamespace:
    cxx = host_compiler()
    if cxx is None:
        raise GraphcError("the CUDA emulator needs a C++ compiler (g++); install one or set CXX")
    source = SHIM + translation_unit + "\n" + launchers(translation_unit) + "\n"
    symbols = [f"launch_{name}" for name, _ in _SIGNATURE.findall(translation_unit)]
    try:
        functions = native.load(cxx, FLAGS, source, symbols, prefix="emu", suffix=".cpp")
    except native.KernelBuildFailed as exc:
        raise GraphcError(f"the emulator could not build the CUDA program: {exc.diagnostics[:2000]} "
                          f"(kernel cache {native.cache_dir()})") from None
    for function in functions.values():
        function.argtypes, function.restype = [ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p], ctypes.c_int
    return SimpleNamespace(**functions)


class EmulatedDevice:
    """Device memory is one NumPy byte array; kernels are host functions; a capture is a list of calls."""

    def __init__(self, translation_unit: str):
        self.library = build(translation_unit)
        self.lock = threading.RLock()

    def allocate(self, nbytes: int) -> tuple[int, np.ndarray]:
        memory = np.zeros(nbytes, np.uint8)
        return memory.ctypes.data, memory

    def upload(self, address: int, host: np.ndarray) -> None:
        ctypes.memmove(address, host.ctypes.data, host.nbytes)

    def copy_in(self, address: int, array: object) -> None:
        raise GraphcError("the CUDA emulator takes NumPy arrays, not arrays on a GPU")

    def download(self, host: np.ndarray, address: int) -> None:
        ctypes.memmove(host.ctypes.data, address, host.nbytes)

    def launch(self, kernel: str, blocks: int, threads: int, args: Sequence[tuple[str, int]]) -> Callable[[], None]:
        values = [ctypes.c_void_p(v) if kind == "pointer" else ctypes.c_longlong(v) for kind, v in args]
        table = (ctypes.c_void_p * max(len(values), 1))(*[ctypes.addressof(v) for v in values])
        fn = getattr(self.library, f"launch_{kernel}")

        def call() -> None:
            if fn(blocks, threads, table):
                raise GraphcError(f"kernel {kernel}: the threads of a block could not all meet at a barrier or "
                                  f"shuffle (or {threads} threads are not whole warps of at most 1024)")
        call.keep = (values, table)  # type: ignore[attr-defined]
        return call

    def matrix(self, address: int, rows: int, cols: int, ld: int, dtype: str) -> np.ndarray:
        """A column-major rows×cols matrix with leading dimension ld, as cuBLAS reads it."""
        item = ITEM_BYTES[dtype]
        extent = ((rows - 1) + (cols - 1) * ld + 1) * item
        return np.ndarray((rows, cols), dtype, buffer=(ctypes.c_char * extent).from_address(address),
                          strides=(item, ld * item))

    def gemm(self, step: Gemm, a: int, b: int, c: int, sizes: GemmSizes) -> Callable[[], None]:
        """cuBLAS's checks (leading dimensions at least 1 and the rows of what they lead), then the product."""
        m, n, k, lda, ldb, ldc = sizes.m, sizes.n, sizes.k, sizes.lda, sizes.ldb, sizes.ldc
        if min(m, n, k) < 0 or min(lda, ldb, ldc) < 1 or ldc < m or lda < (k if step.trans_a else m) \
                or ldb < (n if step.trans_b else k):
            raise AssertionError(f"cuBLAS would refuse (CUBLAS_STATUS_INVALID_VALUE) {sizes} in {step}")
        stored_a = self.matrix(a, k, m, lda, step.dtype) if step.trans_a else self.matrix(a, m, k, lda, step.dtype)
        stored_b = self.matrix(b, n, k, ldb, step.dtype) if step.trans_b else self.matrix(b, k, n, ldb, step.dtype)
        op_a = stored_a.T if step.trans_a else stored_a
        op_b = stored_b.T if step.trans_b else stored_b
        out = self.matrix(c, m, n, ldc, step.dtype)

        def call() -> None:
            out[...] = op_a @ op_b
        return call

    def copy(self, dst: int, src: int, nbytes: int) -> Callable[[], None]:
        return lambda: ctypes.memmove(dst, src, nbytes)

    def capture(self, calls: list[Callable[[], None]]) -> Callable[[], None]:
        def replay() -> None:
            for call in calls:
                call()
        return replay

    def synchronize(self) -> None:
        pass
