"""The GPU runtime's use of CuPy and cuBLAS, driven against an adversarial stand-in on the CPU.

The stand-in (``tests/cuda_standin.py``) takes the calls :mod:`graphc.backends.cuda.cupy_device`
makes — CuPy's ``RawModule``, streams, events, capture and ``memcpyAsync``, and libcublas's
``cublasSgemm_v2`` with its column-major arguments — and queues them per stream, running the
queues in a seeded random interleaving that keeps only CUDA's ordering guarantees (kernels through
the emulator's host build).  Every test runs under many seeds: a missing event, wait or synchronize
shows as a wrong result in some of them.  ``tests/test_cuda_gpu.py`` checks the real thing where
there is a GPU.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
from cuda_standin import D2D, D2H, H2D, StandIn, install

import graphc as gc
from graphc import nn, optim
from graphc.backends.cuda import emulator
from graphc.errors import GraphcError

pytestmark = pytest.mark.skipif(emulator.host_compiler() is None, reason="no C++ compiler for the emulator")

SEEDS = 32  # interleavings per test: the file stays within about half a minute


@pytest.fixture(params=range(SEEDS))
def stand_in(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    return install(monkeypatch, request.param)


def _mlp(backend: str) -> Any:
    x = gc.input("x", (None, 784))
    y = gc.input("y", (None,), dtype="int32")
    net = nn.Sequential(nn.Dense(64, init="he"), nn.relu, nn.BatchNorm(), nn.Dense(10, init="he"))
    return gc.compile(gc.softmax_cross_entropy(net(x), y), optim.Adam(1e-3), backend=backend)


def _batches(count: int, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(5)
    return [(rng.standard_normal((batch, 784)).astype(np.float32), rng.integers(0, 10, batch).astype(np.int32))
            for _ in range(count)]


@functools.cache
def _numpy_reference(*runs: tuple[int, int]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """The NumPy backend's losses and final variables over ``runs`` (count, batch size) of batches:
    computed once, as every seed's run compares with the same ones."""
    cpu = _mlp("numpy")
    losses = [cpu(x=x, y=y) for count, batch in runs for x, y in _batches(count, batch)]
    return losses, {name: np.copy(value) for name, value in cpu.state.values.items()}


def _same_state(gpu: Any, *runs: tuple[int, int]) -> None:
    for name, value in _numpy_reference(*runs)[1].items():
        np.testing.assert_allclose(gpu.state.values[name], value, rtol=2e-4, atol=1e-5, err_msg=name)


def _same_losses(gpu: Any, count: int, batch: int = 8) -> None:
    """``count`` steps of ``batch`` rows, each loss as the NumPy backend's."""
    expected = _numpy_reference((count, batch))[0]
    for (x, y), loss in zip(_batches(count, batch), expected):
        np.testing.assert_allclose(gpu(x=x, y=y), loss, rtol=2e-4)


def test_steps_replay_one_captured_graph_and_match_the_numpy_backend(stand_in: StandIn) -> None:
    gpu = _mlp("cupy")
    expected = iter(_numpy_reference((5, 16), (2, 5))[0])
    for x, y in _batches(5, 16):
        np.testing.assert_allclose(gpu(x=x, y=y), next(expected), rtol=2e-4)
    assert stand_in.replays == 4  # the first step runs eagerly and is then captured; the rest replay
    assert {H2D, D2H} <= set(stand_in.kinds)  # inputs and variables copied in, results and state out
    for x, y in _batches(2, 5):  # another batch size: its own arena and graph, on the same device
        np.testing.assert_allclose(gpu(x=x, y=y), next(expected), rtol=2e-4)
    assert stand_in.replays == 5
    _same_state(gpu, (5, 16), (2, 5))


def test_launch_leaves_out_the_copy_back_until_the_next_call(stand_in: StandIn) -> None:
    gpu = _mlp("cupy")
    batches = _batches(4, 8)
    for x, y in batches[:3]:
        gpu.launch(x=x, y=y)
    assert stand_in.kinds.count(D2H) == 0
    x, y = batches[3]
    np.testing.assert_allclose(gpu(x=x, y=y), _numpy_reference((4, 8))[0][3], rtol=2e-4)
    _same_state(gpu, (4, 8))


def test_the_results_are_in_host_memory_when_the_call_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device that runs nothing until the host waits for it: every result and variable comes back
    through the step's final synchronize."""
    install(monkeypatch, 0, eagerness=0.0)
    gpu = _mlp("cupy")
    _same_losses(gpu, 2)
    _same_state(gpu, (2, 8))


def test_inputs_on_the_device_are_copied_after_their_stream_and_before_it_goes_on(stand_in: StandIn) -> None:
    """Inputs made on the caller's stream (the legacy default stream): the step's stream waits for
    their uploads, and the caller's stream waits for the step's copies before it overwrites them."""
    import cupy
    gpu = _mlp("cupy")
    batches = _batches(4, 8)
    for x, y in batches[:3]:
        on_device = cupy.asarray(x), cupy.asarray(y)
        gpu.launch(x=on_device[0], y=on_device[1])
        for array in on_device:  # the caller's next work reuses the arrays
            cupy.cuda.runtime.memsetAsync(array.data.ptr, 0, array.nbytes, 0)
    x, y = batches[3]
    np.testing.assert_allclose(gpu(x=cupy.asarray(x), y=cupy.asarray(y)), _numpy_reference((4, 8))[0][3], rtol=2e-4)
    _same_state(gpu, (4, 8))
    assert D2D in stand_in.kinds


def _concat(backend: str) -> Any:
    """A program with a copy step: ``b`` copied into its place in the concatenation."""
    a, b = gc.input("a", (6,)), gc.input("b", (6,))
    return gc.compile({"cat": gc.concat([a * 2.0, b])}, backend=backend)


def test_a_device_copy_step_copies_its_source_into_its_destination(stand_in: StandIn) -> None:
    gpu = _concat("cupy")
    rng = np.random.default_rng(1)
    for _ in range(3):
        a, b = rng.standard_normal(6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
        np.testing.assert_array_equal(gpu(a=a, b=b)["cat"], np.concatenate([a * 2, b]))
    assert D2D in stand_in.kinds


def test_every_kernel_gemm_and_copy_is_issued_on_the_steps_stream(stand_in: StandIn) -> None:
    """The step's stream is non-blocking: work issued on the legacy default stream instead (a kernel
    called outside ``with stream:``) is ordered with none of it, and no capture records it."""
    gpu = _mlp("cupy")
    _same_losses(gpu, 2)
    streams = {ptr for _, ptr in stand_in.issued_on}
    assert len(streams) == 1 and 0 not in streams, sorted(set(stand_in.issued_on))


def test_without_graphs_every_step_launches_one_by_one(stand_in: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHC_CUDA_GRAPHS", "0")
    _same_losses(_mlp("cupy"), 3)
    assert stand_in.replays == 0


def test_a_model_with_noise_launches_the_step_counters_kernel_too(stand_in: StandIn) -> None:
    """The kernel that advances the random generator's step counter lives in the prelude, not among
    the generated kernels: fetching only those once stopped every step with a random op."""
    def noisy(backend: str) -> Any:
        x = gc.input("x", (None, 784))
        y = gc.input("y", (None,), dtype="int32")
        net = nn.Sequential(nn.GaussianNoise(0.3), nn.Dense(32, init="he"), nn.relu, nn.Dense(10, init="he"))
        return gc.compile(gc.softmax_cross_entropy(net(x), y), optim.SGD(0.1), backend=backend)
    gpu, emulated = noisy("cupy"), noisy("cuda-emulator")
    losses = []
    for x, y in _batches(3, 8):
        losses.append(float(gpu(x=x, y=y)))
        assert losses[-1] == float(emulated(x=x, y=y))  # the same Philox draws, step after step
    assert len(set(losses)) == 3
    assert "graphc_rng_advance" in stand_in.fetched


def test_the_arena_is_zeroed_before_the_uploads_land(stand_in: StandIn) -> None:
    """The arena's zero-fill must be ordered before the constants and the vector of ones are
    uploaded on the step's stream: ``cp.zeros`` fills on the legacy default stream, which a
    non-blocking stream does not wait for, so in some interleavings it zeroed them after they landed."""
    _same_losses(_mlp("cupy"), 2)


def test_a_cublas_failure_during_capture_is_named_and_the_step_runs_one_by_one(
        stand_in: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    stand_in.fail_gemms_in_capture = 14
    _same_losses(_mlp("cupy"), 4)
    warning = capsys.readouterr().err
    assert warning.count("graphc: warning: the step could not be captured as one CUDA graph") == 1
    assert "cuBLAS status 14 (CUBLAS_STATUS_INTERNAL_ERROR)" in warning
    assert stand_in.replays == 0  # launched one by one from then on


def test_array_constants_reach_the_device_before_the_first_step(stand_in: StandIn) -> None:
    x = gc.input("x", (None, 3), "float32")
    scale = gc.constant(np.array([0.5, -2.0, 4.0], np.float32))
    out = gc.sum(x * scale + gc.constant(np.array([1.0, 2.0, 3.0], np.float32)), axis=1)
    gpu, cpu = gc.compile(out, backend="cupy"), gc.compile(out, backend="numpy")
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    for _ in range(2):
        np.testing.assert_array_equal(gpu(x=value), cpu(x=value))


def test_a_batch_of_no_rows_gives_what_numpy_gives(stand_in: StandIn) -> None:
    """cuBLAS refuses a leading dimension of 0: a GEMM with no output is skipped, and every
    leading dimension is at least 1."""
    gpu, cpu = _mlp("cupy"), _mlp("numpy")
    empty_x, empty_y = np.zeros((0, 784), np.float32), np.zeros(0, np.int32)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(gpu(x=empty_x, y=empty_y), cpu(x=empty_x, y=empty_y))  # NaN, the mean of none


@pytest.mark.parametrize("options", [{"devices": 0},
                                     {"driver_error": "cudaErrorInsufficientDriver: CUDA driver version is "
                                                      "insufficient for CUDA runtime version"}])
def test_no_device_or_a_failing_driver_is_one_line_of_graphcs_error(
        monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]) -> None:
    """Not CuPy's traceback: graphc's error, one line, saying to use another backend."""
    install(monkeypatch, 0, **options)
    x, y = _batches(1, 4)[0]
    with pytest.raises(GraphcError) as caught:
        _mlp("cupy")(x=x, y=y)
    message = str(caught.value)
    assert "no CUDA device" in message and "--backend numpy" in message and "\n" not in message
    shown = caught.value.__cause__ or (None if caught.value.__suppress_context__ else caught.value.__context__)
    assert shown is None  # no CuPy exception printed above it
