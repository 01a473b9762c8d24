"""exp, log and tanh in fused loops, in units in the last place (ULP) of the exact value.

With libmvec (``graphc.backends.cpu.vector_math``) the fused loops call glibc's
vector functions, documented to within 4 ULP; without it, scalar libm.  Each
function runs inside a fused group over 200 000 values spread over its whole
finite range (log-uniform magnitudes, both signs where the function takes
them), and every finite, normal result must lie within 4 ULP of the exact
value, taken as NumPy's result in extended precision (``np.longdouble``)
rounded to the dtype; NumPy's own float results are held to the same bound,
so the reference is known to be good enough to judge by.  When libmvec is in
use, the built library must really call the vector versions.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cpu import c_loops, vector_math

pytestmark = pytest.mark.skipif(c_loops.compiler() is None, reason="no C compiler (or GRAPHC_KERNELS=numpy)")

MAX_ULPS = 4
SIZE = 200_000


def _sweep(fn: str, dtype: str, rng: np.random.Generator) -> np.ndarray:
    info = np.finfo(dtype)
    half = SIZE // 2
    if fn == "log":
        return np.exp(rng.uniform(np.log(info.tiny), np.log(info.max), SIZE)).astype(dtype)
    if fn == "exp":
        top = np.log(info.max)
        return np.concatenate([rng.uniform(-top, top, half), rng.uniform(-10, 10, SIZE - half)]).astype(dtype)
    magnitudes = np.exp(rng.uniform(np.log(info.tiny), np.log(20.0), half))
    return np.concatenate([rng.uniform(-10, 10, SIZE - half),
                           np.where(rng.random(half) < 0.5, -1, 1) * magnitudes]).astype(dtype)


def _ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Distance in representable numbers, for finite values of one dtype."""
    ints = np.int32 if got.dtype == np.float32 else np.int64
    def ordered(a: np.ndarray) -> np.ndarray:
        i = a.view(ints).astype(np.int64)
        return np.where(i < 0, np.iinfo(ints).min - i, i)
    return np.abs(ordered(got) - ordered(want))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fn", vector_math.FUNCTIONS)
def test_fused_transcendental_within_4_ulps_of_numpy(fn, dtype, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    x = gc.param("x", (SIZE,), dtype=dtype)
    one = gc.param("one", (SIZE,), dtype=dtype)
    step = gc.compile(getattr(gc, fn)(x) * one)  # times ones: a group of two, so the call is fused
    assert step.plan.groups, "not fused"
    values = _sweep(fn, dtype, np.random.default_rng(sum(map(ord, fn + dtype))))
    step.state.values.update(x=values, one=np.ones(SIZE, dtype))
    got = step()
    want = getattr(np, fn)(values.astype(np.longdouble)).astype(dtype)
    finite = np.isfinite(want) & (np.abs(want) >= np.finfo(dtype).tiny)
    assert finite.mean() > 0.9
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    worst = _ulps(got[finite], want[finite]).max()
    assert worst <= MAX_ULPS, f"{fn} {dtype}: {worst} ULP from the exact value"
    assert _ulps(getattr(np, fn)(values)[finite], want[finite]).max() <= MAX_ULPS  # the reference is sound
    if vector_math.enabled():
        suffix = "f" if dtype == "float32" else ""
        [library] = Path(tmp_path, "kernels").glob("*.so")
        assert f"v_{fn}{suffix}@".encode() in library.read_bytes() or f"v_{fn}{suffix}\0".encode() in \
            library.read_bytes(), "the loop calls scalar libm: not vectorized"


def test_vector_math_off_keeps_the_scalar_calls(monkeypatch):
    monkeypatch.setenv("GRAPHC_VECTOR_MATH", "off")
    assert vector_math.declarations() == "" and vector_math.options() == []
