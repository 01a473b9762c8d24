"""Promises about what graphc refuses or guarantees, each once silently broken.

Constants that do not fit their dtype, labels out of range, calls from
several threads, the tie rule of max-like gradients, constant outputs, and the
facts the registry states about each op (the passes and backends plan memory by
them, so each is checked against what the op's NumPy meaning does).
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import graphc as gc
from graphc.errors import DTypeError, FeedError, ShapeError
from graphc.ir.node import Node
from graphc.ir.registry import (BACKENDS, FACTS, FED, HELD, LEAF, LITERAL, MISC, PRIMITIVES, define, is_fed,
                                is_leaf, is_named_leaf, is_strided, lowering)

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


# ---------------------------------------------------------------- gaps a mutation run found

def test_two_noise_draws_of_one_shape_are_different_draws() -> None:
    first, second = gc.uniform((64,), F64), gc.uniform((64,), F64)
    assert first is not second
    a, b = gc.compile([first, second])()
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("targets, error", [(gc.input("t41", (None, 1), "float32"), ShapeError),
                                            (gc.input("t44", (None, 4), F64), DTypeError)], ids=["shape", "dtype"])
def test_cross_entropy_targets_must_match_the_logits(targets: gc.Node, error: type) -> None:
    logits = gc.input("logits4", (None, 4), "float32")
    with pytest.raises(error, match=r"^softmax_cross_entropy\("):
        gc.softmax_cross_entropy(logits, targets)


def test_integer_labels_of_the_wrong_shape_say_which_shape() -> None:
    with pytest.raises(ShapeError, match=r"^softmax_cross_entropy\(.*must have shape \[N\]"):
        gc.softmax_cross_entropy(gc.input("l", (None, 4), F64), gc.input("y2", (None, 2), "int32"))


def test_a_bad_reduction_names_the_choices() -> None:
    v = gc.input("v", (None, 2), F64)
    with pytest.raises(ValueError, match="'mean' or 'sum'"):
        gc.mse(v, v, reduction="avg")  # type: ignore[arg-type]


def test_a_misfit_constant_names_the_op_it_meets() -> None:
    with pytest.raises(DTypeError, match=r"^add\(i32\[3\]\)"):
        gc.input("x", (3,), "int32") + 2**40


@pytest.mark.usefixtures("c_kernels_must_build")  # a fallback to NumPy once hid C loops that did not compile
@pytest.mark.parametrize("kernels", ["c", "numpy", "cuda-emulator"])
def test_infinite_and_nan_scalar_constants_compile_with_their_sign(kernels: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHC_KERNELS", "numpy" if kernels == "numpy" else "c")
    x, y = gc.input("x", (3,), F64), gc.input("y", (3,), "float32")
    outputs = [gc.minimum(x * 2.0, np.inf), gc.maximum(x * 2.0, -np.inf), x * 0.0 + np.inf, x * 0.0 - np.inf,
               gc.maximum(x * 2.0, np.nan), gc.where(y > -np.inf, y * 3.0, np.nan), y * 2.0 - np.inf]
    value = {"x": np.array([-1.0, 0.0, 2.0]), "y": np.array([1.0, -2.0, 3.0], np.float32)}
    step = gc.compile(outputs, backend="cuda-emulator" if kernels == "cuda-emulator" else "numpy")
    assert step.plan.groups or kernels == "numpy"
    for got, want in zip(step(**value), gc.evaluate(outputs, value)):
        np.testing.assert_array_equal(got, want)


def test_inputs_may_take_the_names_the_generated_code_uses() -> None:
    names = ["np", "k", "c", "rng", "bind", "V", "A", "B", "K", "b0", "fused0"]
    xs = [gc.input(name, (2,), F64) for name in names]
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    values = {name: np.full(2, float(i)) for i, name in enumerate(names)}
    np.testing.assert_array_equal(gc.compile(total * 1.0)(**values), np.full(2, float(sum(range(len(names))))))


def test_the_kernel_cache_lives_under_the_users_cache_folder(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from graphc.backends import native
    monkeypatch.delenv("GRAPHC_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert native.cache_dir() == tmp_path / ".cache" / "graphc" / "kernels"


@pytest.mark.parametrize("size, folded", [(64, True), (65, False)])
def test_constant_folding_stops_at_64_elements(size: int, folded: bool) -> None:
    from graphc.passes import optimize
    from graphc.ir.program import Program
    x = gc.input("x", (size,), F64)
    program, _ = optimize(Program("p", {"out": x + gc.exp(gc.constant(np.arange(size, dtype=np.float64)))}))
    assert any(n.op == "exp" for n in program.nodes()) is not folded


def test_optimizing_twice_changes_nothing_more() -> None:
    """Rules also apply to the nodes other rules build: a second pass finds nothing left to do."""
    from graphc.passes import optimize
    from graphc.ir.program import Program
    x, w = gc.input("x", (None, 5), F64), gc.input("w", (5, 3), F64)
    loss = gc.softmax_cross_entropy(x @ w, gc.input("y", (None,), "int32")) + 1e-4 * gc.sum(w * w)
    once, _ = optimize(Program("p", {"loss": loss, **{f"g{i}": g for i, g in enumerate(gc.grad(loss, [w]))}}))
    twice, _ = optimize(once)
    assert once.format() == twice.format()


def test_float32_loops_call_the_float32_math_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAPHC_KERNELS", raising=False)
    p = gc.param("p32", (8,))
    step = gc.compile(gc.cos(gc.sin(p) * 2.0) > 0.5)
    if not step.plan.groups:
        pytest.skip("no C compiler: nothing is fused")
    kernels = step.show("kernels")
    assert "cosf(" in kernels and "sinf(" in kernels and "cos(" not in kernels.replace("cosf(", "")


# ---------------------------------------------------------------- facts about ops, on the registry

class _Code:
    """The code context a NumPy lowering writes with, for static shapes."""

    def shape(self, shape: tuple) -> str:
        return repr(tuple(shape))

    def dtype(self, name: str) -> str:
        return f"np.{name}"


def _lowered(node: Node, operand: np.ndarray) -> object:
    """``node``'s value of ``operand`` by the line of NumPy it is lowered to, given no buffer."""
    return eval(lowering(node.op, "numpy")(["a"], node, _Code(), None), {"np": np, "a": operand})


def _matrix() -> gc.Node:
    return gc.input("m", (2, 3), F64)


def _vector() -> gc.Node:
    return gc.input("v", (4,), F64)


# Each view op on a dense operand, where the memory plan treats it as a view.
_VIEWS = {
    "reshape": lambda: gc.reshape(_matrix(), (3, 2)),
    "transpose": lambda: gc.transpose(_matrix()),
    "broadcast_to": lambda: gc.broadcast_to(_vector(), (3, 4)),
    "slice": lambda: gc.slice(_vector(), 1, 3),
    "stop_gradient": lambda: gc.stop_gradient(_matrix()),
}
_NO_BUFFER = {"numel": lambda: gc.numel(gc.input("batch", (None, 3), F64), 0)}  # a static size folds away


def test_every_view_and_every_value_without_a_buffer_has_a_case_here() -> None:
    assert {name for name, p in PRIMITIVES.items() if p.view} == set(_VIEWS)
    assert {name for name, p in PRIMITIVES.items() if p.no_buffer} == set(_NO_BUFFER)


@pytest.mark.parametrize("op", sorted(_VIEWS))
def test_a_view_shares_its_operands_memory_and_is_strided_as_it_says(op: str) -> None:
    node = _VIEWS[op]()
    (source,) = node.inputs
    operand = np.arange(np.prod(source.shape), dtype=F64).reshape(source.shape)
    assert node.op == op
    for value in (node.primitive.impl(operand, **node.attrs), _lowered(node, operand)):
        assert np.shares_memory(value, operand)
        assert value.flags.c_contiguous is not is_strided(op)


@pytest.mark.parametrize("op", sorted(_NO_BUFFER))
def test_a_value_without_a_buffer_is_a_number_in_numpy(op: str) -> None:
    node = _NO_BUFFER[op]()
    value = _lowered(node, np.zeros((5, 3)))
    assert node.op == op and not isinstance(value, np.ndarray) and value == 5


def test_only_a_view_is_strided_and_only_a_leaf_says_where_its_value_comes_from() -> None:
    for name, p in PRIMITIVES.items():
        assert p.view or not p.strided, name
        assert (p.kind == LEAF) == (p.leaf in (FED, HELD, LITERAL)), name


def test_a_leaf_has_no_inputs_and_is_fed_held_or_literal_as_its_value_comes() -> None:
    leaves = [gc.input("x", (2,), F64), gc.param("w", (2,), dtype=F64), gc.state("s", (2,), dtype=F64),
              gc.constant(1.0, F64)]
    assert all(node.inputs == () and is_leaf(node.op) for node in leaves)
    assert [is_fed(node.op) for node in leaves] == [True, False, False, False]
    assert [is_named_leaf(node.op) for node in leaves] == [True, True, True, False]
    fed, held = gc.evaluate([leaves[0], leaves[1]], {"x": np.ones(2)}, {"w": np.zeros(2)})
    np.testing.assert_array_equal(fed, np.ones(2))
    np.testing.assert_array_equal(held, np.zeros(2))


@pytest.mark.parametrize("key", ["gpu", "views", "vjps"])
def test_define_refuses_a_key_that_is_neither_a_backend_nor_a_fact(key: str) -> None:
    with pytest.raises(TypeError) as error:
        define("misspelt", MISC, lambda inputs, attrs: ((), F64), lambda: None, **{key: True})
    message = str(error.value)
    assert "'misspelt'" in message and repr(key) in message
    assert all(valid in message for valid in ("vjp", *BACKENDS, *FACTS))
    assert "misspelt" not in PRIMITIVES


def test_define_refuses_a_cuda_rule_that_is_not_a_cuda_rule() -> None:
    with pytest.raises(TypeError, match=r"define\('misnamed'\): the cuda rule must be a CudaRule, one of VIEW, .*"
                                        r"got 'reduce'"):
        define("misnamed", MISC, lambda inputs, attrs: ((), F64), lambda: None, cuda="reduce")
    assert "misnamed" not in PRIMITIVES


def test_every_cuda_rule_has_its_code_and_every_op_names_a_rule() -> None:
    from graphc.backends.cuda import codegen
    from graphc.lowering.cuda_rules import CudaRule
    assert set(codegen.LOWERINGS) == set(CudaRule)
    assert all(code is None or code.__qualname__.startswith("_Lowering.") for code in codegen.LOWERINGS.values())
    named = {p.lowerings["cuda"] for p in PRIMITIVES.values() if "cuda" in p.lowerings}
    assert named == set(CudaRule)  # no rule without an op, no op with something else
