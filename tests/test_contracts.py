"""Promises about what graphc refuses or guarantees, each once silently broken.

Constants that do not fit their dtype, labels out of range, calls from
several threads, the tie rule of max-like gradients, constant outputs.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import graphc as gc
from graphc.errors import DTypeError, FeedError

F64 = "float64"


# ---------------------------------------------------------------- constants checked at build time

@pytest.mark.parametrize("build, shown", [
    (lambda x, f: x + 2**40, "1099511627776 does not fit int32"),
    (lambda x, f: x + 2**31, "2147483648 does not fit int32"),
    (lambda x, f: x - (2**31 + 1), "2147483649 does not fit int32"),
    (lambda x, f: f * 1e40, "1e+40 does not fit float32"),
    (lambda x, f: gc.constant(2.5, "int32"), "2.5 does not fit int32"),
    (lambda x, f: gc.constant(2, "bool"), "2 does not fit bool"),
    (lambda x, f: gc.constant(2**70, "int64"), "1180591620717411303424 does not fit int64"),
    (lambda x, f: gc.constant(np.array([1, 2**40]), "int32"), "values in [1, 1099511627776] does not fit int32"),
], ids=["int32+2**40", "int32+2**31", "int32-(2**31+1)", "float32*1e40", "2.5-int32", "2-bool", "2**70-int64",
        "array-int32"])
def test_a_constant_that_does_not_fit_its_dtype_is_refused(build, shown: str) -> None:
    x, f = gc.input("x", (3,), "int32"), gc.input("f", (3,), "float32")
    with pytest.raises(DTypeError) as error:
        build(x, f)
    assert shown in str(error.value)
    assert "test_contracts.py" in str(error.value)  # the user's line


@pytest.mark.parametrize("build", [lambda x, f: x + (2**31 - 1), lambda x, f: x + (-2**31), lambda x, f: f * np.inf,
                                   lambda x, f: f * 3e38, lambda x, f: gc.constant(2**63 - 1, "int64"),
                                   lambda x, f: gc.constant(True, "bool")])
def test_a_constant_at_the_edge_of_its_dtype_is_kept(build) -> None:
    x, f = gc.input("x", (3,), "int32"), gc.input("f", (3,), "float32")
    node = build(x, f)
    assert node.dtype in ("int32", "float32", "int64", "bool")


def test_the_edge_constants_compute_what_numpy_does() -> None:
    x = gc.input("x", (2,), "int32")
    value = np.array([0, 7], np.int32)
    np.testing.assert_array_equal(gc.compile(x + (2**31 - 1))(x=value)[:1], [2**31 - 1])


# ---------------------------------------------------------------- labels

@pytest.mark.parametrize("bad, row", [(10, 2), (-1, 2), (1000, 2)])
@pytest.mark.parametrize("passes", [True, False])
def test_cross_entropy_refuses_a_label_out_of_range(bad: int, row: int, passes: bool) -> None:
    logits = gc.input("logits", (None, 10), F64)
    y = gc.input("y", (None,), "int32")
    step = gc.compile(gc.softmax_cross_entropy(logits, y), passes=passes)
    labels = np.array([1, 9, bad, 0], np.int32)
    with pytest.raises(FeedError) as error:
        step(logits=np.zeros((4, 10)), y=labels)
    message = str(error.value)
    assert f"label {bad} in row {row}" in message and "10 classes" in message and "test_contracts.py" in message
    labels[row] = 9
    assert float(step(logits=np.zeros((4, 10)), y=labels)) == pytest.approx(np.log(10))


def test_the_interpreter_refuses_a_label_out_of_range_too() -> None:
    y = gc.input("y", (None,), "int64")
    with pytest.raises(FeedError, match="label 3 in row 1"):
        gc.evaluate([gc.one_hot(y, 3)], {"y": np.array([0, 3], np.int64)})


def test_a_train_step_with_a_bad_label_leaves_the_parameters_alone() -> None:
    x, y = gc.input("x", (None, 4), F64), gc.input("y", (None,), "int32")
    w = gc.param("w", (4, 3), init=lambda rng, shape, dtype: rng.standard_normal(shape), dtype=F64)
    step = gc.compile(gc.softmax_cross_entropy(x @ w, y), optimizer=gc.optim.SGD(0.5))
    xb = np.ones((2, 4))
    step(x=xb, y=np.array([0, 1], np.int32))
    before = {k: v.copy() for k, v in step.state.values.items()}
    with pytest.raises(FeedError):
        step(x=xb, y=np.array([0, 3], np.int32))
    for name, value in before.items():
        np.testing.assert_array_equal(step.state.values[name], value)


# ---------------------------------------------------------------- threads

def _hammer(fn, check, threads: int = 4, calls: int = 60) -> int:
    wrong = [0] * threads

    def work(k: int) -> None:
        rng = np.random.default_rng(k)
        for _ in range(calls):
            v = rng.standard_normal((8, 16))
            wrong[k] += not check(fn(x=v), v)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(wrong)


def test_a_function_of_its_inputs_is_right_from_several_threads() -> None:
    x = gc.input("x", (None, 16), F64)
    fn = gc.compile(gc.tanh(x @ gc.transpose(x)) * 2.0 + gc.sum(x, 1, keepdims=True))
    assert _hammer(fn, lambda got, v: np.allclose(got, np.tanh(v @ v.T) * 2 + v.sum(1, keepdims=True))) == 0


def test_train_steps_from_several_threads_run_one_at_a_time() -> None:
    """Four threads, 40 SGD steps each on a loss whose gradient is constant: the parameter moves
    by exactly 160 steps' worth, as if the calls had been made one after another."""
    x = gc.input("x", (None, 16), F64)
    w = gc.param("w", (16,), dtype=F64)
    step = gc.compile(gc.sum(x @ gc.reshape(w, (16, 1))) * 0.0 + gc.sum(w), optimizer=gc.optim.SGD(0.25))
    _hammer(step, lambda got, v: True, calls=40)
    np.testing.assert_allclose(step.state.values["w"], np.full(16, -0.25 * 160))


# ---------------------------------------------------------------- ties

@pytest.mark.parametrize("extremum", [gc.maximum, gc.minimum])
def test_maximum_and_minimum_split_a_tie_like_max(extremum) -> None:
    a, b = gc.input("a", (3,), F64), gc.input("b", (3,), F64)
    values = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([1.0, 3.0, 2.0])}
    ga, gb = gc.evaluate(gc.grad(gc.sum(extremum(a, b)), [a, b]), values)
    wins_a = [0.5, 0.0, 1.0] if extremum is gc.maximum else [0.5, 1.0, 0.0]
    np.testing.assert_array_equal(ga, wins_a)
    np.testing.assert_array_equal(gb, 1.0 - np.array(wins_a))
    pair = gc.input("pair", (2,), F64)
    (g,) = gc.evaluate(gc.grad(gc.max(pair) if extremum is gc.maximum else gc.min(pair), [pair]),
                       {"pair": np.array([1.0, 1.0])})
    np.testing.assert_array_equal(g, [0.5, 0.5])


# ---------------------------------------------------------------- constant outputs

def test_a_constant_output_compiles() -> None:
    for passes in (True, False):
        value = gc.compile(gc.constant(2.0, F64), passes=passes)()
        assert isinstance(value, np.ndarray) and value.dtype == np.float64 and float(value) == 2.0


def test_a_gradient_the_rewrites_fold_to_a_constant_compiles() -> None:
    x = gc.input("x", (), F64)
    (g,) = gc.grad(x * 2.0, [x])
    first = gc.compile(g)(x=np.array(1.0))
    first[...] = 7.0  # a caller's change must not leak into the next call
    assert float(gc.compile(g)(x=np.array(5.0))) == 2.0
