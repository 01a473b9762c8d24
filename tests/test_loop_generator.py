"""One change in the shared loop generator reaches both the C loops and the CUDA kernels."""
from __future__ import annotations

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
