"""exp, log and tanh for whole vectors in the fused loops, from glibc's libmvec.

A fused loop that calls scalar ``expf`` or ``tanhf`` cannot be vectorized, and
those calls dominate sigmoid and tanh networks.  glibc ships vector versions
(libmvec, 2.35 and later for tanh); its headers announce them to the compiler
only under ``-ffast-math``, which graphc cannot use (it changes arithmetic
everywhere), so the fused library declares them itself and links libmvec.
glibc documents these functions to within 4 units in the last place, where
the scalar ones are within 1-2; ``tests/test_vector_math.py`` holds them to
that bound against the exact value over each function's range.  ``GRAPHC_VECTOR_MATH=off`` keeps the scalar calls; without
libmvec (another C library, another architecture) they are kept too.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

FUNCTIONS = ("exp", "log", "tanh")
_PROBE = ("_ZGVdN8v_tanhf", "_ZGVdN4v_tanh")  # the newest of the functions used, in both precisions


@functools.lru_cache(maxsize=None)
def _libmvec_found() -> bool:
    name = ctypes.util.find_library("mvec")
    if name is None:
        return False
    try:
        library = ctypes.CDLL(name)
    except OSError:
        return False
    return all(hasattr(library, symbol) for symbol in _PROBE)


def enabled() -> bool:
    return os.environ.get("GRAPHC_VECTOR_MATH", "on") != "off" and _libmvec_found()


def declarations() -> str:
    """C declarations that let the compiler call the vector versions from a vectorized loop."""
    if not enabled():
        return ""
    lines = []
    for fn in FUNCTIONS:
        for c_type, suffix in (("float", "f"), ("double", "")):
            lines += ["#pragma omp declare simd notinbranch", f"{c_type} {fn}{suffix}({c_type});"]
    return "\n".join(lines) + "\n"


def options() -> list[str]:
    """Compiler options: read the declarations (OpenMP's simd part only) and link libmvec."""
    return ["-fopenmp-simd", "-lmvec"] if enabled() else []
