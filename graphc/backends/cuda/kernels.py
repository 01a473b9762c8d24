"""CUDA kernel source: the translation unit's prelude and the kernel skeletons.

Most kernels are a grid-stride loop over their output elements, each element
computed by one thread from global memory alone.  A reduction of many elements
per output is a block-stride loop instead: a block per output, whose threads
each accumulate a strided share of the elements, then combine their partials
by warp shuffles and a shared array of one partial per warp
(:func:`block_reduction`).  The order of every combination is fixed by the
block size alone, so results do not vary from run to run.  The CPU emulator
runs the threads of a block as cooperating fibers for those kernels (see
:mod:`graphc.backends.cuda.emulator`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from graphc.lowering.c_expressions import C_TYPES
from graphc.backends import loops
from graphc.backends.cuda.device_program import Size, Symbol, View, symbol_param
from graphc.ir.shapes import Shape

BLOCK = 256
MAX_BLOCKS = 4096  # the grid-stride loop covers the rest
INDEX = "long long"  # the type of a kernel's indices
WARP = 32

# int32_t and friends come from <stdint.h> under nvcc and the host compiler; NVRTC (CuPy's
# compiler) has no standard headers, so they are defined here, as are an infinity and a NaN,
# which C cannot write as literals (NVRTC has no __builtin_inf: it makes them from their bits).
PRELUDE = r"""// graphc CUDA translation unit
#if defined(__CUDACC_RTC__)
typedef int int32_t;
typedef long long int64_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
#define GRAPHC_INF_F __int_as_float(0x7f800000)
#define GRAPHC_NAN_F __int_as_float(0x7fc00000)
#define GRAPHC_INF __longlong_as_double(0x7ff0000000000000LL)
#define GRAPHC_NAN __longlong_as_double(0x7ff8000000000000LL)
#else
#include <stdint.h>
#include <math.h>
#define GRAPHC_INF_F __builtin_inff()
#define GRAPHC_NAN_F __builtin_nanf("")
#define GRAPHC_INF __builtin_inf()
#define GRAPHC_NAN __builtin_nan("")
#endif

// Philox4x32-10 (Salmon et al., SC'11): a counter-based generator, so a random op is a pure
// function of (element, step, op) and a captured CUDA graph draws fresh numbers each replay.
__device__ inline void graphc_philox(uint32_t c[4], uint32_t k0, uint32_t k1) {
    for (int round = 0; round < 10; round++) {
        const uint64_t p0 = (uint64_t)0xD2511F53u * c[0];
        const uint64_t p1 = (uint64_t)0xCD9E8D57u * c[2];
        const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0;
        const uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1;
        c[1] = (uint32_t)p1;
        c[3] = (uint32_t)p0;
        c[0] = n0;
        c[2] = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

// The shared C expressions read log's and pow's operands through daz.  CuPy compiles with
// -ftz=true, so float32 arithmetic flushes subnormals; log and pow flush their float32 operands
// here as well, as the CPU's fused loops do.  The GPU has no flush-to-zero for float64.
__device__ inline float dazf(float x) { return fabsf(x) < 1.17549435e-38f ? copysignf(0.0f, x) : x; }
__device__ inline double daz(double x) { return x; }

// The logistic function from e = exp(-|x|) <= 1: no overflow, full relative precision in both tails.
__device__ inline float graphc_sigmoidf(float x) { const float e = expf(-fabsf(x)); return (x >= 0 ? 1.0f : e) / (1.0f + e); }
__device__ inline double graphc_sigmoid(double x) { const double e = exp(-fabs(x)); return (x >= 0 ? 1.0 : e) / (1.0 + e); }

extern "C" __global__ void graphc_rng_advance(uint64_t *counter) {
    if (blockIdx.x == 0 && threadIdx.x == 0) counter[0] += 1;
}
"""

RNG_ADVANCE = "graphc_rng_advance"


@dataclass
class KernelText:
    """One kernel being written: its pointer parameters (one per distinct place) and symbolic sizes."""
    name: str
    views: list[View] = field(default_factory=list)
    pointers: dict[tuple, str] = field(default_factory=dict)
    written: set[str] = field(default_factory=set)
    symbols: set[str] = field(default_factory=set)
    expanding: list = field(default_factory=list)     # the inline scalars being written out, innermost last
    inline_reads: list = field(default_factory=list)  # (inline scalar, region it reads)

    def pointer(self, view: View, writes: bool) -> str:
        """The parameter pointing at ``view``'s first element."""
        key = (view.region, view.offset, view.dtype)
        name = self.pointers.get(key)
        if name is None:
            name = f"p{len(self.pointers)}"
            self.pointers[key] = name
            self.views.append(view)
        if writes:
            self.written.add(name)
        return name

    def written_regions(self) -> set[str]:
        return {view.region for view, name in zip(self.views, self.pointers.values()) if name in self.written}

    def size(self, size: Size) -> str:
        self.symbols.update(size.symbols)
        return size.c()

    def extent(self, dims: Sequence) -> Optional[str]:
        """The product of ``dims`` as a kernel expression; None when it is 1."""
        size = Size.of(dims)
        return None if size == Size() else self.size(size)

    def source(self, loop: Sequence[str], comment: str = "", per_block: Sequence[str] = ()) -> str:
        """The kernel: ``loop`` runs once for each i in [0, n), by one thread; with ``per_block`` (the
        block's declarations, such as its shared arrays) by every thread of one block together."""
        params = ["const long long n"] + [f"const long long {symbol_param(s)}" for s in sorted(self.symbols)]
        for view, name in zip(self.views, self.pointers.values()):
            const = "" if name in self.written else "const "
            params.append(f"{const}{C_TYPES[view.dtype]} *{name}")
        head = f'extern "C" __global__ void {self.name}({", ".join(params)})'
        body = [*per_block, *block_stride(loop)] if per_block else loops.grid_stride(INDEX, loop)
        kernel = loops.function(head, body)
        return f"// {comment}\n{kernel}" if comment else kernel

    def launch_args(self, count: Size) -> tuple:
        return (count, *(Symbol(s) for s in sorted(self.symbols)), *self.views)


def axis_indices(shape: Shape, used: set[int], text: KernelText, flat: str = "i") -> list[str]:
    """Lines defining ``{flat}{a}`` for each axis a in ``used``, from the flat row-major index."""
    return loops.axis_indices(INDEX, text.extent, shape, used, flat)


def offset(view: View, loop_shape: Shape, text: KernelText, flat: str = "i") -> tuple[str, set[int]]:
    """The element offset of ``view`` (broadcast against the loop shape) at the loop's index,
    and the loop axes that offset needs."""
    if view.contiguous and tuple(view.shape) == tuple(loop_shape):
        return flat, set()
    lead = len(loop_shape) - len(view.shape)
    terms, used = [], set()
    for a, (dim, stride) in enumerate(zip(view.shape, view.strides)):
        if dim == 1 or stride == Size(0):
            continue
        used.add(lead + a)
        terms.append(f"{flat}{lead + a}" + ("" if stride == Size() else f" * {text.size(stride)}"))
    return (" + ".join(terms) or "0"), used


def block_stride(body: Sequence[str]) -> list[str]:
    """``body`` once for each i in [0, n), a block each: every thread of the block runs it for the same i."""
    return [f"for ({INDEX} i = blockIdx.x; i < n; i += gridDim.x) {{", *(loops.INDENT + line for line in body), "}"]


def _max_identity(dtype: str) -> str:
    """The value every element is at least: the partial maximum of a thread that has read none."""
    return {"float32": "(-GRAPHC_INF_F)", "float64": "(-GRAPHC_INF)", "int32": "(-2147483647 - 1)",
            "int64": "(-9223372036854775807LL - 1)"}.get(dtype, "0")


def block_reduction(op: str, dtype: str, element: str, count: str, element_indices: Sequence[str],
                    out: str) -> tuple[list[str], list[str]]:
    """A sum or max of ``count`` elements by the whole block, stored to ``out`` by thread 0: the block's
    declarations, and the body for one output (the elements at r in [0, count), ``element_indices``
    defining what ``element`` needs from r).  The block size must be whole warps.

    Thread t accumulates elements t, t + blockDim.x, ... by the one-thread rule
    (:func:`graphc.backends.loops.accumulation`: float sums in double, NaN wins a max); each warp
    combines its lanes' partials by shuffles, halving the distance; warp 0 combines the warps'
    partials the same way."""
    acc = loops.accumulator(op, dtype)
    moved = "int" if acc == "unsigned char" else acc  # a shuffle moves 32 or 64 bits
    identity = "0" if op == "sum" else _max_identity(dtype)
    declare, update = loops.accumulation(op, dtype, "acc", element, "k")
    shuffle = [f"for (int d = {WARP // 2}; d > 0; d /= 2) {{",
               f"{loops.INDENT}const {acc} other = ({acc})__shfl_down_sync(0xffffffffu, ({moved})acc, d);",
               f"{loops.INDENT}acc = {loops.combination(op, 'acc', 'other')};", "}"]
    declarations = [f"__shared__ {acc} partial[{WARP}];  // one per warp"]
    body = [declare,
            f"for ({INDEX} k = 0, r = threadIdx.x; r < {count}; k++, r += blockDim.x) {{",
            *(loops.INDENT + line for line in element_indices),
            loops.INDENT + update, "}"]
    if op != "sum":
        body.append(f"if (threadIdx.x >= {count}) acc = {identity};  // read no element")
    body += [*shuffle,
             f"if (threadIdx.x % {WARP} == 0) partial[threadIdx.x / {WARP}] = acc;",
             "__syncthreads();",
             f"if (threadIdx.x < {WARP}) {{",
             f"{loops.INDENT}acc = threadIdx.x < blockDim.x / {WARP} ? partial[threadIdx.x] : ({acc}){identity};",
             *(loops.INDENT + line for line in shuffle),
             f"{loops.INDENT}if (threadIdx.x == 0) {loops.store(out, f'({C_TYPES[dtype]})acc')}", "}",
             "__syncthreads();  // partial is written again for the next output"]
    return declarations, body
