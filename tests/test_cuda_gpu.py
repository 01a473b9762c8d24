"""The cupy backend on a real GPU, against the NumPy backend (skipped where there is no GPU).

These are the checks the emulator cannot make: NVRTC compiles the kernels,
cuBLAS through ctypes computes the GEMMs on the backend's stream, and the step
replayed as a CUDA graph gives what the same calls give launched one by one.
``benchmarks/gpu_check.sh`` runs them on a GPU machine.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.testing.models import device_check_mlp


def _device_count() -> int:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return 0


pytestmark = pytest.mark.skipif(_device_count() == 0, reason="no CUDA device (or no CuPy)")


def _batches(count: int, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [(rng.standard_normal((batch, 784)).astype(np.float32), rng.integers(0, 10, batch).astype(np.int32))
            for _ in range(count)]


@pytest.mark.parametrize("batch", [7, 128, 1024])
def test_gpu_steps_match_the_numpy_backend(batch: int) -> None:
    gpu, cpu = device_check_mlp("cupy"), device_check_mlp("numpy")
    for x, y in _batches(30, batch):
        np.testing.assert_allclose(gpu(x=x, y=y), cpu(x=x, y=y), rtol=2e-4, atol=1e-5)
    for name, value in cpu.state.values.items():
        np.testing.assert_allclose(gpu.state.values[name], value, rtol=2e-4, atol=2e-5, err_msg=name)


def test_graph_replay_gives_what_eager_launches_give(monkeypatch: pytest.MonkeyPatch) -> None:
    replayed = device_check_mlp("cupy", noise=0.1)
    monkeypatch.setenv("GRAPHC_CUDA_GRAPHS", "0")
    gc.clear_cache()
    eager = device_check_mlp("cupy", noise=0.1)
    for x, y in _batches(10, 64):
        assert float(replayed(x=x, y=y)) == float(eager(x=x, y=y))


def test_launch_queues_steps_and_the_next_call_fetches_the_state() -> None:
    import cupy
    launched, called = device_check_mlp("cupy"), device_check_mlp("cupy")
    batches = _batches(6, 256)
    for x, y in batches[:-1]:
        launched.launch(x=cupy.asarray(x), y=cupy.asarray(y))
        called(x=x, y=y)
    x, y = batches[-1]
    assert float(launched(x=x, y=y)) == float(called(x=x, y=y))
    for name, value in called.state.values.items():
        np.testing.assert_array_equal(launched.state.values[name], value, err_msg=name)


def test_random_graphs_run_on_the_gpu() -> None:
    from hypothesis import given, settings
    from graphc.testing.strategies import RandomGraph, graphs

    from graphc.ir.graph import toposort
    from test_random_graphs import TOLERANCE, assert_same_values

    @settings(max_examples=15, deadline=None)
    @given(graphs())
    def check(graph: RandomGraph) -> None:
        """FMA contraction and the GPU's own exp, log and tanh change last bits: relative to each
        output's scale, float64 agrees to 1e-10; a graph that rounds through float32, to float32's."""
        outputs = [graph.output, *graph.nodes]
        gpu = gc.compile(outputs, backend="cupy")(**graph.values)
        cpu = gc.compile(outputs)(**graph.values)
        inner = "float32" if any(n.dtype == "float32" for n in toposort(outputs)) else "float64"
        assert_same_values(gpu, cpu, TOLERANCE[inner])
    check()
