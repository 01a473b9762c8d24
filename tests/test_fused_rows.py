"""Row groups in the C loops: a softmax's rows, reductions over them included, as one loop.

Sums and maxima over a row must equal NumPy's bit for bit (NumPy adds a row
pairwise, so the loop must too), whatever the row length, with NaN, infinities
and signed zeros; a column sum whose column is the whole operand ([R, 1]) is
added pairwise by NumPy, so it stays out of the loops that add row by row.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends import c_kernels

pytestmark = pytest.mark.skipif(c_kernels.compiler() is None, reason="no C compiler (or GRAPHC_KERNELS=numpy)")


def _row_groups(step) -> list:
    return [g for g in step.plan.groups if c_kernels.runs_by_rows(g)]


def _scaled(rng: np.random.Generator, shape: tuple, dtype: str) -> np.ndarray:
    """Values over six decades, so that the order of a sum shows in its last bits."""
    return (rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3, shape)).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("columns", [1, 2, 7, 8, 9, 10, 16, 17, 33, 64])
def test_row_sums_and_maxima_equal_numpy_bit_for_bit(dtype: str, columns: int) -> None:
    rng = np.random.default_rng(columns)
    x = gc.input("x", (None, 3), dtype=dtype)
    W = gc.param("W", (3, columns), dtype=dtype)
    h = x @ W
    e = h * h - h  # a fused value with a fixed address
    outputs = {"e": e, "sum": gc.sum(e, axis=1), "sum_k": gc.sum(e, axis=1, keepdims=True),
               "max_k": gc.max(e, axis=1, keepdims=True), "scaled": e - gc.max(e, axis=1, keepdims=True)}
    step = gc.compile(outputs)
    assert _row_groups(step), "the row reductions were not fused"
    for n in (1, 5, 130):
        xb = _scaled(rng, (n, 3), dtype)
        w = _scaled(rng, (3, columns), dtype)
        step.state.values["W"] = w
        got = step(x=xb)
        hb = xb @ w
        want = hb * hb - hb
        np.testing.assert_array_equal(got["e"], want)
        np.testing.assert_array_equal(got["sum"], np.sum(want, axis=1))
        np.testing.assert_array_equal(got["sum_k"], np.sum(want, axis=1, keepdims=True))
        np.testing.assert_array_equal(got["max_k"], np.max(want, axis=1, keepdims=True))
        np.testing.assert_array_equal(got["scaled"], want - np.max(want, axis=1, keepdims=True))


def test_row_reductions_of_nan_infinities_and_signed_zeros_follow_numpy() -> None:
    nan, inf = np.nan, np.inf
    values = np.array([[nan, 1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8, nan],
                       [inf, -inf, 0, 0, 0, 0, 0, 0, 0], [inf, 1, 1, 1, 1, 1, 1, 1, 1],
                       [-inf] * 9, [-0.0] * 9, [3e38] * 9, [1, 2, 3, 4, 5, 6, 7, 8, 9]], np.float32)
    P = gc.param("P", values.shape, dtype="float32")
    half = gc.param("half", (9,), dtype="float32")  # not a scalar: no rewrite takes it out of the sums
    e = P * half  # exact for these values
    step = gc.compile({"sum": gc.sum(e, axis=1), "max": gc.max(e, axis=1)})
    [group] = _row_groups(step)
    assert {m.op for m in group.members} == {"mul", "sum", "max"}
    step.state.values.update(P=values, half=np.full(9, 0.5, np.float32))
    want = values * np.float32(0.5)
    with np.errstate(invalid="ignore", over="ignore"):
        want_sum = np.sum(want, axis=1)
    got = step()
    np.testing.assert_array_equal(got["sum"], want_sum)
    np.testing.assert_array_equal(got["max"], np.max(want, axis=1))
    assert not np.signbit(got["sum"][5]) and not np.signbit(want_sum[5])  # a row of -0 sums to +0


def test_a_softmax_cross_entropy_runs_its_rows_in_one_loop_and_trains_like_the_interpreter() -> None:
    x = gc.input("x", (None, 6))
    y = gc.input("y", (None,), dtype="int32")
    net = gc.nn.Sequential(gc.nn.Dense(8), gc.nn.tanh, gc.nn.Dense(5))
    step = gc.compile(gc.softmax_cross_entropy(net(x), y), optimizer=gc.optim.Adam(0.05))
    fused_ops = {m.op for g in _row_groups(step) for m in g.members}
    assert {"max", "sum", "exp", "log", "one_hot"} <= fused_ops
    assert any(c_kernels.is_column_sum(m) for g in _row_groups(step) for m in g.members)  # the last bias gradient
    assert "np.max(" not in step.source
    rng = np.random.default_rng(4)
    for _ in range(4):  # each compiled step more than once: buffers reused, column sums restarted
        xb = rng.standard_normal((13, 6)).astype(np.float32)
        yb = rng.integers(0, 5, 13).astype(np.int32)
        want_loss, want_updates = step.reference(x=xb, y=yb)
        np.testing.assert_allclose(step(x=xb, y=yb), want_loss, rtol=1e-6)
        for name, value in want_updates.items():
            np.testing.assert_allclose(step.state.values[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_a_column_sum_of_a_single_column_is_left_to_numpy() -> None:
    """NumPy adds an [R, 1] column pairwise, not row by row: fused, it would differ in the last bits."""
    x = gc.input("x", (None, 3), dtype="float32")
    W = gc.param("W", (3, 1), dtype="float32")
    h = x @ W
    e = h * h + h
    total = gc.sum(e, axis=0)
    assert not c_kernels.is_column_sum(total)
    step = gc.compile({"e": e, "total": total})
    rng = np.random.default_rng(5)
    step.state.values["W"] = _scaled(rng, (3, 1), "float32")
    xb = _scaled(rng, (1000, 3), "float32")
    got = step(x=xb)
    np.testing.assert_array_equal(got["total"], np.sum(got["e"], axis=0))


def test_fed_arrays_a_loop_reads_may_be_strided_misaligned_or_big_endian() -> None:
    """Labels and inputs are read by the loop through a pointer: whatever the caller hands in
    (NumPy calls accept all of these) must give the values the interpreter gives."""
    x = gc.input("x", (None, 4))
    y = gc.input("y", (None,), dtype="int32")
    W = gc.param("W", (4, 5))
    scale = gc.param("scale", (4,))
    step = gc.compile(gc.softmax_cross_entropy((x * x + scale) @ W, y))
    assert "x = k.contiguous(x)" in step.source and "y = k.contiguous(y)" in step.source
    rng = np.random.default_rng(6)
    step.state.values.update(W=rng.standard_normal((4, 5)).astype(np.float32),
                             scale=rng.standard_normal(4).astype(np.float32))
    xb = rng.standard_normal((7, 4)).astype(np.float32)
    yb = rng.integers(0, 5, 7).astype(np.int32)
    want = step(x=xb, y=yb)
    assert want == pytest.approx(float(step.reference(x=xb, y=yb)[0]), rel=1e-6)
    raw = np.zeros(yb.nbytes + 1, np.uint8)
    misaligned = raw[1:].view(np.int32)
    misaligned[:] = yb
    assert not misaligned.flags.aligned
    for xs, ys in [(xb.astype(">f4"), yb.astype(">i4")), (np.repeat(xb, 2, axis=0)[::2], np.repeat(yb, 2)[::2]),
                   (np.asfortranarray(xb), misaligned)]:
        assert step(x=xs, y=ys) == want
