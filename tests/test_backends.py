"""The backend seam: lookup by name, and a cache entry per backend."""
import numpy as np
import pytest

import graphc as gc
from graphc import backends, cache
from graphc.errors import GraphcError


def test_unknown_backend_names_the_choices():
    x = gc.input("x", (None, 3))
    with pytest.raises(GraphcError, match="unknown backend 'tpu'; available: numpy, cupy"):
        gc.compile(gc.relu(x), backend="tpu")


def test_every_registered_backend_loads_without_a_gpu():
    for name in backends.NAMES:
        assert backends.get(name).name == name


def test_cache_key_includes_the_backend():
    x = gc.input("x", (None, 3))
    program = gc.compile(gc.relu(x)).program
    keys = {cache.structural_key(program, backends.get(name).cache_tag(True)) for name in backends.NAMES}
    assert len(keys) == len(backends.NAMES)


def test_numpy_backend_runs_through_the_registry():
    x = gc.input("x", (None, 3))
    step = gc.compile(gc.relu(x) * 2.0, backend="numpy")
    value = np.array([[-1.0, 0.5, 2.0]], np.float32)
    np.testing.assert_array_equal(step(x=value), np.maximum(value, 0) * 2)


# ---------------------------------------------------------------- every op has a lowering in every backend

LEAVES = {"input", "param", "state", "constant"}


def test_numpy_backend_lowers_every_primitive():
    from graphc.backends.numpy_lowering import LOWERING
    from graphc.ir.primitives import PRIMITIVES
    assert set(PRIMITIVES) - LEAVES - set(LOWERING) == set()


def test_the_c_expression_table_covers_every_elementwise_primitive():
    from graphc.backends.c_style import EXPRESSIONS
    from graphc.ir.primitives import ELEMENTWISE, PRIMITIVES
    elementwise = {name for name, p in PRIMITIVES.items() if p.kind in ELEMENTWISE} | {"cast"}
    assert elementwise - set(EXPRESSIONS) == set()


def test_cuda_backend_lowers_every_primitive():
    from graphc.backends.cuda.codegen import lowered_ops
    from graphc.ir.primitives import PRIMITIVES
    assert set(PRIMITIVES) - lowered_ops() == set()
