"""Every synchronization call of the GPU runtime is needed, and the stand-in can tell.

Each event record, event wait, stream wait and synchronize in ``cupy_device.py`` and
``binding.py`` (found in their source, so a new one is covered too) is deleted in turn, in a copy
of the module swapped in for the real one; a short run on the adversarial stand-in of
``tests/cuda_standin.py`` must then fail — a wrong loss or variable, or a CUDA error — within
``MAX_SEEDS`` seeded interleavings.  A run the stand-in cannot fail would be a synchronization
that CUDA does not need, or a gap in the stand-in.
"""
from __future__ import annotations

import ast
import functools
import inspect
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from cuda_standin import install

import graphc as gc
from graphc import nn, optim
from graphc.backends.cuda import binding, cupy_device, emulator

pytestmark = pytest.mark.skipif(emulator.host_compiler() is None, reason="no C++ compiler for the emulator")

MAX_SEEDS = 200
SYNCHRONIZING = {"record", "wait_event", "wait_stream", "synchronize"}


def _sync_calls(module: types.ModuleType) -> list[tuple[int, int, str]]:
    """(first line, last line, "function: text") of each statement that calls a synchronizing method."""
    source = inspect.getsource(module)
    calls = set()
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) \
                    and isinstance(node.value.func, ast.Attribute) and node.value.func.attr in SYNCHRONIZING:
                text = f"{function.name}: {ast.get_source_segment(source, node)}"
                calls.add((node.lineno, node.end_lineno or node.lineno, text))
    return sorted(calls)


def _mutant(module: types.ModuleType, first: int, last: int) -> types.ModuleType:
    """The module with lines first..last replaced by ``pass`` (a copy: the real module is untouched)."""
    lines = inspect.getsource(module).splitlines(keepends=True)
    indent = lines[first - 1][:len(lines[first - 1]) - len(lines[first - 1].lstrip())]
    lines[first - 1:last] = [f"{indent}pass\n"] + ["\n"] * (last - first)
    mutant = types.ModuleType(module.__name__)
    mutant.__file__ = module.__file__
    exec(compile("".join(lines), f"{module.__file__} (line {first} deleted)", "exec"), mutant.__dict__)
    return mutant


def _swap_in(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType, mutant: types.ModuleType) -> None:
    """Every graphc reference to the module's classes and functions now finds the mutant's."""
    own = {name: value for name, value in vars(module).items()
           if getattr(value, "__module__", None) == module.__name__ and callable(value)}
    for holder in [m for name, m in sys.modules.items() if name.startswith("graphc") and m is not None]:
        for name, value in list(vars(holder).items()):
            if name in own and value is own[name]:
                monkeypatch.setattr(holder, name, vars(mutant)[name])


def _model(backend: str) -> Any:
    x = gc.input("x", (None, 12))
    y = gc.input("y", (None,), dtype="int32")
    net = nn.Sequential(nn.Dense(16, init="he"), nn.relu, nn.Dense(4, init="he"))
    return gc.compile(gc.softmax_cross_entropy(net(x), y), optim.Adam(1e-2), backend=backend)


def _batches() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [(rng.standard_normal((6, 12)).astype(np.float32), rng.integers(0, 4, 6).astype(np.int32))
            for _ in range(4)]


@functools.cache
def _reference() -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    cpu = _model("numpy")
    losses = [cpu(x=x, y=y) for x, y in _batches()]
    return losses, {name: np.copy(value) for name, value in cpu.state.values.items()}


def _run(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Two launches from inputs on the caller's stream (which overwrites them right after), a call
    from such inputs and a call from host arrays: the losses and variables must be NumPy's."""
    install(monkeypatch, seed)
    import cupy
    gpu = _model("cupy")
    losses, state = _reference()
    batches = _batches()
    for x, y in batches[:2]:
        on_device = cupy.asarray(x), cupy.asarray(y)
        gpu.launch(x=on_device[0], y=on_device[1])
        for array in on_device:
            cupy.cuda.runtime.memsetAsync(array.data.ptr, 0, array.nbytes, 0)
    (x, y), (x_last, y_last) = batches[2:]
    np.testing.assert_allclose(gpu(x=cupy.asarray(x), y=cupy.asarray(y)), losses[2], rtol=1e-4)
    np.testing.assert_allclose(gpu(x=x_last, y=y_last), losses[3], rtol=1e-4)
    for name, value in state.items():
        np.testing.assert_allclose(gpu.state.values[name], value, rtol=1e-4, atol=1e-6, err_msg=name)


def _seeds_until_failure(monkeypatch: pytest.MonkeyPatch) -> int | None:
    """How many seeds the run took to fail (None: it passed all ``MAX_SEEDS``)."""
    for seed in range(MAX_SEEDS):
        with monkeypatch.context() as each:
            try:
                _run(each, seed)
            except Exception:
                return seed + 1
    return None


def _cases() -> Iterator[Any]:
    for module in (cupy_device, binding):
        name = module.__name__.rsplit(".", 1)[1]
        for first, last, text in _sync_calls(module):
            yield pytest.param(module, first, last, id=f"{name}:{first}: {text}")


def test_the_runtime_has_the_synchronization_calls_this_file_deletes() -> None:
    texts = [text for module in (cupy_device, binding) for _, _, text in _sync_calls(module)]
    assert any("record" in t for t in texts) and any("wait_event" in t for t in texts)
    assert any("synchronize" in t for t in texts), texts


def test_the_run_passes_on_the_runtime_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    for seed in range(10):
        with monkeypatch.context() as each:
            _run(each, seed)


@pytest.mark.parametrize("module, first, last", _cases())
def test_deleting_a_synchronization_call_fails_the_run(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType,
                                                       first: int, last: int) -> None:
    _swap_in(monkeypatch, module, _mutant(module, first, last))
    seeds = _seeds_until_failure(monkeypatch)
    assert seeds is not None, f"line {first} of {module.__name__} deleted, and {MAX_SEEDS} interleavings passed"


# ---- the stand-in's own model of CUDA -----------------------------------------------------------
def _orders(monkeypatch: pytest.MonkeyPatch, non_blocking: bool, seeds: int = 40) -> set[tuple[str, ...]]:
    """The orders in which a legacy-stream memset and a later memset on another stream ran."""
    orders = set()
    for seed in range(seeds):
        with monkeypatch.context() as each:
            device = install(each, seed)
            import cupy
            array, ran = cupy.empty(4, np.uint8), []
            stream = cupy.cuda.Stream(non_blocking=non_blocking)
            device.issue(device.legacy, lambda: ran.append("legacy"))
            device.issue(stream, lambda: ran.append("stream"))
            cupy.cuda.runtime.memsetAsync(array.data.ptr, 0, 4, stream.ptr)
            stream.synchronize()
            device.legacy.synchronize()
            orders.add(tuple(ran))
    return orders


def test_a_blocking_stream_waits_for_the_legacy_default_stream_and_a_non_blocking_one_does_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert _orders(monkeypatch, non_blocking=False) == {("legacy", "stream")}
    assert _orders(monkeypatch, non_blocking=True) == {("legacy", "stream"), ("stream", "legacy")}


def test_a_copy_to_the_host_lands_when_its_stream_is_synchronized(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, 0, eagerness=0.0)
    import cupy
    stream = cupy.cuda.Stream(non_blocking=True)
    source, host = cupy.asarray(np.arange(4, dtype=np.float32)), np.zeros(4, np.float32)
    cupy.cuda.Stream.null.synchronize()  # the upload ran on the legacy stream, which ``stream`` does not wait for
    cupy.cuda.runtime.memcpyAsync(host.ctypes.data, source.data.ptr, 16, 2, stream.ptr)
    assert not host.any()
    stream.synchronize()
    np.testing.assert_array_equal(host, np.arange(4))


def test_a_copy_in_the_wrong_direction_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, 0)
    import cupy
    array, host = cupy.empty(4, np.float32), np.zeros(4, np.float32)
    with pytest.raises(RuntimeError, match="cudaErrorInvalidValue"):
        cupy.cuda.runtime.memcpyAsync(host.ctypes.data, array.data.ptr, 16, 1, 0)


def test_a_capture_refuses_host_copies_and_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, 0)
    import cupy
    stream, host = cupy.cuda.Stream(non_blocking=True), np.zeros(4, np.float32)
    array = cupy.empty(4, np.float32)
    for refused in (lambda: cupy.empty(4, np.float32),
                    lambda: cupy.cuda.runtime.memcpyAsync(array.data.ptr, host.ctypes.data, 16, 1, stream.ptr)):
        stream.begin_capture()
        with pytest.raises(RuntimeError, match="cudaErrorStreamCaptureUnsupported"):
            refused()
        with pytest.raises(RuntimeError, match="cudaErrorStreamCaptureInvalidated"):
            stream.end_capture()


def test_a_module_hands_out_only_the_kernels_of_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, 0)
    import cupy
    module = cupy.RawModule(code='extern "C" __global__ void only(float *x) { x[threadIdx.x] = 1.0f; }')
    assert module.get_function("only")
    with pytest.raises(RuntimeError, match="CUDA_ERROR_NOT_FOUND"):
        module.get_function("graphc_rng_advance")
