"""Programs the CUDA code generator once got wrong under mutation, run on the emulator against NumPy.

Each case is small and aimed at one decision of :mod:`graphc.backends.cuda.codegen`: a
concatenation of a value with itself, a slice of a broadcast, updates that read each other or
a variable another output returns, distinct random ops drawing distinct numbers, sums that must
accumulate in double, and integer sums that must not go to cuBLAS.  Every step is called twice.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import backends
from graphc.backends.cuda import emulator
from graphc.backends.cuda.binding import layout
from graphc.backends.cuda.codegen import lower
from graphc.compiler import pipeline
from graphc.ir.program import Program
from graphc.runtime.store import Store

pytestmark = pytest.mark.skipif(emulator.host_compiler() is None, reason="no C++ compiler for the emulator")


def _twice(outputs: dict, feeds: dict, **compile_options: object) -> tuple[dict, dict]:
    """Results of the emulator and of the NumPy backend, each step called twice."""
    results = []
    for backend in ("cuda-emulator", "numpy"):
        step = gc.compile(outputs, backend=backend, **compile_options)
        first = step(**feeds)
        second = step(**feeds)
        results.append({k: (np.array(first[k]), np.array(second[k])) for k in first})
    return results[0], results[1]


def test_a_value_concatenated_with_itself() -> None:
    x = gc.input("x", (4,), "float32")
    a = gc.tanh(x)
    feeds = {"x": np.array([0.5, -1.0, 2.0, 0.0], np.float32)}
    device, host = _twice({"out": gc.concat([a, a]) * 2.0}, feeds)
    expected = np.concatenate([np.tanh(feeds["x"])] * 2) * 2
    for got in (*device["out"], *host["out"]):
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_a_slice_of_a_broadcast_vector() -> None:
    v = gc.input("v", (3,), "float64")
    wide = gc.broadcast_to(gc.reshape(v * 2.0, (1, 3)), (2, 3))
    flat = gc.reshape(wide, (6,))
    feeds = {"v": np.array([1.0, -2.0, 3.0])}
    device, host = _twice({"out": gc.slice(flat, 2, 5) + 1.0}, feeds)
    expected = np.tile(feeds["v"] * 2, 2)[2:5] + 1
    for got in (*device["out"], *host["out"]):
        np.testing.assert_array_equal(got, expected)


def _counter(name: str, start: float) -> gc.Node:
    return gc.state(name, (3,), init=lambda rng, shape, dtype: np.full(shape, start, dtype), dtype="float64")


def test_updates_that_read_each_other_use_the_old_values() -> None:
    """a' = a + b and b' = a * b: each update reads the other variable's value from before the step."""
    for backend in ("cuda-emulator", "numpy"):
        a, b = _counter("a", 2.0), _counter("b", 3.0)
        x = gc.input("x", (3,), "float64")
        store = Store(0)
        step = pipeline.build(Program("p", {"out": gc.sum(x)}, {a: a + b, b: a * b}), store, None,
                              backends.get(backend))
        old_a, old_b = 2.0, 3.0
        for _ in range(3):
            step(x=np.ones(3))
            old_a, old_b = old_a + old_b, old_a * old_b
            np.testing.assert_array_equal(store.values["a"], np.full(3, old_a), err_msg=backend)
            np.testing.assert_array_equal(store.values["b"], np.full(3, old_b), err_msg=backend)


def test_an_output_that_returns_a_variable_updated_in_the_same_step_is_its_old_value() -> None:
    for backend in ("cuda-emulator", "numpy"):
        a = _counter("a", 1.0)
        x = gc.input("x", (3,), "float64")
        store = Store(0)
        step = pipeline.build(Program("p", {"before": a * 1.0, "seen": a + x}, {a: a * 2.0 + x}), store, "dict",
                              backends.get(backend))
        value = np.full(3, 1.0)
        for _ in range(3):
            out = step(x=np.arange(3.0))
            np.testing.assert_array_equal(out["before"], value, err_msg=backend)
            np.testing.assert_array_equal(out["seen"], value + np.arange(3.0), err_msg=backend)
            value = value * 2 + np.arange(3.0)
            np.testing.assert_array_equal(store.values["a"], value, err_msg=backend)


def test_two_random_ops_of_one_step_draw_different_numbers() -> None:
    x = gc.input("x", (64,), "float32")
    step = gc.compile({"a": x + gc.normal((64,), "float32"), "b": x + gc.normal((64,), "float32"),
                       "u": x + gc.uniform((64,), "float32"), "w": x + gc.uniform((64,), "float32")},
                      backend="cuda-emulator")
    out = step(x=np.zeros(64, np.float32))
    assert not np.array_equal(out["a"], out["b"])
    assert not np.array_equal(out["u"], out["w"])
    again = step(x=np.zeros(64, np.float32))
    assert not np.array_equal(out["a"], again["a"])  # and fresh numbers each step


def test_float32_sums_accumulate_in_double() -> None:
    """Over a middle axis (a kernel, not a GEMM): 2^24 and four ones add up to 2^24 + 4 in double,
    to 2^24 in float32 one by one."""
    x = gc.input("x", (2, 5, 3), "float32")
    values = np.ones((2, 5, 3), np.float32)
    values[:, 0, :] = 2.0 ** 24
    out = gc.compile(gc.sum(x, axis=1), backend="cuda-emulator")(x=values)
    np.testing.assert_array_equal(out, np.full((2, 3), 2.0 ** 24 + 4, np.float32))


def test_integer_sums_are_not_sent_to_cublas() -> None:
    x = gc.input("x", (128, 3), "int32")
    step = gc.compile(gc.sum(x, axis=0), backend="cuda-emulator")
    values = np.arange(384, dtype=np.int32).reshape(128, 3) * 1000
    for _ in range(2):
        np.testing.assert_array_equal(step(x=values), values.sum(axis=0))
    assert " 0 cuBLAS GEMMs," in step.show("source")
    floats = gc.compile(gc.sum(gc.cast(x, "float32"), axis=0), backend="cuda-emulator")
    assert " 1 cuBLAS GEMMs," in floats.show("source")  # the float sum of as many rows is one


def test_every_region_of_the_arena_starts_on_a_256_byte_boundary_and_none_overlap() -> None:
    """cuBLAS and vector loads want aligned operands; regions of odd sizes must not shift the next."""
    x = gc.input("x", (None, 3), "float32")
    w = gc.param("w", (3, 5), dtype="float32")
    program = Program("p", {"out": gc.sum(gc.tanh(x @ w) * 3.0, axis=1), "n": gc.numel(x, 0, "float32")})
    device = lower(program, pipeline.place(program, backends.get("cuda-emulator"), True))
    offsets, total = layout(device, {"N": 7})
    ends = sorted((offsets[name], offsets[name] + region.size.resolve({"N": 7}) * np.dtype(region.dtype).itemsize)
                  for name, region in device.regions.items())
    assert len(ends) > 3 and all(start % 256 == 0 for start, _ in ends)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(ends, ends[1:])) and ends[-1][1] <= total


def test_the_device_noise_follows_the_seed() -> None:
    """The step counter the Philox draws are keyed by starts from the store's seed: the same seed
    draws the same noise, another seed other noise."""
    x = gc.input("x", (64,), "float32")
    noisy = x + gc.normal((64,), "float32")

    def draws(seed: int) -> list[np.ndarray]:
        step = gc.compile(noisy, backend="cuda-emulator", seed=seed)
        return [step(x=np.zeros(64, np.float32)) for _ in range(2)]
    first, again, other = draws(1), draws(1), draws(2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not any(np.array_equal(a, b) for a, b in zip(first, other))
