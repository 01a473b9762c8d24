"""The GPU runtime's use of CuPy and cuBLAS, driven against a stand-in on the CPU.

The stand-in takes the calls :mod:`graphc.backends.cuda.cupy_device` makes — CuPy's
``RawModule``, ``Stream`` capture and ``memcpyAsync``, and libcublas's
``cublasSgemm_v2`` with its column-major arguments — and carries them out on
host memory (kernels through the emulator's host build).  While a stream
captures, calls are recorded instead of run, and the captured graph replays
them, as CUDA does.  So this checks the runtime's argument order, copy
directions and capture sequence without a GPU; ``tests/test_cuda_gpu.py``
checks the real thing where there is one.
"""
from __future__ import annotations

import ctypes
import sys
import types
from typing import Any, Callable

import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim
from graphc.backends.cuda import cublas, emulator

pytestmark = pytest.mark.skipif(emulator.host_compiler() is None, reason="no C++ compiler for the emulator")


class _Device:
    """Host memory and a log of what ran, shared by the stand-in's parts."""

    def __init__(self) -> None:
        self.capturing: list[Callable[[], None]] | None = None
        self.kinds: list[int] = []
        self.replays = 0
        self.waits: list[int] = []  # the streams that waited for an event, in order
        self.held: list[np.ndarray] = []
        self.default_stream_memsets = 0  # zeroing a non-blocking stream is not ordered after
        self.fail_gemms_in_capture = 0   # a cuBLAS status to return from GEMMs while a stream captures

    def issue(self, work: Callable[[], None]) -> None:
        if self.capturing is not None:
            self.capturing.append(work)
        else:
            work()


def _stand_in(device: _Device) -> types.ModuleType:
    cp = types.ModuleType("cupy")

    class Memory:
        def __init__(self, nbytes: int):
            self.host = np.zeros(max(nbytes, 1), np.uint8)
            device.held.append(self.host)
            self.data = types.SimpleNamespace(ptr=self.host.ctypes.data)
            self.nbytes = nbytes

    def allocate(size: int, dtype: Any = np.uint8) -> Memory:
        return Memory(size * np.dtype(dtype).itemsize)

    def zeros(size: int, dtype: Any = np.uint8) -> Memory:
        device.default_stream_memsets += 1  # CuPy zeroes on the current (legacy default) stream
        return allocate(size, dtype)

    class Graph:
        def __init__(self, calls: list[Callable[[], None]]):
            self.calls = calls

        def launch(self, stream: Any = None) -> None:
            device.replays += 1
            for call in self.calls:
                call()

    class Stream:
        def __init__(self, non_blocking: bool = False):
            self.ptr = 1234

        def __enter__(self) -> "Stream":
            return self

        def __exit__(self, *exc: Any) -> None:
            pass

        def synchronize(self) -> None:
            pass

        def begin_capture(self) -> None:
            assert device.capturing is None
            device.capturing = []

        def end_capture(self) -> Graph:
            calls, device.capturing = device.capturing, None
            return Graph(calls)

    def memcpy_async(dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        assert kind in (1, 2, 3) and stream == 1234
        device.kinds.append(kind)
        device.issue(lambda: ctypes.memmove(dst, src, nbytes))

    def memset_async(ptr: int, value: int, nbytes: int, stream: int) -> None:
        assert stream == 1234, "the arena is zeroed on the backend's stream"
        device.issue(lambda: ctypes.memset(ptr, value, nbytes))

    class Kernel:
        def __init__(self, library: ctypes.CDLL, name: str):
            self.launcher = getattr(library, f"launch_{name}")

        def __call__(self, grid: tuple, block: tuple, args: tuple) -> None:
            assert all(isinstance(a, (np.uint64, np.int64)) for a in args)
            values = [ctypes.c_uint64(int(a)) if isinstance(a, np.uint64) else ctypes.c_int64(int(a)) for a in args]
            table = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])

            def run() -> None:
                assert len(values) == len(table)  # both stay alive as long as the work does
                self.launcher(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), table)
            device.issue(run)

    class RawModule:
        def __init__(self, code: str, options: tuple = ()):
            self.library = emulator.build(code)

        def get_function(self, name: str) -> Kernel:
            return Kernel(self.library, name)

    cp.empty, cp.zeros = allocate, zeros
    cp.uint8 = np.uint8
    cp.RawModule = RawModule
    class Event:
        def __init__(self, disable_timing: bool = False):
            self.recorded = False

        def record(self, stream: Any) -> None:
            self.recorded = True

    def wait_event(self: Stream, event: Event) -> None:
        assert event.recorded, "the stream waits for an event never recorded"
        device.waits.append(self.ptr)

    Stream.wait_event = wait_event
    cp.ascontiguousarray = lambda array: array
    producer = Stream()
    producer.ptr = 99  # the stream the caller's arrays were made on
    cp.cuda = types.SimpleNamespace(Stream=Stream, Event=Event, get_current_stream=lambda: producer,
                                    runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, memcpyAsync=memcpy_async,
                                                                  memsetAsync=memset_async))
    return cp


class _Cublas:
    """libcublas's entry points the runtime calls, column-major as cuBLAS defines them."""

    def __init__(self, device: _Device):
        self.device = device
        self.stream = None

    def cublasCreate_v2(self, handle: Any) -> int:
        return 0

    def cublasSetStream_v2(self, handle: Any, stream: ctypes.c_void_p) -> int:
        self.stream = stream.value
        return 0

    def cublasSetWorkspace_v2(self, handle: Any, workspace: ctypes.c_void_p, size: ctypes.c_size_t) -> int:
        assert workspace.value and size.value > 0
        return 0

    def cublasSetMathMode(self, handle: Any, mode: int) -> int:
        assert mode == 0, "cuBLAS's default math mode: no TF32"
        return 0

    def cublasDestroy_v2(self, handle: Any) -> int:
        return 0

    def cublasSgemm_v2(self, handle: Any, trans_a: int, trans_b: int, m: int, n: int, k: int, alpha: Any,
                       a: ctypes.c_void_p, lda: int, b: ctypes.c_void_p, ldb: int, beta: Any,
                       c: ctypes.c_void_p, ldc: int) -> int:
        assert self.stream == 1234, "GEMMs must run on the backend's stream"
        if self.device.capturing is not None and self.device.fail_gemms_in_capture:
            return self.device.fail_gemms_in_capture
        assert min(lda, ldb, ldc) >= 1 and m > 0 and n > 0, "cuBLAS would return CUBLAS_STATUS_INVALID_VALUE"
        assert alpha._obj.value == 1.0 and beta._obj.value == 0.0

        def matrix(address: int, rows: int, cols: int, ld: int) -> np.ndarray:
            assert ld >= rows
            buffer = (ctypes.c_float * ((cols - 1) * ld + rows)).from_address(address)
            return np.ndarray((rows, cols), np.float32, buffer=buffer, strides=(4, 4 * ld))

        def run() -> None:
            op_a = matrix(a.value, k, m, lda).T if trans_a else matrix(a.value, m, k, lda)
            op_b = matrix(b.value, n, k, ldb).T if trans_b else matrix(b.value, k, n, ldb)
            matrix(c.value, m, n, ldc)[...] = op_a @ op_b
        self.device.issue(run)
        return 0


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> _Device:
    device = _Device()
    monkeypatch.setitem(sys.modules, "cupy", _stand_in(device))
    monkeypatch.setattr(cublas, "_library", lambda: _Cublas(device))
    gc.clear_cache()
    return device


def _mlp(backend: str) -> Any:
    x = gc.input("x", (None, 784))
    y = gc.input("y", (None,), dtype="int32")
    net = nn.Sequential(nn.Dense(64, init="he"), nn.relu, nn.BatchNorm(), nn.Dense(10, init="he"))
    return gc.compile(gc.softmax_cross_entropy(net(x), y), optim.Adam(1e-3), backend=backend)


def _batches(count: int, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(5)
    return [(rng.standard_normal((batch, 784)).astype(np.float32), rng.integers(0, 10, batch).astype(np.int32))
            for _ in range(count)]


def test_steps_replay_one_captured_graph_and_match_the_numpy_backend(stand_in: _Device) -> None:
    gpu, cpu = _mlp("cupy"), _mlp("numpy")
    for x, y in _batches(5, 16):
        np.testing.assert_allclose(gpu(x=x, y=y), cpu(x=x, y=y), rtol=2e-4)
    assert stand_in.replays == 4  # the first step runs eagerly and is then captured; the rest replay
    assert {1, 2} <= set(stand_in.kinds)  # inputs and variables copied in, results and state out
    for x, y in _batches(2, 5):  # another batch size: its own arena and graph, on the same device
        np.testing.assert_allclose(gpu(x=x, y=y), cpu(x=x, y=y), rtol=2e-4)
    assert stand_in.replays == 5
    for name, value in cpu.state.values.items():
        np.testing.assert_allclose(gpu.state.values[name], value, rtol=2e-4, atol=1e-5, err_msg=name)


def test_launch_leaves_out_the_copy_back_until_the_next_call(stand_in: _Device) -> None:
    gpu, cpu = _mlp("cupy"), _mlp("numpy")
    batches = _batches(4, 8)
    for x, y in batches[:3]:
        gpu.launch(x=x, y=y)
        cpu(x=x, y=y)
    copies_out = stand_in.kinds.count(2)
    assert copies_out == 0
    x, y = batches[3]
    np.testing.assert_allclose(gpu(x=x, y=y), cpu(x=x, y=y), rtol=2e-4)
    for name, value in cpu.state.values.items():
        np.testing.assert_allclose(gpu.state.values[name], value, rtol=2e-4, atol=1e-5, err_msg=name)


class _OnDevice:
    """An array already on the device, as far as the runtime can tell (its memory is host memory here)."""

    def __init__(self, host: np.ndarray):
        self.host = np.ascontiguousarray(host)
        self.shape, self.dtype, self.nbytes = self.host.shape, self.host.dtype, self.host.nbytes
        self.data = types.SimpleNamespace(ptr=self.host.ctypes.data)
        self.__cuda_array_interface__ = {"shape": self.shape, "data": (self.data.ptr, False)}


def test_inputs_on_the_device_are_copied_on_the_device_after_their_stream(stand_in: _Device) -> None:
    gpu, cpu = _mlp("cupy"), _mlp("numpy")
    for x, y in _batches(3, 8):
        np.testing.assert_allclose(gpu(x=_OnDevice(x), y=_OnDevice(y)), cpu(x=x, y=y), rtol=2e-4)
    # each input: the backend's stream waits for the input's, copies device to device, and the input's
    # stream waits for that copy before it may change the array
    assert stand_in.waits == [1234, 99] * 6 and 3 in stand_in.kinds


def test_without_graphs_every_step_launches_one_by_one(stand_in: _Device, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHC_CUDA_GRAPHS", "0")
    gpu = _mlp("cupy")
    for x, y in _batches(3, 8):
        gpu(x=x, y=y)
    assert stand_in.replays == 0


def test_a_model_with_noise_launches_the_step_counters_kernel_too(stand_in: _Device) -> None:
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


def test_the_arena_is_zeroed_on_the_backends_stream(stand_in: _Device) -> None:
    """cp.zeros memsets on the legacy default stream, which a non-blocking stream does not wait for:
    the uploads that follow (the vector of ones at the arena's end) could be zeroed after they land."""
    gpu, cpu = _mlp("cupy"), _mlp("numpy")
    for x, y in _batches(2, 8):
        np.testing.assert_allclose(gpu(x=x, y=y), cpu(x=x, y=y), rtol=2e-4)
    assert stand_in.default_stream_memsets == 0


def test_a_cublas_failure_during_capture_is_named_and_the_step_runs_one_by_one(
        stand_in: _Device, capsys: pytest.CaptureFixture[str]) -> None:
    stand_in.fail_gemms_in_capture = 14
    gpu, cpu = _mlp("cupy"), _mlp("numpy")
    for x, y in _batches(4, 8):
        np.testing.assert_allclose(gpu(x=x, y=y), cpu(x=x, y=y), rtol=2e-4)
    warning = capsys.readouterr().err
    assert warning.count("graphc: warning: the step could not be captured as one CUDA graph") == 1
    assert "cuBLAS status 14 (CUBLAS_STATUS_INTERNAL_ERROR)" in warning
    assert stand_in.replays == 0  # launched one by one from then on


def test_a_batch_of_no_rows_gives_what_numpy_gives(stand_in: _Device) -> None:
    """cuBLAS refuses a leading dimension of 0: a GEMM with no output is skipped, and every
    leading dimension is at least 1."""
    gpu, cpu = _mlp("cupy"), _mlp("numpy")
    empty_x, empty_y = np.zeros((0, 784), np.float32), np.zeros(0, np.int32)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(gpu(x=empty_x, y=empty_y), cpu(x=empty_x, y=empty_y))  # NaN, the mean of none
