"""The compile pipeline's own promises: a failed kernel build plans again without fusion, a plan too
large to replay is said so, and each GRAPHC_DEBUG level shows what it promises and no more."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import backends
from graphc.backends.backend import KernelBuildFailed
from graphc.backends.cpu import NumpyBackend, c_loops
from graphc.compiler import pipeline
from graphc.ir.program import Program
from graphc.passes import plan_check
from graphc.passes.memory import Plan
from graphc.runtime.store import Store

needs_c = pytest.mark.skipif(c_loops.compiler() is None, reason="no C compiler (or GRAPHC_KERNELS=numpy)")


class FusedBuildFails(NumpyBackend):
    """The CPU backend on a machine where the fused loops do not build."""

    name = "numpy-without-loops"
    plans: list[Plan] = []

    def generate(self, program: Program, plan: Plan):  # type: ignore[no-untyped-def]
        self.plans.append(plan)
        if plan.groups:
            raise KernelBuildFailed("the fused loops do not build here")
        return super().generate(program, plan)


def _program() -> tuple[Program, np.ndarray]:
    x = gc.input("x", (3, 4), "float64")
    return Program("p", {"out": gc.sum(gc.tanh(x) * 2.0 + 1.0, axis=1)}), np.arange(12.0).reshape(3, 4) / 10


@needs_c
def test_a_failed_kernel_build_plans_again_without_fusion() -> None:
    gc.clear_cache()
    backend = FusedBuildFails()
    backend.plans = []
    program, x = _program()
    step = pipeline.build(program, Store(0), None, backend)
    assert [bool(p.groups) for p in backend.plans] == [True, False]
    assert step.plan.groups == []
    for _ in range(2):
        np.testing.assert_allclose(step(x=x), np.sum(np.tanh(x) * 2.0 + 1.0, axis=1), rtol=1e-15)


def test_a_backend_that_does_not_fuse_here_gets_a_plan_without_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NumpyBackend, "fuses", lambda self: False)
    program, _ = _program()
    assert pipeline.place(program, backends.get("numpy"), True).groups == []


def test_a_plan_too_large_to_replay_is_said_so(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GRAPHC_VERIFY_PLAN", "1")
    monkeypatch.setenv("GRAPHC_DEBUG", "1")
    monkeypatch.setattr(plan_check, "MAX_ELEMENTS", 4)
    gc.clear_cache()
    program, _ = _program()
    pipeline.build(program, Store(0), None, backends.get("numpy"))
    assert "graphc: the memory plan of p is too large to replay; not checked" in capsys.readouterr().err


@pytest.mark.parametrize("level, shown, hidden", [
    ("0", [], ["graphc: compiled"]),
    ("1", ["graphc: compiled p: ", "cache miss"], ["cost at batch", "canonicalize", "return out="]),
    ("2", ["cost at batch", "canonicalize"], ["return out=", "def bind("]),
    ("3", ["return out="], ["def bind("]),
    ("4", ["def bind("], []),
])
def test_each_debug_level_shows_what_it_promises(level: str, shown: list[str], hidden: list[str],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GRAPHC_DEBUG", level)
    gc.clear_cache()
    program, _ = _program()
    pipeline.build(program, Store(0), None, backends.get("numpy"))
    err = capsys.readouterr().err
    assert all(text in err for text in shown), err
    assert not any(text in err for text in hidden), err
