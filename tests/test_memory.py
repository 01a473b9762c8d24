"""The memory plan, fusion and the compile cache: the planned step computes what the
unplanned one does, allocates nothing in the steady state, and updates in place."""
from __future__ import annotations

import tracemalloc

import inspect
import re

import numpy as np
import pytest

import graphc as gc
from graphc.compiler import step_cache
from graphc.backends.cpu import c_loops
from graphc.data import load_fashion_mnist
from graphc.passes.memory import Buffer, Piece

KERNELS = ["numpy"] + (["c"] if c_loops.compiler() else [])


def _mlp(hidden=(64, 32), classes=10, features=784):
    x = gc.input("x", (None, features))
    y = gc.input("y", (None,), dtype="int32")
    layers = []
    for h in hidden:
        layers += [gc.nn.Dense(h, init="he"), gc.nn.relu]
    net = gc.nn.Sequential(*layers, gc.nn.Dense(classes))
    return gc.softmax_cross_entropy(net(x), y)


def _batch(n, features=784, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, features), dtype=np.float32), rng.integers(0, classes, n).astype(np.int32)


@pytest.fixture(params=KERNELS)
def kernels(request, monkeypatch):
    monkeypatch.setenv("GRAPHC_KERNELS", request.param)
    return request.param


@pytest.mark.parametrize("optimizer", [gc.optim.SGD(0.05), gc.optim.Adam(1e-3)], ids=["sgd", "adam"])
def test_planned_step_matches_the_interpreter_step(kernels, optimizer):
    step = gc.compile(_mlp(), optimizer=optimizer)
    x, y = _batch(48)
    (want_loss, want_updates) = step.reference(x=x, y=y)
    loss = step(x=x, y=y)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    for name, value in want_updates.items():
        np.testing.assert_allclose(step.state.values[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_optimized_and_unoptimized_steps_agree_over_an_epoch(kernels):
    """A whole epoch of Adam on 3000 Fashion-MNIST images, planned vs the unplanned reference path."""
    try:
        data = load_fashion_mnist()
    except gc.DataError as exc:
        pytest.skip(str(exc))
    x, y = data.x_train[:3000], data.y_train[:3000]
    loss = _mlp()
    fast = gc.compile(loss, optimizer=gc.optim.Adam(1e-3))
    slow = gc.compile(loss, optimizer=gc.optim.Adam(1e-3), passes=False)
    losses = []
    for start in range(0, len(x), 100):
        xb, yb = x[start:start + 100], y[start:start + 100]
        losses.append((float(fast(x=xb, y=yb)), float(slow(x=xb, y=yb))))
    fast_losses, slow_losses = np.array(losses).T
    assert fast_losses[-1] < 0.7 * fast_losses[0]  # it learned, so the comparison means something
    np.testing.assert_allclose(fast_losses, slow_losses, rtol=1e-3)
    for name, value in slow.state.values.items():
        np.testing.assert_allclose(fast.state.values[name], value, rtol=1e-3, atol=1e-4, err_msg=name)


def _peak_allocation(step, x, y, steps=100) -> tuple[int, int]:
    for _ in range(3):
        step(x=x, y=y)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(steps):
            step(x=x, y=y)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base, current - base


def test_steady_state_step_allocates_nothing_that_grows_with_the_batch(kernels):
    """100 steps allocate no arrays: what tracemalloc sees at the peak is NumPy's
    fixed-size iterator buffer (a broadcasting or casting ufunc borrows one of
    at most 8192 elements), the same at batch 1024 and 4096, and far below one
    activation array."""
    step = gc.compile(_mlp((256, 128)), optimizer=gc.optim.Adam(1e-3))
    small, _ = _peak_allocation(step, *_batch(1024), steps=20)
    large, net = _peak_allocation(step, *_batch(4096), steps=20)
    assert large - small < 8 * 1024, f"peak grew from {small} to {large} bytes with the batch"
    assert large < 4096 * 10 * 4, f"a step allocated {large} bytes at its peak"
    assert net < 8 * 1024  # nothing kept per step: one leaked (N,) array would be 16 KB


def test_unplanned_step_does_allocate():
    """The contrast that makes the previous test meaningful."""
    step = gc.compile(_mlp((256, 128)), optimizer=gc.optim.Adam(1e-3), passes=False)
    x, y = _batch(128)
    step(x=x, y=y)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        step(x=x, y=y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base > 128 * 256 * 4


def test_parameters_and_moments_are_updated_in_place(kernels):
    step = gc.compile(_mlp(), optimizer=gc.optim.Adam(1e-3))
    x, y = _batch(32)
    step(x=x, y=y)
    plan = step.plan
    assert {v.name for v in plan.in_place_updates} >= {"dense0.W", "dense0.b", "adam.m", "adam.v"}
    assert "np.copyto(dense0_W" not in step.source
    arena = step.state.arenas[next(iter(step.state.arenas))]
    assert np.shares_memory(arena, step.state.values["dense0.W"])


def test_gradients_are_computed_into_the_packed_gradient_buffer():
    step = gc.compile(_mlp(), optimizer=gc.optim.SGD(0.1))
    pieces = [p for p in step.plan.place.values() if isinstance(p, Piece) and isinstance(p.base, Buffer)]
    assert len(pieces) == 6  # three weight matrices and three biases, no concatenation copy
    assert "np.concatenate" not in step.source


def test_transposes_are_views_not_copies():
    step = gc.compile(_mlp(), optimizer=gc.optim.SGD(0.1))
    transposes = [n for n in step.plan.schedule if n.op == "transpose"]
    assert transposes and not any(n in step.plan.place for n in transposes)


@pytest.mark.skipif(not c_loops.compiler(), reason="no C compiler")
def test_the_whole_adam_update_is_one_fused_loop():
    step = gc.compile(_mlp(), optimizer=gc.optim.Adam(1e-3))
    flat = [g for g in step.plan.groups if len(g.shape) == 1 and g.shape[0] > 1000]
    assert len(flat) == 1
    written = {n for n in flat[0].outputs}
    assert len(written) == 3  # θ, m and v, each written once


@pytest.mark.skipif(not c_loops.compiler(), reason="no C compiler")
def test_layers_with_the_same_loop_share_one_kernel():
    """Six equal hidden layers: their bias+ReLU groups (and ReLU masks) are one C function each,
    called once per layer with that layer's pointers, and the step still matches the reference."""
    step = gc.compile(_mlp(hidden=(16,) * 6), optimizer=gc.optim.Adam(1e-3))
    defined = re.findall(r"void (fused\d+)\(", step.generated.kernels)
    called = re.findall(r"^\s*(fused\d+)\(P(\d+), D\2\)", step.source, re.MULTILINE)
    assert len(called) == len(step.plan.groups) and len(defined) == len(set(defined))
    assert {name for name, _ in called} == set(defined)
    assert len(defined) <= len(called) - 10  # at least two loops shared across the six layers
    x, y = _batch(24)
    want_loss, want_updates = step.reference(x=x, y=y)
    np.testing.assert_allclose(step(x=x, y=y), want_loss, rtol=1e-6)
    for name, value in want_updates.items():
        np.testing.assert_allclose(step.state.values[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_second_compile_of_the_same_model_is_a_cache_hit():
    """The same model from the same lines, as when a notebook cell or a script runs again."""
    step_cache.clear()
    first, second = [gc.compile(_mlp(), optimizer=gc.optim.SGD(0.1)) for _ in range(2)]
    assert not first.cache_hit and second.cache_hit
    x, y = _batch(16)
    assert float(first(x=x, y=y)) == pytest.approx(float(second(x=x, y=y)), rel=1e-6)


def _dense_sum(x: gc.Node) -> gc.Node:
    return gc.sum(gc.nn.Dense(2)(x))


def test_a_cache_hit_shows_the_new_models_own_lines():
    """An equal model declared on another line compiles to code annotated with that line."""
    x = gc.input("x", (None, 3))
    first = gc.compile(_dense_sum(x))
    second = gc.compile(gc.sum(gc.nn.Dense(2)(x)))
    line = f"test_memory.py:{inspect.currentframe().f_lineno - 1}"
    assert line in second.source and line not in first.source
    assert "test_memory.py:" + str(inspect.getsourcelines(_dense_sum)[1] + 1) in first.source


# ---------------------------------------------------------------- regressions: values read after an in-place write

def _ones(rng, shape, dtype):
    return np.ones(shape, dtype)


@pytest.mark.parametrize("extra", ["W", "W.T summed", "W reshaped", "W*1"])
def test_outputs_that_read_a_parameter_see_its_value_before_the_update(kernels, extra):
    x = gc.input("x", (None, 3))
    W = gc.param("W", (2, 3), init=_ones)
    loss = ((x @ W.T) ** 2).sum()
    value = {"W": W, "W.T summed": W.T.sum(axis=1), "W reshaped": W.reshape((6, 1)), "W*1": W * 1.0}[extra]
    step = gc.compile({"loss": loss, "extra": value}, optimizer=gc.optim.SGD(0.1))
    xb = np.ones((2, 3), np.float32)
    want, _ = step.reference(x=xb)
    got = step(x=xb)
    np.testing.assert_array_equal(got["extra"], want["extra"])
    assert not np.array_equal(step.state.values["W"], np.ones((2, 3)))  # the update did happen


def test_a_variable_copied_into_another_is_read_before_it_is_overwritten(kernels):
    from graphc.nn.module import attach_updates
    x = gc.input("x", (None, 3))
    W = gc.param("W", (3,), init=_ones)
    current, previous = gc.state("current", (3,)), gc.state("previous", (3,))
    loss = attach_updates(((x * W) ** 2).sum(), {current: current + x.sum(axis=0), previous: current})
    step = gc.compile(loss, optimizer=gc.optim.SGD(0.1))
    xb = np.ones((2, 3), np.float32)
    for _ in range(3):
        _, want = step.reference(x=xb)
        step(x=xb)
        np.testing.assert_array_equal(step.state.values["previous"], want["previous"])
        np.testing.assert_array_equal(step.state.values["current"], want["current"])


def test_select_into_its_own_condition_buffer(kernels):
    x = gc.input("x", (None, 4))
    c = gc.matmul(x, gc.constant(np.eye(4, dtype=np.float32))) > 0
    a = gc.matmul(x, gc.constant(2 * np.eye(4, dtype=np.float32))) > 100
    b = gc.matmul(x, gc.constant(3 * np.eye(4, dtype=np.float32))) > -3
    out = gc.where(c, a, b).astype("float32") * 1.5
    xb = np.array([[-2.0, -0.5, 0.25, 3.0]], np.float32)
    np.testing.assert_array_equal(gc.compile(out)(x=xb), gc.evaluate([out], {"x": xb})[0])
