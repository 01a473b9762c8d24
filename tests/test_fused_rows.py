"""Row groups in the C loops: a softmax's rows, reductions over them included, as one loop.

Sums and maxima over a row must equal NumPy's bit for bit (NumPy adds a row
pairwise, so the loop must too), whatever the row length, with NaN, infinities
and signed zeros; a column sum whose column is the whole operand ([R, 1]) is
added pairwise by NumPy, so it stays out of the loops that add row by row.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cpu import c_loops
from support import steps_match_the_interpreter

pytestmark = [pytest.mark.skipif(c_loops.compiler() is None, reason="no C compiler (or GRAPHC_KERNELS=numpy)"),
              pytest.mark.usefixtures("c_kernels_must_build")]


def _row_groups(step) -> list:
    return [g for g in step.plan.groups if c_loops.runs_by_rows(g)]


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
    assert any(c_loops.is_column_sum(m) for g in _row_groups(step) for m in g.members)  # the last bias gradient
    assert "np.max(" not in step.source
    # each compiled step more than once: buffers reused, column sums restarted
    rng = np.random.default_rng(4)
    steps_match_the_interpreter(step, [(rng.standard_normal((13, 6)).astype(np.float32),
                                        rng.integers(0, 5, 13).astype(np.int32)) for _ in range(4)])


def test_a_column_sum_of_a_single_column_is_left_to_numpy() -> None:
    """NumPy adds an [R, 1] column pairwise, not row by row: fused, it would differ in the last bits."""
    x = gc.input("x", (None, 3), dtype="float32")
    W = gc.param("W", (3, 1), dtype="float32")
    h = x @ W
    e = h * h + h
    total = gc.sum(e, axis=0)
    assert not c_loops.is_column_sum(total)
    step = gc.compile({"e": e, "total": total})
    rng = np.random.default_rng(5)
    step.state.values["W"] = _scaled(rng, (3, 1), "float32")
    xb = _scaled(rng, (1000, 3), "float32")
    got = step(x=xb)
    np.testing.assert_array_equal(got["total"], np.sum(got["e"], axis=0))


def test_fed_arrays_a_loop_reads_may_be_strided_misaligned_or_big_endian() -> None:
    """Labels and inputs a loop reads are copied on entry into buffers the loop points at:
    whatever the caller hands in (NumPy calls accept all of these) must give the same values."""
    x = gc.input("x", (None, 4))
    y = gc.input("y", (None,), dtype="int32")
    W = gc.param("W", (4, 5))
    scale = gc.param("scale", (4,))
    step = gc.compile(gc.softmax_cross_entropy((x * x + scale) @ W, y))
    assert "np.copyto(fed_x, x)" in step.source and "np.copyto(fed_y, y)" in step.source
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


# ---------------------------------------------------------------- gaps a mutation run found

def test_the_c_row_helpers_add_in_numpys_order_for_rows_of_any_length() -> None:
    """``row_sum`` directly, past the 64 columns a row loop holds today (NumPy's blocks of 128)."""
    source = "\n".join(f"void sum_{s}(char **p, const int64_t *d) {{ *({t} *)p[1] = row_sum_{s}((const {t} *)p[0], d[0]); }}"
                       for s, t in (("f", "float"), ("d", "double")))
    functions = c_loops.build(source, ["sum_f", "sum_d"])
    rng = np.random.default_rng(7)
    for n in range(1, 400):
        for suffix, dtype in (("f", np.float32), ("d", np.float64)):
            row = _scaled(rng, (n,), dtype.__name__)
            out = np.zeros((), dtype)
            functions[f"sum_{suffix}"](c_loops.pointers([row, out]), c_loops.dims((n,)))
            assert out == np.sum(row), (n, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_row_maximum_of_tied_zeros_is_numpys_zero(dtype: str) -> None:
    rows = np.array([[0.0, -0.0, -0.0], [-0.0, 0.0, 0.0], [-0.0, -0.0, 0.0], [0.0, 0.0, -0.0]], dtype)
    P = gc.param("P", rows.shape, dtype=dtype)
    half = gc.param("half", (3,), dtype=dtype)
    step = gc.compile(gc.max(P * half, axis=1))
    assert _row_groups(step)
    step.state.values.update(P=rows, half=np.full(3, 0.5, dtype))
    got, want = step(), np.max(rows * 0.5, axis=1)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_reductions_of_a_fed_input_without_keepdims() -> None:
    x = gc.input("x", (None, 5), dtype="float64")
    step = gc.compile(gc.sum(x, axis=1) * 2.0 - gc.max(x, axis=1))
    [group] = _row_groups(step)
    assert sorted(m.op for m in group.members) == ["max", "mul", "sub", "sum"]
    xb = np.random.default_rng(8).standard_normal((6, 5))
    np.testing.assert_array_equal(step(x=xb), xb.sum(axis=1) * 2.0 - xb.max(axis=1))


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_integer_row_reductions_stay_with_numpy(dtype: str) -> None:
    x = gc.input("x", (None, 5), dtype=dtype)
    square = x * x
    step = gc.compile({"sum": gc.sum(square, axis=1, keepdims=True) + square, "max": gc.max(square, axis=1)})
    assert not any(c_loops.runs_by_rows(g) and any(m.op in ("sum", "max") and m.dtype == dtype for m in g.members)
                   for g in step.plan.groups)
    xb = np.random.default_rng(9).integers(-1000, 1000, (7, 5)).astype(dtype)
    got = step(x=xb)
    np.testing.assert_array_equal(got["sum"], np.sum(xb * xb, axis=1, keepdims=True, dtype=dtype) + xb * xb)
    np.testing.assert_array_equal(got["max"], np.max(xb * xb, axis=1))


def test_a_row_of_r_values_broadcasts_along_the_columns_even_when_r_equals_c() -> None:
    """e + exp(Σ e) with e of shape [4, 4]: NumPy adds the [4] sums along each row, not down each column."""
    P = gc.param("P", (4, 4), dtype="float64")
    e = P * P
    step = gc.compile(e + gc.exp(gc.sum(e, axis=1)))
    values = np.random.default_rng(10).standard_normal((4, 4))
    step.state.values["P"] = values
    squares = values * values
    np.testing.assert_allclose(step(), squares + np.exp(squares.sum(axis=1)), rtol=1e-12)


def test_a_row_value_times_a_fed_row_of_weights() -> None:
    x = gc.input("x", (None, 5), dtype="float64")
    b = gc.input("b", (None,), dtype="float64")
    step = gc.compile(gc.sum(x * x, axis=1) * b)
    [group] = _row_groups(step)
    assert sorted(m.op for m in group.members) == ["mul", "mul", "sum"]
    rng = np.random.default_rng(11)
    xb, bb = rng.standard_normal((6, 5)), rng.standard_normal(6)
    np.testing.assert_array_equal(step(x=xb, b=bb), np.sum(xb * xb, axis=1) * bb)


def test_a_one_hot_of_a_single_fed_label() -> None:
    y = gc.input("y", (), dtype="int32")
    w = gc.param("w", (5,))
    step = gc.compile(gc.one_hot(y, 5) * w)
    weights = np.arange(1, 6, dtype=np.float32)
    step.state.values["w"] = weights
    for label in range(5):
        np.testing.assert_array_equal(step(y=np.array(label, np.int32)), np.eye(5, dtype=np.float32)[label] * weights)


def test_a_float32_round_trip_inside_a_row_loop_rounds() -> None:
    """GCC 12's SLP vectorizer at -O3 -march=native once forwarded the double through the float
    array of a row loop, dropping the rounding (found by a long random-graph search)."""
    x = gc.input("x", (None, 4), dtype="float64")
    labels = gc.input("labels", (None,), dtype="int32")
    h = gc.cast(gc.cast(x, "float32"), "float64")
    step = gc.compile({"h": h, "loss": gc.softmax_cross_entropy(h, labels)})
    assert _row_groups(step)
    xb = np.array([[1.86459274, 2.96351763, 2.67488018, 2.67488018], [-1.67220925e-276, 2.67488018, 1.60351562, 0.3],
                   [2.67488018, 2.67488018, 2.0e-3, 2.67488018]])
    yb = np.zeros(3, np.int32)
    got = step(x=xb, labels=yb)
    np.testing.assert_array_equal(got["h"], xb.astype(np.float32).astype(np.float64))
    assert got["loss"] == gc.evaluate([gc.softmax_cross_entropy(h, labels)], {"x": xb, "labels": yb})[0]


def test_the_loop_flags_keep_the_rounding_gcc_12_drops(tmp_path: Path) -> None:
    """The reduced C file of the case above, built with the fused loops' flags (but -shared), rounds;
    without -fno-tree-slp-vectorize GCC 12.2 drops the rounding (shown in docs/performance.md)."""
    cc = c_loops.compiler()
    if cc is None:
        pytest.skip("no C compiler")
    source = Path(__file__).parent / "c" / "slp_float_round_trip.c"
    flags = [f for f in c_loops.FLAGS if f not in ("-shared", "-fPIC")]
    subprocess.run([cc, *flags, "-o", str(tmp_path / "round_trip"), str(source)], check=True)
    result = subprocess.run([str(tmp_path / "round_trip")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
