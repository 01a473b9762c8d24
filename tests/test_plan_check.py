"""The memory plan's in-place rule, and the verifier written apart from it.

A loop (a fused group, a lone op, a CUDA kernel) stores an iteration's results
after reading its operands, so a result may overwrite an operand only where the
iteration that writes an element is the only one reading it.  Two plans broke
that: a row loop writing its [R] result over a [C] operand read along every
row's columns (R == C), and the same loop writing a variable's new value over
the variable.  Each is checked here against plain NumPy, on every backend;
the verifier (:mod:`graphc.passes.plan_check`) must reject the plans the old
rule made, and plans built by hand with each kind of fault.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc import backends
from graphc.compiler import pipeline
from graphc.passes import memory, optimize, plan_check
from graphc.passes.fusion import Group
from graphc.passes.memory import Buffer, Plan
from graphc.passes.plan_check import PlanError, verify
from graphc.ir.program import Program
from graphc.runtime.store import Store

BACKENDS = ["c", "numpy", "cuda-emulator"]  # fused C loops, NumPy alone, the CUDA program on the CPU


def compile_on(which: str, outputs, monkeypatch: pytest.MonkeyPatch, **options):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GRAPHC_KERNELS", "numpy" if which == "numpy" else "c")
    return gc.compile(outputs, backend="cuda-emulator" if which == "cuda-emulator" else "numpy", **options)


def old_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-place rule before the fix: an operand of the result's shape may be overwritten."""
    monkeypatch.setattr(memory, "reads_where_it_writes", lambda reader, operand, written: operand.shape == written.shape)


def columns_then_rows() -> tuple[dict, dict]:
    x = gc.input("x", (2, 2), dtype="float64")
    v = gc.input("v", (2,), dtype="float64")
    w = v * v + 1.0                    # [2], read along the columns of a [2, 2]
    s = gc.mean((x * x) + w, axis=1)   # [2], one value per row
    return {"s": s}, {"x": np.array([[1.0, 2.0], [3.0, 4.0]]), "v": np.array([0.5, -1.5])}


@pytest.mark.parametrize("which", BACKENDS)
def test_a_row_loop_does_not_overwrite_a_value_it_reads_along_the_columns(which, monkeypatch) -> None:
    outputs, feeds = columns_then_rows()
    step = compile_on(which, outputs, monkeypatch)
    for _ in range(2):
        np.testing.assert_array_equal(step(**feeds)["s"], np.mean(feeds["x"] ** 2 + feeds["v"] ** 2 + 1.0, axis=1))


def state_update_read_along_the_columns() -> tuple[Program, np.ndarray, np.ndarray]:
    x = gc.input("x", (2, 2), dtype="float64")
    start = np.array([0.5, -1.5])
    v = gc.state("v", (2,), init=lambda rng, shape, dtype: start.copy(), dtype="float64")
    return Program("p", {"out": gc.sum(x)}, {v: gc.mean(x * x + v, axis=1)}), start, \
        np.array([[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize("which", ["c", "cuda-emulator"])
def test_a_row_loop_does_not_write_a_variable_in_place_over_values_it_reads(which, monkeypatch) -> None:
    program, start, x = state_update_read_along_the_columns()
    monkeypatch.setenv("GRAPHC_KERNELS", "c")
    store = Store(0)
    step = pipeline.build(program, store, None, backends.get("numpy" if which == "c" else which))
    expected = start
    for _ in range(2):
        step(x=x)
        expected = np.mean(x * x + expected, axis=1)
        np.testing.assert_array_equal(store.values["v"], expected)


def test_the_verifier_rejects_the_plans_the_old_rule_made(monkeypatch) -> None:
    old_rule(monkeypatch)
    outputs, _ = columns_then_rows()
    with pytest.raises(PlanError, match=r"overwrites %1 .* another iteration still reads"):
        compile_on("c", outputs, monkeypatch, name="old_rule_rows")
    program, _, _ = state_update_read_along_the_columns()
    monkeypatch.setenv("GRAPHC_KERNELS", "c")
    plan = pipeline.place(optimize(program)[0], backends.get("numpy"), True)
    with pytest.raises(PlanError, match="another iteration still reads"):
        verify(optimize(program)[0], plan)


def test_the_verifier_rejects_a_view_numpy_can_only_copy(monkeypatch) -> None:
    """The first aliasing miscompile: a reshape of a transpose planned as a view made at bind time."""
    monkeypatch.setattr(memory, "materialized_layouts", lambda schedule: frozenset())
    p = gc.param("p", (2, 3), dtype="float64")
    with pytest.raises(PlanError, match="NumPy can only copy it"):
        gc.compile([gc.reshape(gc.transpose(gc.exp(p)), (6,))], name="stale_view")


@pytest.mark.parametrize("which", ["numpy", "c", "cuda-emulator"])
def test_a_copy_of_a_copy_of_a_fed_input_is_fresh_each_call(which, monkeypatch) -> None:
    """A reshape NumPy can only copy, of a transpose of another such copy of a fed input: both are
    made in every call, so the plan is right and the verifier must accept it (it once said stale)."""
    monkeypatch.setenv("GRAPHC_VERIFY_PLAN", "1")
    x = gc.input("x", (1, 3), dtype="float64")
    wide = gc.broadcast_to(x, (3, 3, 3))
    turned = gc.transpose(gc.reshape(wide, (3, 9)))
    step = compile_on(which, {"flat": gc.reshape(turned, (27,)) * 1.0, "sum": gc.sum(turned)}, monkeypatch,
                      name=f"fresh_copies_{which.replace('-', '_')}")
    for value in ([[1.0, 2.0, 3.0]], [[-4.0, 0.5, 7.0]]):
        expected = np.broadcast_to(np.array(value), (3, 3, 3)).reshape(3, 9).T
        out = step(x=np.array(value))
        np.testing.assert_array_equal(out["flat"], expected.reshape(27))
        assert out["sum"] == expected.sum()


def test_the_verifier_runs_on_compiles_when_asked(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(plan_check, "verify", lambda program, plan: calls.append(program.name) or True)
    outputs, _ = columns_then_rows()
    monkeypatch.setenv("GRAPHC_VERIFY_PLAN", "0")
    gc.compile(outputs, name="unverified")
    monkeypatch.setenv("GRAPHC_VERIFY_PLAN", "1")
    gc.compile(outputs, name="verified")
    assert calls == ["verified"]


# ---------------------------------------------------------------- plans made by hand, each with one fault

def _program(outputs: dict, updates: dict | None = None) -> Program:
    return Program("hand", outputs, updates or {})


def test_a_buffer_reused_before_its_value_is_read_is_caught() -> None:
    x = gc.input("x", (3,), dtype="float64")
    a, b = gc.exp(x), gc.tanh(x)
    program = _program({"out": a + b})
    shared = Buffer(0, (3,), "float64")
    schedule = program.nodes()
    fine = Plan(schedule, place={a: shared, b: Buffer(1, (3,), "float64"), a + b: shared},
                buffers=[shared, Buffer(1, (3,), "float64")])
    assert verify(program, fine)  # the sum may overwrite a, which it reads element for element
    wrong = Plan(schedule, place={a: shared, b: shared, a + b: Buffer(1, (3,), "float64")},
                 buffers=[shared, Buffer(1, (3,), "float64")])
    with pytest.raises(PlanError, match="hold another value by then"):
        verify(program, wrong)


def test_an_op_that_is_not_elementwise_may_not_write_over_its_operand() -> None:
    a = gc.input("a", (2, 2), dtype="float64")
    m = gc.exp(a)
    product = m @ m
    program = _program({"out": product})
    buffer = Buffer(0, (2, 2), "float64")
    with pytest.raises(PlanError, match="another iteration still reads"):
        verify(program, Plan(program.nodes(), place={m: buffer, product: buffer}, buffers=[buffer]))


def test_an_elementwise_op_may_not_write_over_a_transposed_operand() -> None:
    a = gc.input("a", (2, 2), dtype="float64")
    m = gc.exp(a)
    flipped = gc.transpose(m) * 2.0
    program = _program({"out": flipped})
    buffer = Buffer(0, (2, 2), "float64")
    with pytest.raises(PlanError, match="another iteration still reads"):
        verify(program, Plan(program.nodes(), place={m: buffer, flipped: buffer}, buffers=[buffer]))
    straight = m * 2.0
    program = _program({"out": straight})
    assert verify(program, Plan(program.nodes(), place={m: buffer, straight: buffer}, buffers=[buffer]))


def test_a_where_may_overwrite_its_else_operand_only() -> None:
    a = gc.input("a", (3,), dtype="float64")
    then, other = gc.exp(a), gc.tanh(a)
    chosen = gc.where(a > 0, then, other)
    program = _program({"out": chosen})
    b0, b1 = Buffer(0, (3,), "float64"), Buffer(1, (3,), "float64")
    placed = {then: b0, other: b1, a > 0: Buffer(2, (3,), "bool")}
    buffers = [b0, b1, Buffer(2, (3,), "bool")]
    assert verify(program, Plan(program.nodes(), place={**placed, chosen: b1}, buffers=buffers))
    with pytest.raises(PlanError, match="another iteration still reads"):
        verify(program, Plan(program.nodes(), place={**placed, chosen: b0}, buffers=buffers))


def test_a_column_sum_may_not_live_where_its_loop_reads() -> None:
    x = gc.input("x", (3, 2), dtype="float64")
    v = gc.exp(gc.sum(x, 0))        # [2], computed before the loop
    y = x * v                        # [3, 2], reads v along its columns
    total = gc.sum(y, 0)             # [2], a column sum in y's loop
    program = _program({"y": y, "total": total})
    v_buffer, y_buffer = Buffer(0, (2,), "float64"), Buffer(1, (3, 2), "float64")
    schedule = program.nodes()
    group = Group((3, 2), [y, total], [y, total], [x, v])
    schedule = [n for n in schedule if n is not y and n is not total] + [y, total]
    with pytest.raises(PlanError, match="another iteration still reads"):
        verify(program, Plan(schedule, place={gc.sum(x, 0): v_buffer, v: v_buffer, y: y_buffer, total: v_buffer},
                             buffers=[v_buffer, y_buffer], groups=[group]))
    other = Buffer(2, (2,), "float64")
    assert verify(program, Plan(schedule, place={gc.sum(x, 0): v_buffer, v: v_buffer, y: y_buffer, total: other},
                                buffers=[v_buffer, y_buffer, other], groups=[group]))


def test_a_result_overwritten_before_the_end_is_caught() -> None:
    x = gc.input("x", (3,), dtype="float64")
    a = gc.exp(x)
    later = gc.tanh(x)
    program = _program({"a": a, "later": gc.sum(later)})
    buffer = Buffer(0, (3,), "float64")
    with pytest.raises(PlanError, match="hold another value by then"):
        verify(program, Plan(program.nodes(), place={a: buffer, later: buffer}, buffers=[buffer]))


def test_a_variable_updated_in_place_must_hold_its_new_value_and_be_read_before() -> None:
    p = gc.state("s", (3,), dtype="float64")
    x = gc.input("x", (3,), dtype="float64")
    new = p * 0.5 + x
    read_after = gc.sum(p * x)
    program = _program({"out": read_after}, {p: new})
    schedule = [n for n in program.nodes() if n is not read_after and n is not p * x] + [p * x, read_after]
    half = p * 0.5
    b0, b1, b2 = Buffer(0, (3,), "float64"), Buffer(1, (), "float64"), Buffer(2, (3,), "float64")
    buffers = [b0, b1, b2]
    fine = Plan(schedule, place={half: b0, new: b0, p * x: b2, read_after: b1}, buffers=buffers)
    assert verify(program, fine)  # the new value is copied into s at the end
    early = Plan(schedule, place={half: b0, new: p, p * x: b2, read_after: b1}, buffers=buffers,
                 in_place_updates={p})
    with pytest.raises(PlanError, match="reads s from variable s, but 3 of its elements"):
        verify(program, early)
    missing = Plan(schedule, place={half: b0, new: b0, p * x: b2, read_after: b1}, buffers=buffers,
                   in_place_updates={p})
    with pytest.raises(PlanError, match="is updated in place, but its new value"):
        verify(program, missing)


def test_a_value_placed_in_a_buffer_of_another_size_is_caught() -> None:
    x = gc.input("x", (3,), dtype="float64")
    a = gc.exp(x)
    program = _program({"out": a})
    small = Buffer(0, (2,), "float64")
    with pytest.raises(PlanError, match="has 3 elements but is placed in"):
        verify(program, Plan(program.nodes(), place={a: small}, buffers=[small]))


def test_a_value_kept_in_a_loops_registers_cannot_be_read_outside() -> None:
    x = gc.input("x", (3,), dtype="float64")
    a = gc.exp(x)
    b = gc.tanh(a)
    program = _program({"b": b, "c": a * 3.0})
    b0, b1 = Buffer(0, (3,), "float64"), Buffer(1, (3,), "float64")
    group = Group((3,), [a, b], [b], [x])  # a should be an output: a * 3 reads it
    with pytest.raises(PlanError, match="which the plan keeps nowhere"):
        verify(program, Plan(program.nodes(), place={b: b0, a * 3.0: b1}, buffers=[b0, b1], groups=[group]))


def test_a_concatenation_of_pieces_computed_in_place_reads_nothing_twice() -> None:
    """The packed gradient: pieces computed in their slices; a piece used twice is copied once."""
    x = gc.input("x", (2,), dtype="float64")
    e = gc.exp(x)
    packed = gc.concat([e, e])
    program = _program({"packed": packed, "e": gc.sum(e)})
    b0, b1 = Buffer(0, (4,), "float64"), Buffer(1, (), "float64")
    plan = Plan(program.nodes(), place={packed: b0, e: memory.Piece(b0, 0, 2, (2,)), gc.sum(e): b1},
                buffers=[b0, b1])
    assert verify(program, plan)


# ---------------------------------------------------------------- the fuzz that found it, against plain NumPy

ROWS = {"sum": (lambda x: gc.sum(x, 1), lambda x: np.sum(x, 1)),
        "mean": (lambda x: gc.mean(x, 1), lambda x: np.mean(x, 1)),
        "max": (lambda x: gc.max(x, 1), lambda x: np.max(x, 1)),
        "softmax": (lambda x: gc.softmax(x), lambda x: np.exp(x - x.max(1, keepdims=True))
                    / np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)),
        "log_softmax": (lambda x: gc.log_softmax(x), lambda x: x - x.max(1, keepdims=True)
                        - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)))}


@settings(max_examples=12, deadline=None)
@given(side=st.integers(2, 8), row=st.sampled_from(sorted(ROWS)), squash=st.booleans(), after=st.booleans(),
       dtype=st.sampled_from(["float32", "float64"]), which=st.sampled_from(BACKENDS), data=st.data())
def test_square_row_loops_against_numpy(side, row, squash, after, dtype, which, data) -> None:
    """Square static shapes, a [C] value from v*v+1 or its tanh read across the rows, used again
    after the row loop or not: every backend against NumPy, two calls."""
    x = gc.input("x", (side, side), dtype=dtype)
    v = gc.input("v", (side,), dtype=dtype)
    w = gc.tanh(v) if squash else v * v + 1.0
    ours, theirs = ROWS[row]
    out = ours(x + w)
    outputs = {"out": out * w if after and out.ndim == 1 else out}
    with pytest.MonkeyPatch.context() as monkeypatch:
        step = compile_on(which, outputs, monkeypatch)
    for _ in range(2):
        xv = data.draw(st.lists(st.floats(-2, 2), min_size=side * side, max_size=side * side))
        vv = data.draw(st.lists(st.floats(-2, 2), min_size=side, max_size=side))
        xa, va = np.array(xv, dtype).reshape(side, side), np.array(vv, dtype)
        wa = np.tanh(va) if squash else va * va + 1.0
        want = theirs(xa + wa)
        want = want * wa if after and want.ndim == 1 else want
        np.testing.assert_allclose(step(x=xa, v=va)["out"], want, rtol=1e-5 if dtype == "float32" else 1e-12,
                                   atol=1e-5 if dtype == "float32" else 1e-12)


def test_a_lone_where_does_not_overwrite_its_else_operand_when_then_views_it_transposed() -> None:
    """A CUDA kernel runs a lone where's elements at once: 'then' read through a transposed view of
    the buffer 'else' lives in must not be overwritten (NumPy alone would survive it)."""
    a = gc.input("a", (3, 3), dtype="float64")
    m = gc.exp(a)
    chosen = gc.where(a > 0.0, gc.transpose(m), m)
    for backend in ("numpy", "cuda-emulator"):
        step = gc.compile([chosen], backend=backend, name=f"where_over_transposed_{backend.replace('-', '_')}")
        placed = [step.plan.place.get(n) for n in (m, chosen)]
        assert placed[0] is None or placed[0] is not placed[1]
        values = np.arange(9.0).reshape(3, 3) - 4.0
        np.testing.assert_array_equal(step(a=values)[0], np.where(values > 0, np.exp(values).T, np.exp(values)))
