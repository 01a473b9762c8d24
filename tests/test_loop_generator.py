"""One change in the shared loop generator reaches both the C loops and the CUDA kernels."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.backends import loops
from graphc.backends.cpu import c_loops
from graphc.compiler import step_cache

pytestmark = pytest.mark.skipif(c_loops.compiler() is None, reason="no C compiler (or GRAPHC_KERNELS=numpy)")


def _source(backend: str) -> str:
    """The kernels of one softmax cross-entropy, a row loop on both backends, generated anew."""
    step_cache.clear()
    x, y = gc.input("x", (None, 10)), gc.input("y", (None,), "int32")
    return gc.compile(gc.softmax_cross_entropy(x, y), backend=backend).show("kernels")


def test_one_change_to_the_row_loop_reaches_both_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "MARK" not in _source("numpy") + _source("cupy")
    reduction = loops._Rows.reduction

    def marked(self, node, var, comment):  # type: ignore[no-untyped-def]
        reduction(self, node, var, comment)
        self.body.append(f"const int {var}_MARK = 1;")

    monkeypatch.setattr(loops._Rows, "reduction", marked)
    c, cuda = _source("numpy"), _source("cupy")
    assert "row_max_f" in c and "MARK" in c
    assert "__global__" in cuda and "MARK" in cuda


def _standalone_kernels() -> str:
    """The CUDA kernels of a max over the batch and a one-hot that joins no group, generated anew."""
    step_cache.clear()
    x, y = gc.input("x", (None, 4)), gc.input("y", (None,), "int32")
    return gc.compile({"max": gc.max(x, axis=0), "one_hot": gc.one_hot(y, 3)}, backend="cupy").show("kernels")


def test_the_standalone_cuda_reductions_and_one_hots_take_their_rules_from_the_generator(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert "acc != acc || x != x" in _standalone_kernels()  # NaN wins, as in the row loops
    accumulation, one_hot_value = loops.accumulation, loops.one_hot_value
    monkeypatch.setattr(loops, "accumulation", lambda *a: tuple(s + " /* MARK_ACC */" for s in accumulation(*a)))
    monkeypatch.setattr(loops, "one_hot_value", lambda *a: one_hot_value(*a) + " /* MARK_ONE_HOT */")
    kernels = _standalone_kernels()
    assert "MARK_ACC" in kernels and "MARK_ONE_HOT" in kernels


def test_a_standalone_cuda_max_lets_nan_win_as_numpy_does() -> None:
    x = gc.input("x", (5, 4), dtype="float32")
    values = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    values[2, 1] = values[0, 3] = np.nan
    values[:, 0] = [-3.0, -1.0, -2.0, -5.0, -4.0]  # a max that is not the first element
    step = gc.compile(gc.max(x, axis=0), backend="cuda-emulator")
    for _ in range(2):
        np.testing.assert_array_equal(step(x=values), np.max(values, axis=0))


def test_every_store_of_both_targets_is_the_generators(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs are the C loops' ``a<k>`` and the CUDA kernels' ``p<k>`` pointers."""
    store = loops.store
    monkeypatch.setattr(loops, "store", lambda place, value: store(place, value) + " /* MARK_STORE */")
    for kernels in (_source("numpy"), _source("cupy"), _standalone_kernels()):
        stores = re.findall(r"^.*\b[ap]\d+\[[^\]]*\] = .*$", kernels, flags=re.M)
        assert stores and all("MARK_STORE" in line for line in stores), stores
