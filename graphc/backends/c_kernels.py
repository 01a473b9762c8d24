"""Fused elementwise groups as C loops, compiled once and called through ctypes.

NumPy runs one pass over memory per op, and a 235k-parameter Adam update is a
dozen such passes.  A fused group runs as one loop that keeps intermediates in
registers: measured on the 2-core CI machine, Adam over the MLP's parameters
took 0.42 ms as NumPy ufuncs with ``out=`` and 0.12 ms as one C loop, while
numexpr (the obvious library for this) took 0.9 ms there — slower than NumPy.

The C follows NumPy's arithmetic exactly where it can: IEEE float32/float64
without fast-math, no FMA contraction (``-ffp-contract=off``), NaN-propagating
max/min/relu/sign, NumPy's choice between 0 and -0, wrapping integer overflow
(``-fwrapv``), any non-zero value cast to bool is true.  A float cast to an
integer type is undefined for NaN, infinities and values out of range, in C as
in NumPy (which warns).  Transcendentals come from libm, which may differ from NumPy's own in
the last bit (exp, log and tanh from libmvec where it exists: a few bits, see
``vector_math``), and subnormal numbers flush to zero (see ``PRELUDE``).

Compiled libraries are cached on disk under a name holding a digest of their
source and one of their own bytes, and checked against both before loading: a
truncated, corrupted or swapped file is rebuilt, never run.  Without a C
compiler the backend runs plain NumPy; when building, writing or loading a
library fails (a broken compiler, a read-only cache folder), so does the step,
after a one-line warning naming the cause and the folder.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from graphc.backends import native, vector_math
from graphc.backends.c_style import C_TYPES, expression, literal, supports
from graphc.ir import dtypes
from graphc.ir.node import Node
from graphc.passes.fusion import Group, same_shape

FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off", "-fwrapv", "-shared", "-fPIC"]


# Subnormal numbers cost up to a hundred cycles an operation on x86.  Optimizer
# moments decay into them wherever a gradient is exactly zero (dead ReLUs, blank
# pixels), and squares of tiny gradients land there too, so every fused loop runs
# with flush-to-zero and denormals-are-zero set, as XLA's CPU backend does, and
# restores the caller's mode on return.  Results differ from NumPy's only for
# values below the smallest normal number (1.2e-38 in float32).
PRELUDE = """#include <math.h>
#include <stdint.h>
#if defined(__SSE2__)
#include <xmmintrin.h>
#define FLUSH_SUBNORMALS_BEGIN const unsigned int saved_csr = _mm_getcsr(); _mm_setcsr(saved_csr | 0x8040);
#define FLUSH_SUBNORMALS_END _mm_setcsr(saved_csr);
#else
#define FLUSH_SUBNORMALS_BEGIN
#define FLUSH_SUBNORMALS_END
#endif
#include <float.h>
/* glibc's log and pow take their operand apart bit by bit, so denormals-are-zero does not reach
   them: flush their operands by hand, to the zero of the same sign, as the hardware does. */
static inline double daz(double x) { return fabs(x) < DBL_MIN ? copysign(0.0, x) : x; }
static inline float dazf(float x) { return fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x; }

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


def kernel_source(name: str, group: Group, describe: Callable[[Node], str]) -> str:
    """One C function ``void name(char **p, const int64_t *d)``: p holds the input then output
    pointers, d the loop dimensions (the group's shape, resolved)."""
    ndim = len(group.shape)
    local: dict[Node, str] = {}
    lines = [f"void {name}(char **p, const int64_t *d) {{", "    FLUSH_SUBNORMALS_BEGIN"]
    operands = pointer_operands(group)
    inputs = len(operands) - len(group.outputs)
    for k, node in enumerate(operands):
        const = "const " if k < inputs else ""
        lines.append(f"    {const}{C_TYPES[node.dtype]} *a{k} = ({const}{C_TYPES[node.dtype]} *)p[{k}];")
    slot = {n: k for k, n in enumerate(operands)}
    whole = next(m for m in reversed(group.members) if m.op != "sum")  # indexed by the whole loop
    body = [f"const int64_t o = {_index(whole, ndim) if ndim else '0'};"]
    for node in group.inputs:
        if node not in slot:
            local[node] = literal(node.attrs["value"].array.reshape(()).item(), node.dtype)
        elif all(d == 1 for d in node.shape):  # one value for the whole loop: load it once
            local[node] = f"s{slot[node]}"
            lines.append(f"    const {C_TYPES[node.dtype]} s{slot[node]} = a{slot[node]}[0];")
        else:
            local[node] = f"a{slot[node]}[{_index(node, ndim) if ndim else '0'}]"
    for j, node in enumerate(group.members):
        if node.op == "sum":  # a column sum (see is_column_sum): zeroed first, one row added per i0
            lines.append(f"    for (int64_t j = 0; j < {' * '.join(f'd[{k}]' for k in range(1, ndim))}; j++) "
                         f"a{slot[node]}[j] = 0;")
            body.append(f"a{slot[node]}[{_index(node, ndim)}] += {local[node.inputs[0]]};  /* {describe(node)} */")
            continue
        var = f"v{j}"
        body.append(f"const {C_TYPES[node.dtype]} {var} = {expression(node, [local[i] for i in node.inputs])};"
                    f"  /* {describe(node)} */")
        local[node] = var
    for node in group.outputs:
        if node.op != "sum":
            body.append(f"a{slot[node]}[o] = {local[node]};")
    indent = "    "
    for axis in range(ndim):
        if axis == ndim - 1:
            # Outputs alias inputs only element for element (the memory plan's in-place
            # rule), so iterations are independent: let the compiler vectorize freely.
            lines.append(f"{indent}#pragma GCC ivdep")
        lines.append(f"{indent}for (int64_t i{axis} = 0; i{axis} < d[{axis}]; i{axis}++) {{")
        indent += "    "
    lines += [indent + b for b in body]
    for axis in reversed(range(ndim)):
        indent = indent[:-4]
        lines.append(f"{indent}}}")
    lines += ["    FLUSH_SUBNORMALS_END", "}"]
    return "\n".join(lines)


def _without_comments(source: str) -> str:
    return re.sub(r"/\*.*?\*/", "", source)


def loop_code(kernel: str) -> str:
    """What a kernel computes, without its name and comments: equal for groups one function can run."""
    return _without_comments(kernel.split("\n", 1)[1])


def pointer_operands(group: Group) -> list[Node]:
    return [n for n in group.inputs if n.op != "constant" or n.attrs["value"].array.size > 1] + group.outputs


def compiler() -> Optional[str]:
    if os.environ.get("GRAPHC_KERNELS", "c") == "numpy":
        return None
    return shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")


def _cache_dir() -> Path:
    return native.cache_dir()


class KernelCacheError(Exception):
    """Why fused kernels could not be built or loaded; the step then runs as plain NumPy."""


_warned: set[str] = set()


def build(source: str, names: Sequence[str]) -> Optional[dict[str, Callable]]:
    """Compile (or find in the disk cache) a library of kernels; None, after a one-line warning
    on stderr naming the cause and the cache folder, if that fails for any reason."""
    cc = compiler()
    if cc is None:
        return None
    full = PRELUDE + vector_math.declarations() + source + "\n"
    # Comments (the IR each line came from) do not change the binary: leave them out of the key,
    # so an equal model rebuilt with other node numbers finds its library.
    code = _without_comments(full)
    tag = hashlib.sha256("\0".join([code, cc, *FLAGS, *vector_math.options(), platform.machine(),
                                    _cpu_tag()]).encode()).hexdigest()[:24]
    folder = _cache_dir()
    try:
        functions = _load_cached(folder, tag, names)
        if functions is None:
            _compile_into(cc, full, folder, tag)
            functions = _load_cached(folder, tag, names)
        if functions is None:
            raise KernelCacheError("the library just built does not load")
    except KernelCacheError as exc:
        message = f"graphc: warning: fused C kernels are off, running plain NumPy: {exc} (kernel cache {folder})"
        if message not in _warned:
            _warned.add(message)
            print(message, file=sys.stderr)
        return None
    return functions


def _load_cached(folder: Path, tag: str, names: Sequence[str]) -> Optional[dict[str, Callable]]:
    """The first cached build of ``tag`` whose bytes match the digest in its name and which loads.

    A library's file name holds a digest of its source (``tag``) and one of its own bytes, so a
    truncated, corrupted or swapped file is known before it is loaded; such a file is removed
    (when the folder allows) and, finding nothing valid, the caller rebuilds.
    """
    if not folder.is_dir():
        return None
    for library in sorted(folder.glob(f"k{tag}-*.so")):
        try:
            valid = library.name == _library_name(tag, library.read_bytes())
            functions = _open(library, names) if valid else None
        except (OSError, AttributeError):
            functions = None
        if functions is not None:
            return functions
        with contextlib.suppress(OSError):
            library.unlink()
    return None


def _library_name(tag: str, binary: bytes) -> str:
    return f"k{tag}-{hashlib.sha256(binary).hexdigest()[:16]}.so"


def _open(library: Path, names: Sequence[str]) -> dict[str, Callable]:
    lib = ctypes.CDLL(str(library))
    functions = {}
    for name in names:
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        fn.restype = None
        functions[name] = fn
    return functions


def _compile_into(cc: str, source: str, folder: Path, tag: str) -> None:
    """Build the library in a private folder, then move it into the cache under its digests."""
    with tempfile.TemporaryDirectory() as tmp:
        c_file = Path(tmp) / "kernels.c"
        c_file.write_text(source)
        built = Path(tmp) / "kernels.so"
        try:
            result = subprocess.run([cc, *FLAGS, "-o", str(built), str(c_file), *vector_math.options(), "-lm"],
                                    capture_output=True, text=True)
        except OSError as exc:
            raise KernelCacheError(f"the C compiler {cc} cannot run: {exc.strerror or exc}") from None
        if result.returncode != 0:
            first = next((line for line in result.stderr.splitlines() if "error" in line), result.stderr.strip())
            raise KernelCacheError(f"the C compiler {cc} failed (exit {result.returncode}): {first[:200]}")
        binary = built.read_bytes() if built.is_file() else b""
        if not binary:
            raise KernelCacheError(f"the C compiler {cc} exited without error but wrote no library; "
                                   f"set CC to a working C compiler, or GRAPHC_KERNELS=numpy")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staged = folder / f".k{tag}.{os.getpid()}.tmp"
        staged.write_bytes(binary)
        os.replace(staged, folder / _library_name(tag, binary))
    except OSError as exc:
        raise KernelCacheError(f"cannot write to the kernel cache: {exc.strerror or exc}; make the folder "
                               f"writable or point GRAPHC_CACHE_DIR at one") from None


def _cpu_tag() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


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
    """Can ``node`` be a member of a fused C group?  Its operands must have addresses fixed
    when the step is bound (buffers, variables, views of them), not fed arrays or strided views.
    A column sum may join the group of the value it sums (see ``joins``)."""
    return (supports(node.op) and all(_fixed_address(i) for i in node.inputs)) or is_column_sum(node)


def is_column_sum(node: Node) -> bool:
    """A float sum over the first axis of an array of two or more dimensions (a bias gradient).

    In a loop over its operand's elements it accumulates row by row, in the order NumPy adds
    along that axis (one row after another), so the result is NumPy's bit for bit."""
    return (node.op == "sum" and node.attrs["axes"] == (0,) and node.inputs[0].ndim >= 2
            and dtypes.is_float(node.dtype))


def joins(operand: Node, node: Node) -> bool:
    """Elementwise ops of one shape share a loop, and a column sum joins the loop of the value it
    sums; nothing in the loop may read a column sum, which is complete only when the loop ends."""
    if is_column_sum(operand):
        return False
    return is_column_sum(node) or same_shape(operand, node)


def _fixed_address(node: Node) -> bool:
    if node.op in ("input", "transpose", "broadcast_to", "numel"):
        return False
    if node.op in ("reshape", "slice", "stop_gradient"):
        return _fixed_address(node.inputs[0])
    return True
