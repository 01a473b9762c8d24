"""Fused groups as C loops, compiled once and called through ctypes.

NumPy runs one pass over memory per op, and a 235k-parameter Adam update is a
dozen such passes.  A fused group runs as one loop that keeps intermediates in
registers: measured on the 2-core CI machine, Adam over the MLP's parameters
took 0.42 ms as NumPy ufuncs with ``out=`` and 0.12 ms as one C loop, while
numexpr (the obvious library for this) took 0.9 ms there — slower than NumPy.
A group of elementwise ops of one shape is a loop over elements; a group of
row values (a softmax and its cross-entropy, see :mod:`graphc.backends.row_groups`)
is a loop over rows, each row kept in locals.

The C follows NumPy's arithmetic exactly where it can: IEEE float32/float64
without fast-math, no FMA contraction (``-ffp-contract=off``), NaN-propagating
max/min/relu/sign, NumPy's choice between 0 and -0 (not always in a row's
maximum, which NumPy takes in vector lanes: of a row mixing 0 and -0 and no
larger value, about 2 % come out the other zero), wrapping integer overflow
(``-fwrapv``), any non-zero value cast to bool is true.  A float cast to an
integer type is undefined for NaN, infinities and values out of range, in C as
in NumPy (which warns).  Transcendentals come from libm, which may differ from NumPy's own in
the last bit (exp, log and tanh from libmvec where it exists: a few bits, see
``vector_math``), and subnormal numbers flush to zero (see ``PRELUDE``).

Libraries are built, cached and checked by :mod:`graphc.backends.native`: a
truncated, corrupted or swapped file in the cache is rebuilt, never run.  Without
a C compiler the backend runs plain NumPy; when building, writing or loading a
library fails (a broken compiler, a read-only cache folder), so does the step,
after a one-line warning naming the cause and the folder.
"""
from __future__ import annotations

import ctypes
import os
import re
import sys
from typing import Callable, Optional, Sequence

import numpy as np

from graphc.backends import loops, native, row_groups
from graphc.backends.cpu import vector_math
from graphc.lowering.c_expressions import C_TYPES, literal, supports
from graphc.ir import dtypes
from graphc.ir.node import Node
from graphc.ir.shapes import Shape
from graphc.ir.registry import has_no_buffer, is_fed, is_strided, is_view
from graphc.passes.fusion import Group

# No SLP vectorization: GCC 12.2 at -O3 with AVX2 or AVX-512 drops a float32 rounding when a row
# loop stores (float)x in one local array and reads it back as double into another: the fallback
# it makes for overlapping arrays copies the doubles straight through (tests/c/slp_float_round_trip.c
# reproduces it in plain C, without undefined behaviour).  It costs a row loop of the MLP 4 µs in 11.
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off", "-fwrapv", "-fno-tree-slp-vectorize",
         "-shared", "-fPIC"]
# Debug builds, chosen by environment variable: GRAPHC_SANITIZE=1 checks every array access and
# undefined operation (a failure aborts with a report; the address sanitizer must be loaded first,
# LD_PRELOAD=$(gcc -print-file-name=libasan.so)); GRAPHC_FTZ=0 keeps subnormal numbers.
SANITIZE = ["-fsanitize=address,undefined", "-fsanitize=bounds-strict", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer", "-g"]
KEEP_SUBNORMALS = ["-DGRAPHC_KEEP_SUBNORMALS"]


def flags() -> list[str]:
    """The C compiler's flags for the fused loops, debug switches included (part of the cache key)."""
    extra = SANITIZE if os.environ.get("GRAPHC_SANITIZE", "0") not in ("", "0") else []
    if os.environ.get("GRAPHC_FTZ", "1") == "0":
        extra = extra + KEEP_SUBNORMALS
    return FLAGS + extra


# Subnormal numbers cost up to a hundred cycles an operation on x86.  Optimizer
# moments decay into them wherever a gradient is exactly zero (dead ReLUs, blank
# pixels), and squares of tiny gradients land there too, so every fused loop runs
# with flush-to-zero and denormals-are-zero set, as XLA's CPU backend does, and
# restores the caller's mode on return.  Results differ from NumPy's only for
# values below the smallest normal number (1.2e-38 in float32).  GRAPHC_FTZ=0 builds them without.
PRELUDE = """#include <math.h>
#include <stdint.h>
#if defined(__SSE2__) && !defined(GRAPHC_KEEP_SUBNORMALS)
#include <xmmintrin.h>
#define FLUSH_SUBNORMALS_BEGIN const unsigned int saved_csr = _mm_getcsr(); _mm_setcsr(saved_csr | 0x8040);
#define FLUSH_SUBNORMALS_END _mm_setcsr(saved_csr);
#else
#define FLUSH_SUBNORMALS_BEGIN
#define FLUSH_SUBNORMALS_END
#endif
#include <float.h>
#define GRAPHC_INF_F __builtin_inff()
#define GRAPHC_INF __builtin_inf()
#define GRAPHC_NAN_F __builtin_nanf("")
#define GRAPHC_NAN __builtin_nan("")
/* glibc's log and pow take their operand apart bit by bit, so denormals-are-zero does not reach
   them: flush their operands by hand, to the zero of the same sign, as the hardware does. */
#if defined(GRAPHC_KEEP_SUBNORMALS)
static inline double daz(double x) { return x; }
static inline float dazf(float x) { return x; }
#else
static inline double daz(double x) { return fabs(x) < DBL_MIN ? copysign(0.0, x) : x; }
static inline float dazf(float x) { return fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x; }
#endif
/* The logistic function from e = exp(-|x|) <= 1: no overflow, full relative precision in both tails. */
static inline double graphc_sigmoid(double x) { const double e = exp(-fabs(x)); return (x >= 0 ? 1.0 : e) / (1.0 + e); }
static inline float graphc_sigmoidf(float x) { const float e = expf(-fabsf(x)); return (x >= 0 ? 1.0f : e) / (1.0f + e); }
/* Sums and maxima over a row, in NumPy's order: a reduction starts from 0 (so a row of -0 sums
   to +0) and adds a contiguous row pairwise, with eight partial sums in blocks of up to 128. */
#define ROW_REDUCTIONS(T, SUFFIX) \
static T pairwise_##SUFFIX(const T *a, int64_t n) { \
    if (n < 8) { T s = 0; for (int64_t i = 0; i < n; i++) s += a[i]; return s; } \
    if (n <= 128) { \
        T r[8]; int64_t i; \
        for (int k = 0; k < 8; k++) r[k] = a[k]; \
        for (i = 8; i < n - n % 8; i += 8) for (int k = 0; k < 8; k++) r[k] += a[i + k]; \
        T s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7])); \
        for (; i < n; i++) s += a[i]; \
        return s; } \
    int64_t h = n / 2; h -= h % 8; \
    return pairwise_##SUFFIX(a, h) + pairwise_##SUFFIX(a + h, n - h); } \
static inline T row_sum_##SUFFIX(const T *a, int64_t n) { return (T)0 + pairwise_##SUFFIX(a, n); } \
static inline T row_max_##SUFFIX(const T *a, int64_t n) { \
    T m = a[0]; \
    for (int64_t i = 1; i < n; i++) m = (m != m) ? m : (a[i] != a[i] || a[i] >= m) ? a[i] : m; \
    return m; }
ROW_REDUCTIONS(float, f)
ROW_REDUCTIONS(double, d)
/* The first label outside 0..depth-1, or -1: one vectorized pass for the usual all-good case. */
#define LABEL_CHECK(T) \
int64_t first_bad_##T(const T##_t *y, int64_t n, int64_t depth) { \
    uint64_t worst = 0; \
    for (int64_t i = 0; i < n; i++) { uint64_t u = (uint64_t)(int64_t)y[i]; worst = u > worst ? u : worst; } \
    if (worst < (uint64_t)depth) return -1; \
    for (int64_t i = 0; i < n; i++) if ((uint64_t)(int64_t)y[i] >= (uint64_t)depth) return i; \
    return -1; }
LABEL_CHECK(int32)
LABEL_CHECK(int64)

"""


def _index(operand: Node, out_ndim: int) -> str:
    """Offset of ``operand`` (contiguous, broadcast against the loop) at loop indices i0.."""
    shape = operand.shape
    lead = out_ndim - len(shape)
    terms = []
    for axis, dim in enumerate(shape):
        if dim == 1:
            continue
        stride = " * ".join(f"d[{lead + k}]" for k in range(axis + 1, len(shape)) if shape[k] != 1)
        terms.append(f"i{lead + axis}" + (f" * {stride}" if stride else ""))
    return " + ".join(terms) or "0"


def _row_index(node: Node, shape: Shape) -> str:
    """Offset of ``node`` at row r (and column c, in a member of two dimensions) of a row loop.
    NumPy aligns shapes on the right: a 1-D operand of a wide member runs along its columns."""
    indices = ("r", "c")[2 - node.ndim:] if len(shape) == 2 else ("r",)
    terms = []
    for axis, (dim, index) in enumerate(zip(node.shape, indices)):
        if dim != 1:
            stride = int(np.prod(node.shape[axis + 1:], dtype=np.int64))
            terms.append(f"{index} * {stride}" if stride != 1 else index)
    return " + ".join(terms) or "0"


class _CTarget(loops.Target):
    """A C function ``void name(char **p, const int64_t *d)``: p holds the input then output pointers
    (contiguous arrays), d the loop dimensions; loops nest over the dimensions, or over rows."""
    index_type = "int64_t"
    flat = False
    numpy_order = True

    def __init__(self, group: Group, describe: Callable[[Node], str]):
        self.describe = describe
        self.axes: set[int] = set()
        self.slot = {n: k for k, n in enumerate(pointer_operands(group))}
        self.scalars: dict[Node, str] = {}  # inputs that are one value for the whole loop
        for node in group.inputs:
            if node not in self.slot:
                self.scalars[node] = literal(node.attrs["value"].array.reshape(()).item(), node.dtype)
            elif all(d == 1 for d in node.shape):
                self.scalars[node] = f"s{self.slot[node]}"

    def opening(self, group: Group) -> list[str]:
        """The pointers, and the inputs loaded once (arrays of one element)."""
        lines = ["FLUSH_SUBNORMALS_BEGIN"]
        operands = pointer_operands(group)
        inputs = len(operands) - len(group.outputs)
        for k, node in enumerate(operands):
            const = "const " if k < inputs else ""
            lines.append(f"{const}{C_TYPES[node.dtype]} *a{k} = ({const}{C_TYPES[node.dtype]} *)p[{k}];")
        for node, scalar in self.scalars.items():
            if node in self.slot:
                lines.append(f"const {C_TYPES[node.dtype]} {scalar} = a{self.slot[node]}[0];")
        return lines

    def read(self, node: Node, shape: Shape, at: loops.At) -> str:
        return self.scalars.get(node) or self.write(node, shape, at)

    def write(self, node: Node, shape: Shape, at: loops.At) -> str:
        index = _index(node, len(shape)) if at == loops.At.ELEMENT else _row_index(node, shape)
        return f"{self.pointer(node)}[{index}]"

    def pointer(self, node: Node) -> str:
        return f"a{self.slot[node]}"

    def extent(self, dims: Sequence) -> Optional[str]:
        raise AssertionError("C loops run over d[], not flat indices")

    def comment(self, node: Node) -> str:
        return f"  /* {self.describe(node)} */"

    def accumulates(self, node: Node) -> bool:
        return is_column_sum(node)


def kernel_source(name: str, group: Group, describe: Callable[[Node], str]) -> str:
    """One C function ``void name(char **p, const int64_t *d)``: p holds the input then output
    pointers, d the loop dimensions (the group's shape, resolved)."""
    if runs_by_rows(group):
        return row_kernel_source(name, group, describe)
    target = _CTarget(group, describe)
    return _function(name, group, target, *loops.elementwise(target, group.members, group.inputs, group.outputs,
                                                             group.shape))


def row_kernel_source(name: str, group: Group, describe: Callable[[Node], str]) -> str:
    """A group of row values (see :mod:`graphc.backends.row_groups`) as a loop over rows r < d[0],
    row reductions in NumPy's order (the prelude's ``row_sum`` and ``row_max`` helpers)."""
    target = _CTarget(group, describe)
    return _function(name, group, target, *loops.rows(target, group.members, group.outputs))


def _function(name: str, group: Group, target: _CTarget, before: list[str], loop: list[str]) -> str:
    body = target.opening(group) + before + loop + ["FLUSH_SUBNORMALS_END"]
    return loops.function(f"void {name}(char **p, const int64_t *d)", body)


def runs_by_rows(group: Group) -> bool:
    """Is ``group`` a loop over rows (mixed row shapes, row reductions, one-hot rows), not over elements?"""
    return row_groups.is_row_group([m for m in group.members if not is_column_sum(m)])


def _without_comments(source: str) -> str:
    return re.sub(r"/\*.*?\*/", "", source)


def loop_code(kernel: str) -> str:
    """What a kernel computes, without its name and comments: equal for groups one function can run."""
    return _without_comments(kernel.split("\n", 1)[1])


def pointer_operands(group: Group) -> list[Node]:
    return [n for n in group.inputs if n.op != "constant" or n.attrs["value"].array.size > 1] + group.outputs


def compiler() -> Optional[str]:
    """The C compiler ($CC, else gcc or cc); None where there is none or GRAPHC_KERNELS=numpy asks for none."""
    if os.environ.get("GRAPHC_KERNELS", "c") == "numpy":
        return None
    return native.find_compiler("CC", "gcc", "cc")


_warned: set[str] = set()


def build(source: str, names: Sequence[str]) -> Optional[dict[str, Callable]]:
    """Compile (or find in the disk cache) a library of kernels; None, after a one-line warning
    on stderr naming the cause and the cache folder, if that fails for any reason."""
    cc = compiler()
    if cc is None:
        return None
    full = PRELUDE + vector_math.declarations() + source + "\n"
    checks = [label_check(dtype) for dtype in LABEL_DTYPES]
    try:
        functions = native.load(cc, flags(), full, [*names, *checks], prefix="k", suffix=".c",
                                libraries=vector_math.options())
    except native.KernelBuildFailed as exc:
        message = (f"graphc: warning: fused C kernels are off, running plain NumPy: {exc} "
                   f"(kernel cache {native.cache_dir()})")
        if message not in _warned:
            _warned.add(message)
            print(message, file=sys.stderr)
        return None
    for name in names:
        functions[name].argtypes, functions[name].restype = [ctypes.c_void_p, ctypes.c_void_p], None
    for check in checks:
        functions[check].argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
        functions[check].restype = ctypes.c_int64
    return functions


LABEL_DTYPES = ("int32", "int64")  # labels a fused one-hot reads (its check is in every library)


def label_check(dtype: str) -> str:
    """The library's function that finds the first label out of range (-1 if none)."""
    return f"first_bad_{dtype}"


def pointers(arrays: Sequence[np.ndarray]) -> ctypes.Array:
    """The kernel's pointer table, made once when the step is bound.  It keeps its arrays
    alive: a buffer only a kernel reads must not be freed under it."""
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError("a fused kernel operand is not contiguous")
    table = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
    table.arrays = list(arrays)  # type: ignore[attr-defined]
    return table


def dims(shape: Sequence[int]) -> ctypes.Array:
    return (ctypes.c_int64 * max(len(shape), 1))(*shape)


def eligible(node: Node) -> bool:
    """Can ``node`` be a member of a fused C group?  Its operands must be contiguous arrays the
    loop can point at, fixed when the step is bound: buffers, variables, views of them, and
    inputs (copied on entry into a buffer of their own), not strided views.  Besides elementwise ops, a float sum or max over a row and a
    one-hot row may join a group of row values, and a column sum the group of the value it sums
    (see ``joins``)."""
    if is_column_sum(node):
        return True
    if not all(is_fed(i.op) or _fixed_address(i) for i in node.inputs):
        return False
    if node.op == "one_hot":  # of fed labels only: the step checks them on entry
        return row_groups.fusable(node) and node.inputs[0].op == "input" and node.inputs[0].dtype in LABEL_DTYPES
    return supports(node.op) or (row_groups.is_row_reduction(node) and dtypes.is_float(node.dtype))


def is_column_sum(node: Node) -> bool:
    """A float sum over the first axis of an array of two or more dimensions (a bias gradient).

    In a loop over its operand's elements it accumulates row by row, in the order NumPy adds
    along that axis (one row after another), so the result is NumPy's bit for bit.  When the
    other axes hold one value in all, NumPy sums the column pairwise instead: not such a sum."""
    if not (node.op == "sum" and node.attrs["axes"] == (0,) and node.inputs[0].ndim >= 2
            and dtypes.is_float(node.dtype)):
        return False
    rest = node.inputs[0].shape[1:]
    return not all(d == 1 for d in rest)


def joins(operand: Node, node: Node) -> bool:
    """Elementwise ops of one shape share a loop, as do row values of one R (a softmax's rows,
    reductions included); a column sum joins the loop of the value it sums.  Nothing in the loop
    may read a column sum, which is complete only when the loop ends."""
    if is_column_sum(operand):
        return False
    return is_column_sum(node) or row_groups.joins(operand, node)


def _fixed_address(node: Node) -> bool:
    while is_view(node.op) and not is_strided(node.op):  # as fixed as the value they view
        node = node.inputs[0]
    return not (is_fed(node.op) or is_strided(node.op) or has_no_buffer(node.op))
