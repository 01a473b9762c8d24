"""The static cost model, against counts worked out by hand for a small planned step."""
from __future__ import annotations


import pytest

import graphc as gc
from graphc.passes.cost import Cost, estimate


@pytest.fixture
def c_loops_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAPHC_KERNELS", raising=False)


def test_cost_of_a_matmul_then_a_fused_pair(c_loops_built: None) -> None:
    """tanh(x @ W) * 2 at batch B: the matmul (2·B·4·3 FLOPs; reads x and W, writes B×3) and one
    fused loop for tanh and the multiply (2·B·3 FLOPs; reads and writes B×3 once); one buffer."""
    x = gc.input("x", (None, 4))
    w = gc.param("w", (4, 3))
    step = gc.compile(gc.tanh(x @ w) * 2.0)
    if not step.plan.groups:
        pytest.skip("no C compiler: nothing is fused")
    b = 2
    assert estimate(step.plan, batch=b) == Cost(batch=b, flops=2 * b * 4 * 3 + 2 * b * 3,
                                                bytes_moved=4 * (b * 3 + b * 4 + 4 * 3) + 4 * (b * 3 + b * 3),
                                                buffer_bytes=4 * b * 3, kernels=2)
    text = estimate(step.plan, batch=250_000).format()
    assert text == ("at batch 250000: 7.50 MFLOP, 13.00 MB moved, 3.00 MB of buffers, "
                    "2 kernel calls per step")
