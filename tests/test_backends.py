"""The backend seam: lookup by name, and a cache entry per backend."""
import numpy as np
import pytest

import graphc as gc
from graphc import backends
from graphc.compiler import step_cache
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
    keys = {step_cache.structural_key(program, backends.get(name).cache_tag(True)) for name in backends.NAMES}
    assert len(keys) == len(backends.NAMES)


def test_numpy_backend_runs_through_the_registry():
    x = gc.input("x", (None, 3))
    step = gc.compile(gc.relu(x) * 2.0, backend="numpy")
    value = np.array([[-1.0, 0.5, 2.0]], np.float32)
    np.testing.assert_array_equal(step(x=value), np.maximum(value, 0) * 2)


# ---------------------------------------------------------------- every op has a lowering in every backend

def _computed():
    """Every primitive that is not a leaf (leaves are bound, not computed)."""
    from graphc.ir.registry import LEAF, PRIMITIVES
    return {name: p for name, p in PRIMITIVES.items() if p.kind != LEAF}


def test_cuda_backend_lowers_every_primitive():
    from graphc.backends.cuda.codegen import lowers
    from graphc.ir.registry import PRIMITIVES
    assert {name for name in PRIMITIVES if not lowers(name)} == set()
    assert {name for name in _computed() if "c" not in PRIMITIVES[name].lowerings
            and "cuda" not in PRIMITIVES[name].lowerings} == set()
