"""Deep and long graphs: compiling costs time and memory linear in depth, and no Python recursion.

A chain of 10,000 nodes goes through every stage of a compile (rewriting,
autodiff, fusion, the memory plan and its verifier, code generation, the
interpreter), each of which walks the graph: a walk that recursed once per
node would raise RecursionError.  A long chain of elementwise ops is fused in
groups of at most ``MAX_MEMBERS``, so the C compiler never meets one huge loop.
The compile's peak memory is measured at two depths: a step that grows with
the square of the depth (a listing padded to its widest line, a check that
allocates a whole memory per write) more than triples it when the depth doubles.
"""
from __future__ import annotations

import gc as garbage
import tracemalloc

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cpu import c_loops
from graphc.passes.fusion import MAX_MEMBERS, fuse
from graphc.ir.program import Program

CHAIN = 10_000
FACTOR = 0.999
F64 = "float64"
pytestmark = pytest.mark.usefixtures("c_kernels_must_build")


def _scaled_chain(h: gc.Node) -> gc.Node:
    for _ in range(CHAIN):
        h = h * FACTOR
    return h


def _numpy_chain(x: np.ndarray) -> np.ndarray:
    for _ in range(CHAIN):
        x = x * FACTOR
    return x


def test_a_chain_of_ten_thousand_products_compiles_and_matches_numpy() -> None:
    x = gc.input("x", (None, 4), F64)
    step = gc.compile(gc.sum(_scaled_chain(x)))
    xv = np.arange(12, dtype=F64).reshape(3, 4) + 1
    expected = np.sum(_numpy_chain(xv))
    assert step(x=xv) == pytest.approx(expected, rel=1e-9)
    reference, _ = step.reference(x=xv)
    assert reference == pytest.approx(expected, rel=1e-9)


def test_the_gradient_of_a_chain_of_ten_thousand_products_compiles_and_trains() -> None:
    x = gc.input("x", (None, 4), F64)
    w = gc.param("w", (4,), init=lambda rng, shape, dtype: np.full(shape, 2.0, dtype), dtype=F64)
    step = gc.compile(gc.sum(_scaled_chain(x * w)), optimizer=gc.optim.SGD(0.5))
    xv = np.arange(12, dtype=F64).reshape(3, 4)
    loss = step(x=xv)
    assert loss == pytest.approx(np.sum(_numpy_chain(xv * 2.0)), rel=1e-9)
    gradient = (2.0 - step.state.values["w"]) / 0.5  # what the SGD step subtracted
    np.testing.assert_allclose(gradient, _numpy_chain(xv.sum(axis=0)), rtol=1e-9)  # d/dw of Σ x·w·c^n


def _tanh_chain(length: int) -> tuple[gc.Node, gc.Node]:
    x = gc.input("x", (None, 4), F64)
    h = x
    for _ in range(length):
        h = gc.tanh(h)
    return x, h


def test_a_chain_of_300_tanh_is_fused_in_bounded_groups() -> None:
    _, h = _tanh_chain(300)
    program = Program("chain", {"out": h})
    _, groups = fuse(program, program.nodes(), c_loops.eligible, c_loops.joins)
    sizes = [len(g.members) for g in groups]
    assert max(sizes) == MAX_MEMBERS and sum(sizes) == 300, sizes


def test_a_chain_of_300_tanh_compiles_and_matches_numpy() -> None:
    x, h = _tanh_chain(300)
    step = gc.compile(h)
    assert all(len(g.members) <= MAX_MEMBERS for g in step.plan.groups)
    xv = np.linspace(-3, 3, 20).reshape(5, 4)
    expected = xv
    for _ in range(300):
        expected = np.tanh(expected)
    np.testing.assert_allclose(step(x=xv), expected, rtol=1e-12)


def _compile_peak(depth: int) -> int:
    """The peak of memory allocated while compiling a train step of ``depth`` Dense(8)+tanh layers."""
    x = gc.input("x", (None, 8))
    y = gc.input("y", (None,), "int32")
    layers: list[object] = []
    for _ in range(depth):
        layers += [gc.nn.Dense(8), gc.nn.tanh]
    loss = gc.softmax_cross_entropy(gc.nn.Sequential(*layers)(x), y)
    gc.clear_cache()
    garbage.collect()
    tracemalloc.start()
    try:
        gc.compile(loss, optimizer=gc.optim.SGD(0.1))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_compile_memory_grows_linearly_with_depth() -> None:
    shallow, deep = _compile_peak(200), _compile_peak(400)
    assert deep < 3 * shallow, f"{shallow / 1e6:.1f} MB at 200 layers, {deep / 1e6:.1f} MB at 400"
