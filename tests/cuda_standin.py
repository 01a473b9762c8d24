"""An adversarial stand-in for CuPy and libcublas: what CUDA guarantees about ordering, and nothing more.

The GPU runtime (``graphc.backends.cuda.cupy_device`` and ``binding``) is driven here without a
GPU.  A stand-in that carries calls out in order cannot see a missing event or synchronize, so
this one queues every piece of device work on its stream and runs the queues in a seeded random
interleaving, constrained only by what CUDA promises:

* work on one stream runs in issue order;
* ``Event.record`` marks the stream's work issued so far; ``Stream.wait_event`` holds the stream's
  later work until that work has run (an event never recorded is waited for by nobody);
* the legacy default stream (``ptr`` 0, CuPy's current stream unless ``with stream:``) waits for all
  work issued before on blocking streams, and blocking streams wait for it; non-blocking streams
  (``Stream(non_blocking=True)``) do neither;
* ``memsetAsync``, ``memcpyAsync`` and kernels return before they run; a copy from pageable host
  memory to the device reads its source at the call (the driver stages it) and writes the device
  in stream order; a copy to pageable host memory lands when the stream's work runs, so only a
  synchronize makes it visible (CUDA "API synchronization behavior");
* ``Stream.synchronize`` runs work (of any stream, in a random order) until that stream is idle.

Device memory is host memory filled with 0xFF bytes (NaN as floats) when allocated (but for
allocations over 16 MiB, the cuBLAS workspace, which stay zero pages); every copy
checks its direction against which side is device memory, every kernel pointer argument must lie
in device memory.  A module finds only the ``extern "C"`` kernels of its own source, by name.
Capture records the capturing stream's work with kernel arguments frozen at capture time, and
refuses allocation, host copies and synchronizing the stream (the capture is then invalid, as
CUDA invalidates it); ``Graph.launch`` issues the recorded work on the stream it is given.  The
cuBLAS stand-in issues each GEMM on the stream its handle was set to (the legacy default stream if
none), needs a workspace while capturing, and fails with a chosen status during a capture when
``fail_gemms_in_capture`` is set.

Entry point: ``install(monkeypatch, seed) -> StandIn``, which puts the stand-in in place of
``cupy`` and libcublas for one test.  ``StandIn.kinds`` logs the ``cudaMemcpyKind`` of every
``memcpyAsync`` call in issue order (1 host→device, 2 device→host, 3 device→device).
"""
from __future__ import annotations

import ctypes
import random
import re
import sys
import types
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

H2D, D2H, D2D = 1, 2, 3
GARBAGE = 0xFF  # what fresh device memory holds: NaN as floats, -1 as integers
GARBAGE_LIMIT = 1 << 24  # larger allocations (cuBLAS's workspace, which only cuBLAS uses) stay untouched pages
_KERNEL = re.compile(r'extern "C" __global__ void (\w+)\(')


class CUDARuntimeError(RuntimeError):
    """What CuPy raises for a failing CUDA runtime call."""


class CUDADriverError(RuntimeError):
    """What CuPy raises for a failing CUDA driver call (a symbol not found in a module)."""


@dataclass
class Op:
    """One piece of device work: it runs when it heads its stream's queue and every dependency
    (a stream, and how many of its ops must have run) is met."""
    work: Callable[[], None]
    deps: list[tuple[Stream, int]]


class StandIn:
    """The device: its streams, memory and scheduler, and logs the tests read."""

    def __init__(self, seed: int, eagerness: float | None = None, devices: int = 1,
                 driver_error: str | None = None):
        self.rng = random.Random(seed)
        # how often the device runs queued work while the host goes on: from never to almost always
        self.eagerness = self.rng.choice([0.0, 0.3, 0.7, 0.95]) if eagerness is None else eagerness
        # half the seeds favour some streams over others (each stream's priority drawn when it is made),
        # so that one stream's work can lag far behind another's; the other half pick uniformly
        self.favour = self.rng.random() < 0.5
        self.devices, self.driver_error = devices, driver_error
        self.streams: list[Stream] = []
        self.legacy = Stream(self, non_blocking=False, ptr=0)
        self.current: list[Stream] = [self.legacy]
        self.allocations: list[tuple[int, int, np.ndarray]] = []
        self.kinds: list[int] = []                   # cudaMemcpyKind of each memcpyAsync, in issue order
        self.issued_on: list[tuple[str, int]] = []   # (what, stream ptr) of each kernel, GEMM and copy
        self.fetched: list[str] = []                 # kernel names asked of a module
        self.replays = 0
        self.fail_gemms_in_capture = 0               # a cuBLAS status GEMMs return while their stream captures

    # ---- memory ---------------------------------------------------------------
    def allocate(self, nbytes: int) -> np.ndarray:
        """Fresh device memory, refused while any stream captures (the capture is then invalid)."""
        for stream in self.streams:
            if stream.capture is not None:
                stream.invalidate("allocation during capture")
                raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: allocation during stream capture")
        memory = np.zeros(max(nbytes, 1), np.uint8)
        if nbytes <= GARBAGE_LIMIT:
            memory[:] = GARBAGE
        start = memory.ctypes.data
        self.allocations.append((start, start + nbytes, memory))
        return memory

    def on_device(self, address: int, nbytes: int) -> bool:
        return any(start <= address and address + nbytes <= end for start, end, _ in self.allocations)

    def check_device(self, address: int, nbytes: int, what: str) -> None:
        if not self.on_device(address, nbytes):
            raise CUDARuntimeError(f"cudaErrorInvalidValue: {what} [{address:#x}, +{nbytes}) is not device memory")

    def check_host(self, address: int, nbytes: int, what: str) -> None:
        if any(start < address + nbytes and address < end for start, end, _ in self.allocations):
            raise CUDARuntimeError(f"cudaErrorInvalidValue: {what} at {address:#x} is device memory, not host")

    # ---- streams and scheduling ----------------------------------------------
    def stream(self, ptr: int | None) -> Stream:
        for stream in self.streams:
            if stream.ptr == (ptr or 0):
                return stream
        raise CUDARuntimeError(f"cudaErrorInvalidResourceHandle: no stream {ptr}")

    def issue(self, stream: Stream, work: Callable[[], None], deps: list[tuple[Stream, int]] | None = None,
              what: str = "") -> None:
        """Queue work on a stream (or record it, while the stream captures), with the legacy default
        stream's implicit dependencies, then let the device run some queued work."""
        if what:
            self.issued_on.append((what, stream.ptr))
        if stream.capture is not None:
            stream.capture.append(work)
            return
        deps = list(deps or [])
        if stream is self.legacy:
            capturing = [s for s in self.streams if s.blocking and s.capture is not None]
            for other in capturing:
                other.invalidate("the legacy default stream joined a capturing blocking stream")
            if capturing:
                raise CUDARuntimeError("cudaErrorStreamCaptureImplicit: legacy stream work during a capture")
            deps += [(s, s.issued) for s in self.streams if s.blocking and s is not stream]
        elif stream.blocking:
            deps.append((self.legacy, self.legacy.issued))
        stream.queue.append(Op(work, deps))
        stream.issued += 1
        self.progress()

    def progress(self) -> None:
        """The device's own pace: run queued work while a seeded coin says so."""
        while self.rng.random() < self.eagerness and self.run_one():
            pass

    def run_one(self) -> bool:
        """Run the head of a randomly chosen stream whose head may run; False if none may."""
        ready = [s for s in self.streams if s.queue and all(d.completed >= n for d, n in s.queue[0].deps)]
        if not ready:
            return False
        if self.favour and self.rng.random() < 0.9:
            stream = max(ready, key=lambda s: s.priority)
        else:
            stream = self.rng.choice(ready)
        stream.queue.popleft().work()
        stream.completed += 1
        return True

    def wait_until(self, done: Callable[[], bool], what: str) -> None:
        """The host blocks: the device runs work (any stream's, in a random order) until ``done``."""
        while not done():
            if not self.run_one():
                raise AssertionError(f"deadlock: {what} waits for work that can never run")


@dataclass(eq=False)
class Stream:
    """A CUDA stream: a queue of work, and what has been issued and run on it."""
    device: StandIn
    non_blocking: bool = False
    ptr: int | None = None
    queue: deque = field(default_factory=deque)
    issued: int = 0
    completed: int = 0
    capture: list[Callable[[], None]] | None = None
    capture_error: str | None = None
    priority: float = 0.0

    def __post_init__(self) -> None:
        self.priority = self.device.rng.random()
        if self.ptr is None:
            self.ptr = 0x5000 + 0x10 * len(self.device.streams)
        self.device.streams.append(self)

    @property
    def blocking(self) -> bool:
        return not self.non_blocking

    def __enter__(self) -> Stream:
        self.device.current.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.device.current.pop()

    def invalidate(self, why: str) -> None:
        if self.capture is not None and self.capture_error is None:
            self.capture_error = why

    def synchronize(self) -> None:
        if self.capture is not None:
            self.invalidate("synchronize during capture")
            raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: synchronizing a capturing stream")
        self.device.wait_until(lambda: self.completed == self.issued, f"stream {self.ptr:#x}")

    def wait_event(self, event: Event) -> None:
        """Later work on this stream waits for the event's last recorded work (none if never recorded)."""
        if self.capture is not None:
            raise NotImplementedError("the stand-in does not model cross-stream waits in a capture")
        if event.marks is not None:
            self.device.issue(self, lambda: None, [event.marks])

    def begin_capture(self, mode: Any = None) -> None:
        if self is self.device.legacy or self.capture is not None:
            raise CUDARuntimeError("cudaErrorIllegalState: capture on the legacy stream or twice")
        self.capture, self.capture_error = [], None

    def end_capture(self) -> Graph:
        if self.capture is None:
            raise CUDARuntimeError("cudaErrorIllegalState: the stream is not capturing")
        work, error = self.capture, self.capture_error
        self.capture = self.capture_error = None
        if error is not None:
            raise CUDARuntimeError(f"cudaErrorStreamCaptureInvalidated: {error}")
        return Graph(self.device, work)


class Event:
    """A CUDA event: the stream and the count of its ops that its last record covers."""

    def __init__(self, device: StandIn, disable_timing: bool = False):
        self.device = device
        self.marks: tuple[Stream, int] | None = None

    def record(self, stream: Stream | None = None) -> None:
        stream = stream or self.device.current[-1]
        if stream.capture is not None:
            raise NotImplementedError("the stand-in does not model events recorded in a capture")
        self.marks = (stream, stream.issued)
        self.device.progress()


class Graph:
    """A captured sequence of work: launching it issues that work, in order, on a stream."""

    def __init__(self, device: StandIn, work: list[Callable[[], None]]):
        self.device, self.work = device, work

    def launch(self, stream: Stream | None = None) -> None:
        stream = stream or self.device.current[-1]
        self.device.replays += 1
        for work in self.work:
            self.device.issue(stream, work)


class DeviceArray:
    """A CuPy array as far as the runtime and the tests look: a pointer into device memory."""

    def __init__(self, device: StandIn, shape: tuple[int, ...], dtype: Any):
        self.device, self.shape, self.dtype = device, shape, np.dtype(dtype)
        self.nbytes = int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize
        self.memory = device.allocate(self.nbytes)
        self.data = types.SimpleNamespace(ptr=self.memory.ctypes.data)
        self.__cuda_array_interface__ = {"shape": shape, "typestr": self.dtype.str, "data": (self.data.ptr, False),
                                         "version": 3}


class RawModule:
    """A compiled module: it hands out only the ``extern "C"`` kernels of its source, by name."""

    def __init__(self, device: StandIn, code: str, options: tuple = ()):
        from graphc.backends.cuda import emulator
        self._device, self._names = device, set(_KERNEL.findall(code))
        self._library = emulator.build(code)

    def get_function(self, name: str) -> Function:
        if name not in self._names:
            raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found ({name})")
        self._device.fetched.append(name)
        return Function(self._device, name, getattr(self._library, f"launch_{name}"))


class Function:
    """A kernel: a call issues it on the current stream (or ``stream=``) with its arguments frozen."""

    def __init__(self, device: StandIn, name: str, launcher: Callable[..., None]):
        self.device, self.name, self.launcher = device, name, launcher

    def __call__(self, grid: tuple, block: tuple, args: tuple, stream: Stream | None = None,
                 shared_mem: int = 0) -> None:
        values = []
        for arg in args:
            if isinstance(arg, np.uint64):  # a pointer: it must point into device memory
                self.device.check_device(int(arg), 0, f"kernel {self.name}'s pointer argument")
                values.append(ctypes.c_uint64(int(arg)))
            elif isinstance(arg, np.int64):
                values.append(ctypes.c_int64(int(arg)))
            else:
                raise TypeError(f"kernel {self.name}: argument {arg!r} is neither np.uint64 nor np.int64")
        table = (ctypes.c_void_p * max(len(values), 1))(*[ctypes.addressof(v) for v in values])
        blocks, threads, launcher = ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), self.launcher

        def run() -> None:
            launcher(blocks, threads, table)
        run.frozen = values  # type: ignore[attr-defined]  # the arguments live as long as the work
        self.device.issue(stream or self.device.current[-1], run, what=f"kernel {self.name}")


def _memcpy_async(device: StandIn, dst: int, src: int, nbytes: int, kind: int, stream_ptr: int) -> None:
    """cudaMemcpyAsync with its direction checked; host copies are refused while the stream captures."""
    stream = device.stream(stream_ptr)
    device.kinds.append(kind)
    if kind == H2D:
        device.check_device(dst, nbytes, "host→device destination")
        device.check_host(src, nbytes, "host→device source")
    elif kind == D2H:
        device.check_device(src, nbytes, "device→host source")
        device.check_host(dst, nbytes, "device→host destination")
    elif kind == D2D:
        device.check_device(dst, nbytes, "device→device destination")
        device.check_device(src, nbytes, "device→device source")
    else:
        raise CUDARuntimeError(f"cudaErrorInvalidMemcpyDirection: {kind}")
    if kind != D2D and stream.capture is not None:
        stream.invalidate("a copy between host and device during capture")
        raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: pageable host copy during capture")
    if kind == H2D:
        staged = ctypes.string_at(src, nbytes)  # the driver stages pageable memory before returning
        device.issue(stream, lambda: ctypes.memmove(dst, staged, nbytes), what="memcpy")
    else:
        device.issue(stream, lambda: ctypes.memmove(dst, src, nbytes), what="memcpy")


def _memset_async(device: StandIn, address: int, value: int, nbytes: int, stream_ptr: int) -> None:
    device.check_device(address, nbytes, "memset destination")
    device.issue(device.stream(stream_ptr), lambda: ctypes.memset(address, value, nbytes), what="memset")


def _device_count(device: StandIn) -> int:
    if device.driver_error is not None:
        raise CUDARuntimeError(device.driver_error)
    return device.devices


def _require_device(device: StandIn) -> None:
    """Without a device or a driver, every call that needs one fails as CuPy's would."""
    if device.driver_error is not None or device.devices == 0:
        raise CUDARuntimeError(device.driver_error or "cudaErrorNoDevice: no CUDA-capable device is detected")


def cupy_module(device: StandIn) -> types.ModuleType:
    """The parts of CuPy the runtime and the tests use, on this stand-in device."""
    cp = types.ModuleType("cupy")
    cp.uint8 = np.uint8

    def empty(shape: Any, dtype: Any = np.float32) -> DeviceArray:
        _require_device(device)
        return DeviceArray(device, tuple(np.atleast_1d(shape).tolist()), dtype)

    def zeros(shape: Any, dtype: Any = np.float32) -> DeviceArray:
        """CuPy zeroes on the current stream: the legacy default stream unless ``with stream:``."""
        array = empty(shape, dtype)
        _memset_async(device, array.data.ptr, 0, array.nbytes, device.current[-1].ptr)
        return array

    def asarray(host: np.ndarray) -> DeviceArray:
        host = np.ascontiguousarray(host)
        array = empty(host.shape, host.dtype)
        _memcpy_async(device, array.data.ptr, host.ctypes.data, host.nbytes, H2D, device.current[-1].ptr)
        return array

    cp.empty, cp.zeros, cp.asarray = empty, zeros, asarray
    cp.ascontiguousarray = lambda array: array

    def raw_module(code: str, options: tuple = (), **kwargs: Any) -> RawModule:
        _require_device(device)
        return RawModule(device, code, options)
    cp.RawModule = raw_module

    class CupyStream(Stream):
        def __init__(self, non_blocking: bool = False):
            _require_device(device)
            super().__init__(device, non_blocking)
    CupyStream.null = device.legacy
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: _device_count(device),
        memcpyAsync=lambda dst, src, n, kind, s: _memcpy_async(device, dst, src, n, kind, s),
        memsetAsync=lambda address, value, n, s: _memset_async(device, address, value, n, s),
        CUDARuntimeError=CUDARuntimeError)
    cp.cuda = types.SimpleNamespace(Stream=CupyStream, Event=lambda disable_timing=False: Event(device),
                                    get_current_stream=lambda: device.current[-1], runtime=runtime)
    return cp


class Cublas:
    """libcublas's entry points the runtime calls, column-major as cuBLAS defines them, on a handle's stream."""

    def __init__(self, device: StandIn):
        self.device = device
        self.handles: dict[int, dict[str, Any]] = {}

    def cublasCreate_v2(self, handle: Any) -> int:
        key = 0x7000 + len(self.handles) + 1
        handle._obj.value = key
        self.handles[key] = {"stream": self.device.legacy, "workspace": None, "math": 0}
        return 0

    def _handle(self, handle: ctypes.c_void_p) -> dict[str, Any]:
        assert handle.value in self.handles, "a cuBLAS handle never created, or destroyed"
        return self.handles[handle.value]

    def cublasSetStream_v2(self, handle: ctypes.c_void_p, stream: ctypes.c_void_p) -> int:
        self._handle(handle)["stream"] = self.device.stream(stream.value)
        return 0

    def cublasSetWorkspace_v2(self, handle: ctypes.c_void_p, workspace: ctypes.c_void_p, size: ctypes.c_size_t) -> int:
        self.device.check_device(workspace.value or 0, size.value, "cuBLAS workspace")
        self._handle(handle)["workspace"] = (workspace.value, size.value)
        return 0

    def cublasSetMathMode(self, handle: ctypes.c_void_p, mode: int) -> int:
        self._handle(handle)["math"] = mode
        return 0

    def cublasDestroy_v2(self, handle: ctypes.c_void_p) -> int:
        del self.handles[handle.value]
        return 0

    def cublasSgemm_v2(self, *args: Any) -> int:
        return self._gemm(ctypes.c_float, *args)

    def cublasDgemm_v2(self, *args: Any) -> int:
        return self._gemm(ctypes.c_double, *args)

    def _gemm(self, scalar: type, handle: ctypes.c_void_p, trans_a: int, trans_b: int, m: int, n: int, k: int,
              alpha: Any, a: ctypes.c_void_p, lda: int, b: ctypes.c_void_p, ldb: int, beta: Any,
              c: ctypes.c_void_p, ldc: int) -> int:
        state = self._handle(handle)
        stream = state["stream"]
        if stream.capture is not None:
            if self.device.fail_gemms_in_capture:
                return self.device.fail_gemms_in_capture
            if state["workspace"] is None:  # cuBLAS would allocate one, which a capture refuses
                stream.invalidate("cuBLAS allocated its workspace during capture")
                return 13
        assert state["math"] == 0, "cuBLAS's default math mode: no TF32"
        rows_a, rows_b = (k if trans_a else m), (n if trans_b else k)
        if min(m, n, k) < 0 or min(lda, ldb, ldc) < 1 or lda < rows_a or ldb < rows_b or ldc < m:
            return 7  # CUBLAS_STATUS_INVALID_VALUE
        if m == 0 or n == 0:
            return 0  # nothing to compute: cuBLAS returns at once
        one, zero = alpha._obj.value, beta._obj.value  # host pointer mode: read at the call
        matrices = [(a.value, rows_a, m if trans_a else k, lda), (b.value, rows_b, k if trans_b else n, ldb),
                    (c.value, m, n, ldc)]
        item = ctypes.sizeof(scalar)
        for address, rows, cols, ld in matrices if k else matrices[2:]:
            self.device.check_device(address, ((cols - 1) * ld + rows) * item, "GEMM matrix")
        dtype = np.float32 if scalar is ctypes.c_float else np.float64

        def matrix(address: int, rows: int, cols: int, ld: int) -> np.ndarray:
            buffer = (ctypes.c_char * (((cols - 1) * ld + rows) * item)).from_address(address)
            return np.ndarray((rows, cols), dtype, buffer=buffer, strides=(item, item * ld))

        def run() -> None:
            out = matrix(*matrices[2])
            if k == 0:  # an empty inner size: C = beta·C, and beta is 0
                out[...] = 0
                return
            op_a = matrix(*matrices[0]).T if trans_a else matrix(*matrices[0])
            op_b = matrix(*matrices[1]).T if trans_b else matrix(*matrices[1])
            out[...] = one * (op_a @ op_b) + (zero * out if zero else 0)
        self.device.issue(stream, run, what="gemm")
        return 0


def install(monkeypatch: Any, seed: int, **options: Any) -> StandIn:
    """Put the stand-in in place of ``cupy`` and libcublas for one test, and start from an empty
    compile cache (so every program binds a fresh device here).  ``options`` go to :class:`StandIn`."""
    import graphc as gc
    from graphc.backends.cuda import cublas
    device = StandIn(seed, **options)
    monkeypatch.setitem(sys.modules, "cupy", cupy_module(device))
    monkeypatch.setattr(cublas, "_library", lambda: Cublas(device))
    gc.clear_cache()
    return device
