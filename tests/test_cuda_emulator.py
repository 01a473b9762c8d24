"""The CUDA program's meaning, checked on the CPU by the emulator against the NumPy backend.

The emulator runs the very program the GPU runs (its launches, cuBLAS GEMM flags,
copies and arena layout); only the kernels are compiled for the host.  Random
graphs have every node as an output, so every kernel, view and GEMM mapping is
compared, and run twice with different batch sizes, so every step is bound
again; the MLP trains 200 steps on both backends.  Each Hypothesis example
draws several graphs and compiles their kernels as one library, which keeps the
C++ compiler runs few.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc import nn, optim
from graphc.backends.cuda import emulator
from graphc.backends.cuda.kernels import PRELUDE
from graphc.errors import GraphcError
from graphc.ir.graph import toposort
from graphc.testing.strategies import RandomGraph, graphs
from test_random_graphs import TOLERANCE, assert_same_values

pytestmark = pytest.mark.skipif(emulator.host_compiler() is None, reason="no C++ compiler for the emulator")

GRAPHS_PER_EXAMPLE = 6
EXAMPLES = 4
RTOL_F64 = 1e-9      # libm and NumPy may differ in a transcendental's last bit; sums run in another order
RTOL_F32 = 2e-4      # float32 after 200 training steps


def assert_close(actual: Sequence[object], expected: Sequence[object], rtol: float, atol: float = 0.0) -> None:
    assert len(actual) == len(expected)
    for i, (value, reference) in enumerate(zip(actual, expected)):
        value, reference = np.asarray(value), np.asarray(reference)
        assert (value.shape, value.dtype) == (reference.shape, reference.dtype), f"output {i}"
        if reference.dtype.kind == "f":
            np.testing.assert_allclose(value, reference, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"output {i}")
        else:
            np.testing.assert_array_equal(value, reference, err_msg=f"output {i}")


def _load(step: object, variables: dict[str, np.ndarray], graph: RandomGraph) -> None:
    step.state.load({name: value.copy() for name, value in variables.items()})
    for p in graph.params:  # first call: the store makes them, then takes the drawn values
        step.state.ensure(p)[...] = variables[p.name]


@pytest.mark.parametrize("passes, dtype", [(True, "float64"), (False, "float64"), (True, "float32")],
                         ids=["planned", "unplanned", "float32"])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_emulated_random_graphs_agree_with_the_numpy_backend(passes: bool, dtype: str, data: st.DataObject) -> None:
    """Every node an output, parameters in the store, and two calls of different batch sizes."""
    batch = [data.draw(graphs(params=True, batch=True, max_ops=10, dtype=dtype)) for _ in range(GRAPHS_PER_EXAMPLE)]
    pairs = []
    for i, graph in enumerate(batch):
        outputs = [graph.output, *graph.nodes]
        cuda = gc.compile(outputs, backend="cuda-emulator", passes=passes, name=f"g{i}")
        pairs.append((cuda, gc.compile(outputs, passes=passes), graph))
    emulator.preload([cuda.generated.kernels for cuda, _, _ in pairs])
    for cuda, reference, graph in pairs:
        # A float64 graph may round through float32 (a cast there and back): a sum of those float32
        # values is NumPy's pairwise float32 sum on the CPU and a double accumulation on the GPU.
        inner = "float32" if any(n.dtype == "float32" for n in toposort(graph.outputs + graph.nodes)) else dtype
        for feeds, variables in graph.calls:
            _load(cuda, variables, graph)
            _load(reference, variables, graph)
            assert_same_values(cuda(**feeds), reference(**feeds), TOLERANCE[inner])


def _mlp_step(backend: str, batch_norm: bool = False) -> tuple:
    x = gc.input("x", (None, 784))
    y = gc.input("y", (None,), dtype="int32")
    layers = [nn.Dense(256, init="he"), nn.relu, nn.Dense(128, init="he"), nn.relu, nn.Dense(10, init="he")]
    if batch_norm:
        layers.insert(1, nn.BatchNorm())
    net = nn.Sequential(*layers)
    loss = gc.softmax_cross_entropy(net(x), y)
    # Before batch norm, a bias's gradient is rounding noise that Adam would scale up to full
    # steps, different on each backend; plain SGD keeps that noise as small as it is.
    optimizer = optim.SGD(0.05) if batch_norm else optim.Adam(1e-3)
    step = gc.compile(loss, optimizer=optimizer, backend=backend)
    predict = gc.compile(net(x, training=False), state=step.state, backend=backend)
    return step, predict


def _teacher_batches(steps: int, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inputs and the labels a fixed random linear teacher gives them: a task the MLP can learn."""
    rng = np.random.default_rng(7)
    teacher = rng.standard_normal((784, 10)).astype(np.float32)
    out = []
    for _ in range(steps):
        x = rng.standard_normal((batch, 784)).astype(np.float32)
        out.append((x, np.argmax(x @ teacher, axis=1).astype(np.int32)))
    return out


def test_mlp_trains_200_steps_like_the_numpy_backend() -> None:
    batches = _teacher_batches(200, 32)
    (cuda, cuda_predict), (numpy_step, numpy_predict) = _mlp_step("cuda-emulator"), _mlp_step("numpy")
    cuda_losses = [float(cuda(x=x, y=y)) for x, y in batches]
    numpy_losses = [float(numpy_step(x=x, y=y)) for x, y in batches]
    assert numpy_losses[-1] < 0.5 * numpy_losses[0]  # it learned something: the comparison is not of noise
    np.testing.assert_allclose(cuda_losses, numpy_losses, rtol=RTOL_F32, atol=1e-5)
    for name, value in numpy_step.state.values.items():
        np.testing.assert_allclose(cuda.state.values[name], value, rtol=RTOL_F32, atol=1e-5, err_msg=name)
    x = batches[0][0]
    np.testing.assert_allclose(cuda_predict(x=x), numpy_predict(x=x), rtol=RTOL_F32, atol=1e-4)


def test_batch_norm_statistics_and_a_shared_inference_step() -> None:
    """Running statistics are variables the step updates; the inference step must see the newest."""
    batches = _teacher_batches(20, 16)
    (cuda, cuda_predict), (numpy_step, numpy_predict) = _mlp_step("cuda-emulator", True), _mlp_step("numpy", True)
    for x, y in batches:
        np.testing.assert_allclose(cuda(x=x, y=y), numpy_step(x=x, y=y), rtol=RTOL_F32)
        np.testing.assert_allclose(cuda_predict(x=x), numpy_predict(x=x), rtol=RTOL_F32, atol=1e-4)
    for name, value in numpy_step.state.values.items():
        np.testing.assert_allclose(cuda.state.values[name], value, rtol=RTOL_F32, atol=1e-5, err_msg=name)


def test_a_loaded_checkpoint_reaches_the_device() -> None:
    """Values written into the store between steps (a checkpoint load) replace the device's copies."""
    cuda, _ = _mlp_step("cuda-emulator")
    x, y = _teacher_batches(1, 8)[0]
    cuda(x=x, y=y)
    first = {name: value.copy() for name, value in cuda.state.values.items()}
    cuda(x=x, y=y)
    cuda.state.load(first)
    again = cuda(x=x, y=y)
    fresh, _ = _mlp_step("cuda-emulator")
    fresh.state.load(first)
    assert float(again) == float(fresh(x=x, y=y))


# ---------------------------------------------------------------- random numbers

def test_philox_matches_the_published_known_answers() -> None:
    """Random123's known-answer vectors for Philox4x32-10."""
    kernel = PRELUDE + r'''
extern "C" __global__ void kat(const long long n, const uint32_t *in, uint32_t *out) {
    uint32_t c[4] = {in[0], in[1], in[2], in[3]};
    graphc_philox(c, in[4], in[5]);
    for (int k = 0; k < 4; k++) out[k] = c[k];
}
'''
    library = emulator.build(kernel)
    launch = library.launch_kat
    cases = [([0, 0, 0, 0, 0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
             ([0xFFFFFFFF] * 6, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
             ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344, 0xA4093822, 0x299F31D0],
              [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1])]
    import ctypes
    for given_words, expected in cases:
        given_array = np.array(given_words, np.uint32)
        out = np.zeros(4, np.uint32)
        values = [ctypes.c_longlong(1), ctypes.c_void_p(given_array.ctypes.data), ctypes.c_void_p(out.ctypes.data)]
        table = (ctypes.c_void_p * 3)(*[ctypes.addressof(v) for v in values])
        launch(ctypes.c_uint(1), ctypes.c_uint(1), table)
        assert out.tolist() == expected


def test_noise_is_fresh_each_step_and_follows_its_distribution() -> None:
    x = gc.input("x", (4096, 4))
    draws = gc.compile({"normal": x + gc.normal((4096, 4)), "uniform": gc.uniform((4096, 4))},
                       backend="cuda-emulator")
    zeros = np.zeros((4096, 4), np.float32)
    first, second = draws(x=zeros), draws(x=zeros)
    assert not np.array_equal(first["normal"], second["normal"])
    assert not np.array_equal(first["uniform"], second["uniform"])
    for sample in (first, second):
        assert abs(sample["normal"].mean()) < 0.05 and abs(sample["normal"].std() - 1) < 0.05
        assert sample["uniform"].min() >= 0 and sample["uniform"].max() < 1
        assert abs(sample["uniform"].mean() - 0.5) < 0.02


# ---------------------------------------------------------------- without a GPU

def test_cupy_backend_fails_clearly_without_a_gpu() -> None:
    try:
        import cupy
        has_device = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_device = False
    if has_device:
        pytest.skip("a CUDA device is present")
    x = gc.input("x", (None, 3))
    step = gc.compile(gc.relu(x), backend="cupy")
    assert "extern \"C\" __global__" in step.show("kernels")
    with pytest.raises(GraphcError, match="cupy backend (needs CuPy|found no CUDA device)"):
        step(x=np.ones((2, 3), np.float32))


def test_a_reshape_of_a_transposed_value_is_copied_into_its_buffer() -> None:
    """The memory plan gives such a reshape a buffer of its own; the kernel fills it from the strided view."""
    x = gc.input("x", (3, 4), "float64")
    outputs = [gc.reshape(gc.transpose(gc.exp(x)), (12,)) * 2.0, gc.reshape(gc.transpose(x), (2, 6))]
    values = {"x": np.arange(12.0).reshape(3, 4)}
    assert_close(gc.compile(outputs, backend="cuda-emulator")(**values), gc.evaluate(outputs, values), RTOL_F64)


# ---------------------------------------------------------------- rows in one kernel

def test_softmax_cross_entropy_forward_is_one_kernel() -> None:
    from graphc.backends.cuda.device_program import Launch
    step, _ = _mlp_step("cuda-emulator")
    launches = [s for s in step.generated.device_program.steps if isinstance(s, Launch)]
    ops_of = [{n.op for n in launch.nodes} for launch in launches]
    assert any({"max", "exp", "sum", "log", "one_hot"} <= ops for ops in ops_of), ops_of
    assert len(launches) <= 12  # was 21 with a kernel per reduction


@pytest.mark.parametrize("columns", [1, 3, 10])
def test_row_kernels_agree_with_the_numpy_backend(columns: int) -> None:
    """Softmax, log-softmax, logsumexp and a masked max over rows, with broadcast operands and int labels."""
    x = gc.input("x", (None, columns), "float64")
    bias = gc.input("bias", (columns,), "float64")
    labels = gc.input("labels", (None,), "int32")
    z = x * 2.0 + bias
    outputs = [gc.softmax(z, axis=1), gc.log_softmax(z, axis=1), gc.logsumexp(z, axis=1, keepdims=True),
               gc.max(gc.where(z > 0.0, z, -z), axis=1), gc.sum(gc.one_hot(labels, columns, "float64") * z, axis=1),
               gc.sum(gc.cast(z > 0.5, "int32"), axis=1)]
    rng = np.random.default_rng(columns)
    values = {"x": rng.standard_normal((9, columns)), "bias": rng.standard_normal(columns),
              "labels": rng.integers(0, columns, 9).astype(np.int32)}
    emulated = gc.compile(outputs, backend="cuda-emulator")
    assert any("rows" in name for name in emulated.generated.device_program.kernel_names) or columns == 1
    assert_close(emulated(**values), gc.compile(outputs)(**values), RTOL_F64, atol=1e-12)


def test_a_label_out_of_range_is_refused_before_the_step_runs() -> None:
    from graphc.errors import FeedError
    step, _ = _mlp_step("cuda-emulator")
    x, y = _teacher_batches(1, 4)[0]
    y[2] = 10
    with pytest.raises(FeedError, match="label 10 in row 2 is out of range for 10 classes"):
        step(x=x, y=y)


# ---------------------------------------------------------------- byte order

@pytest.mark.parametrize("backend", ["cuda-emulator", "numpy"])
def test_big_endian_feeds_give_the_native_results(backend: str) -> None:
    """The device reads raw bytes: feeds in the other byte order are converted on the way in."""
    (step, predict), (twin, _) = _mlp_step(backend, batch_norm=True), _mlp_step(backend, batch_norm=True)
    for x, y in _teacher_batches(2, 8):
        assert float(twin(x=x.astype(">f4"), y=y.astype(">i4"))) == float(step(x=x, y=y))
    np.testing.assert_array_equal(predict(x=x.astype(">f4")), predict(x=x))


@pytest.mark.parametrize("backend", ["cuda-emulator", "numpy"])
def test_big_endian_values_load_into_the_store(backend: str) -> None:
    step, _ = _mlp_step(backend, batch_norm=True)
    x, y = _teacher_batches(1, 8)[0]
    step(x=x, y=y)  # the store holds the variables from the first call on
    start = {name: value.copy() for name, value in step.state.values.items()}
    native = float(step(x=x, y=y))
    step.state.load({name: value.astype(value.dtype.newbyteorder(">")) for name, value in start.items()})
    assert float(step(x=x, y=y)) == native


def test_launch_at_one_batch_size_then_a_call_at_another_keeps_every_update() -> None:
    """A launch leaves the newest variables on the device; binding another batch size once uploaded
    the stale host copy over them (a loss of 2.985 where the NumPy backend gives 3.578)."""
    (launched, _), (called, _) = _mlp_step("cuda-emulator"), _mlp_step("numpy")
    batches = _teacher_batches(3, 8)
    for x, y in batches[:2]:
        launched.launch(x=x, y=y)
        called(x=x, y=y)
    x, y = batches[2]
    np.testing.assert_allclose(float(launched(x=x[:5], y=y[:5])), float(called(x=x[:5], y=y[:5])), rtol=RTOL_F32)
    for name, value in called.state.values.items():
        np.testing.assert_allclose(launched.state.values[name], value, rtol=RTOL_F32, atol=1e-5, err_msg=name)


def test_a_numpy_step_sharing_the_store_sees_what_a_device_step_launched() -> None:
    step, _ = _mlp_step("cuda-emulator")
    x, y = _teacher_batches(1, 8)[0]
    step(x=x, y=y)
    before = {name: value.copy() for name, value in step.state.values.items()}
    step.launch(x=x, y=y)
    x_in = gc.input("x", (None, 784))
    probe = gc.compile(gc.sum(x_in) * 0.0 + gc.sum(next(p for p in _params(step) if p.name == "dense0.W")),
                       state=step.state)
    assert float(probe(x=x)) != float(np.sum(before["dense0.W"]))  # the launched update, fetched first
    assert step.state.ahead is None


def _params(step: gc.CompiledStep) -> list[gc.Node]:
    return [v for v in step.program.variables() if v.op == "param"]


def test_the_emulator_rounds_as_the_gpu_does_not_as_numpy() -> None:
    """Multiply-adds contracted into one FMA (NVRTC's default) and float32 subnormals flushed (CuPy's
    -ftz=true): the emulator must show these differences from NumPy, so the tests' tolerances allow them."""
    a, b, c = (gc.input(name, (2,), "float32") for name in "abc")
    step = gc.compile([a * b + c, a * 0.25], backend="cuda-emulator")
    e = np.float32(1 + 2 ** -13)
    tiny = np.finfo(np.float32).tiny
    fused, scaled = step(a=np.array([e, tiny], np.float32), b=np.array([e, 1], np.float32),
                         c=np.array([-(1 + 2 ** -12), 0], np.float32))
    assert fused[0] == np.float32(2 ** -26)  # (1 + 2⁻¹³)² − (1 + 2⁻¹²), rounded once: NumPy gives 0
    assert scaled[1] == 0.0                  # a subnormal result flushed: NumPy gives 2.9e-39


def test_the_gpu_checks_stages_run_on_the_emulator(tmp_path: Path) -> None:
    """benchmarks/gpu_check.py is run on a GPU only now and then, for minutes: its stages must work
    before that, so they run here on the emulator (the ones that need no GPU) and write their JSON."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
    for stage in ("environment", "mlp", "noise"):
        result = subprocess.run([sys.executable, str(script), stage, "--out", str(tmp_path), "--backend",
                                 "cuda-emulator", "--batches", "7", "32"], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        record = json.loads((tmp_path / f"{stage}.json").read_text())
        assert record["ok"] and record["stage"] == stage
    assert json.loads((tmp_path / "noise.json").read_text())["replay_equals_eager"]
    assert "batch 32, graphs off" in json.loads((tmp_path / "mlp.json").read_text())["max_relative_difference"]
