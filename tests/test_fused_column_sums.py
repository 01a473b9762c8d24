"""Column sums fused into the elementwise loop that makes their operand.

A sum over the first axis (a bias gradient) joins the fused group of the value
it sums, accumulating row by row in the loop; it must add in NumPy's order for
that axis (so equal to ``np.sum(axis=0)`` bit for bit), start from zero even
where its buffer held something, and never be read inside the loop that is
still accumulating it.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cpu import c_loops
from support import steps_match_the_interpreter

pytestmark = [pytest.mark.skipif(c_loops.compiler() is None, reason="no C compiler (or GRAPHC_KERNELS=numpy)"),
              pytest.mark.usefixtures("c_kernels_must_build")]


def _group_with_sum(step):
    return [g for g in step.plan.groups if any(m.op == "sum" for m in g.members)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_fused_column_sum_equals_numpy_bit_for_bit(dtype, keepdims):
    rng = np.random.default_rng(1)
    x = gc.input("x", (None, 7), dtype=dtype)
    W = gc.param("W", (7, 33), dtype=dtype)
    h = x @ W
    d = gc.relu(h) + h * h  # no rewrite moves anything out of this sum
    step = gc.compile({"d": d, "s": gc.sum(d, axis=0, keepdims=keepdims)})
    assert _group_with_sum(step), "the column sum was not fused"
    w = rng.standard_normal((7, 33)).astype(dtype)
    step.state.values["W"] = w
    for n in (1, 5, 64):
        xb = rng.standard_normal((n, 7)).astype(dtype)
        got = step(x=xb)
        hb = xb @ w
        want_d = np.maximum(hb, 0) + hb * hb
        np.testing.assert_array_equal(got["d"], want_d)
        np.testing.assert_array_equal(got["s"], np.sum(want_d, axis=0, keepdims=keepdims))


def test_a_value_that_reads_the_column_sum_is_not_in_its_loop():
    """d * Σₙd needs the finished sum: it runs after the loop that accumulates it."""
    rng = np.random.default_rng(2)
    x = gc.input("x", (None, 4))
    W = gc.param("W", (4, 6))
    d = gc.relu(x @ W) + 1.0
    out = d * gc.sum(d, axis=0) + d  # d > 0: nothing cancels
    step = gc.compile(out)
    [group] = _group_with_sum(step)
    sums = {id(m) for m in group.members if m.op == "sum"}
    assert not any(id(i) in sums for m in group.members for i in m.inputs)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    step.state.values["W"] = w
    xb = rng.standard_normal((9, 4)).astype(np.float32)
    want = gc.evaluate([out], {"x": xb}, {"W": w})[0]
    np.testing.assert_allclose(step(x=xb), want, rtol=1e-6)


def test_column_sums_over_steps_start_from_zero_and_match_the_reference():
    """Bias gradients of a train step are fused column sums; three SGD steps match the interpreter."""
    x = gc.input("x", (None, 5))
    y = gc.input("y", (None,), dtype="int32")
    net = gc.nn.Sequential(gc.nn.Dense(8), gc.nn.relu, gc.nn.Dense(6), gc.nn.sigmoid, gc.nn.Dense(3))
    step = gc.compile(gc.softmax_cross_entropy(net(x), y), optimizer=gc.optim.SGD(0.5))
    assert len(_group_with_sum(step)) >= 2
    rng = np.random.default_rng(3)
    steps_match_the_interpreter(step, [(rng.standard_normal((11, 5)).astype(np.float32),
                                        rng.integers(0, 3, 11).astype(np.int32)) for _ in range(3)])
