"""No one-element kernels, and reductions by a block per output, checked on the emulator against NumPy.

One-element values (Adam's step counter and bias corrections, divisions by N)
are computed inline by the kernels that read them and the step's one-element
results and new variable values by one scalar kernel; reductions of many
elements outside the GEMM against ones are a block per output combining by warp
shuffles and a barrier, which the emulator runs as cooperating fibers.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

import graphc as gc
from graphc import backends, nn, optim
from graphc.backends.cuda import emulator
from graphc.backends.cuda.device_program import Copy, Launch, Size
from graphc.backends.cuda.kernels import BLOCK, PRELUDE
from graphc.compiler import pipeline
from graphc.errors import GraphcError
from graphc.ir.program import Program
from graphc.runtime.store import Store

pytestmark = pytest.mark.skipif(emulator.host_compiler() is None, reason="no C++ compiler for the emulator")


def _mlp_adam(backend: str) -> gc.CompiledStep:
    """examples/mlp.py's network with softmax cross-entropy and Adam, as ``graphc train`` builds it."""
    x = gc.input("x", (None, 784))
    y = gc.input("y", (None,), dtype="int32")
    net = nn.Sequential(nn.Dense(256, init="he"), nn.relu, nn.Dense(128, init="he"), nn.relu,
                        nn.Dense(10, init="he"))
    return gc.compile(gc.softmax_cross_entropy(net(x), y), optimizer=optim.Adam(1e-3), backend=backend)


# ---------------------------------------------------------------- one-element values

def test_the_mlp_adam_step_has_one_scalar_kernel_and_no_other_one_element_step() -> None:
    steps = _mlp_adam("cupy").generated.device_program.steps
    launches = [s for s in steps if isinstance(s, Launch)]
    single = [s for s in launches if s.threads == Size()]
    assert [s.kernel.rsplit("_", 1)[-1] for s in single] == ["scalars"], [s.note for s in single]
    assert not [s for s in steps if isinstance(s, Copy) and s.count == Size()]
    assert len(launches) == 8  # 12 launches and a one-element copy before


def test_the_mlp_adam_step_on_the_emulator_matches_numpy_over_steps() -> None:
    """Both stores draw the same initial weights (the same seed); the inline bias corrections and the
    scalar kernel's new step counter keep the two in step."""
    rng = np.random.default_rng(3)
    batches = [(rng.standard_normal((16, 784)).astype(np.float32), rng.integers(0, 10, 16).astype(np.int32))
               for _ in range(4)]
    device, host = _mlp_adam("cuda-emulator"), _mlp_adam("numpy")
    for x, y in batches:
        np.testing.assert_allclose(device(x=x, y=y), host(x=x, y=y), rtol=2e-5)
    for name, value in host.state.values.items():
        np.testing.assert_allclose(device.state.values[name], value, rtol=2e-4, atol=1e-6, err_msg=name)


def _scalar(name: str, start: float) -> gc.Node:
    return gc.state(name, (), init=lambda rng, shape, dtype: np.full(shape, start, dtype), dtype="float64")


def test_scalar_updates_that_read_each_other_see_the_old_values() -> None:
    """a' = a + b, b' = a * b and a result of both, all one element: one scalar kernel stores them."""
    for backend in ("cuda-emulator", "numpy"):
        a, b = _scalar("a", 2.0), _scalar("b", 3.0)
        x = gc.input("x", (3,), "float64")
        store = Store(0)
        step = pipeline.build(Program("p", {"out": gc.sum(x * (a - b)) + a / b}, {a: a + b, b: a * b}),
                              store, None, backends.get(backend))
        old_a, old_b = 2.0, 3.0
        for _ in range(3):
            np.testing.assert_allclose(step(x=np.arange(3.0)), 3.0 * (old_a - old_b) + old_a / old_b, err_msg=backend)
            old_a, old_b = old_a + old_b, old_a * old_b
            np.testing.assert_array_equal(store.values["a"], old_a, err_msg=backend)
            np.testing.assert_array_equal(store.values["b"], old_b, err_msg=backend)


def test_a_scalar_read_from_memory_is_stored_by_its_own_kernel() -> None:
    """A GEMM reads its operands from memory: a one-element value it multiplies by is stored first."""
    x = gc.input("x", (None, 1), "float64")
    s = gc.reshape(gc.exp(gc.numel(x) * 0.5) + 1.0, (1, 1))
    outputs = [x @ s, gc.sum(x) / gc.numel(x)]
    device = gc.compile(outputs, backend="cuda-emulator")
    values = {"x": np.arange(5.0).reshape(5, 1)}
    for got, want in zip(device(**values), gc.compile(outputs)(**values)):
        np.testing.assert_allclose(got, want, rtol=1e-12)


# ---------------------------------------------------------------- reductions by a block per output

def _block_kernels(step: gc.CompiledStep) -> list[Launch]:
    return [s for s in step.generated.device_program.steps if isinstance(s, Launch) and "a block per output" in s.note]


def _check(outputs: list, values: dict, rtol: float = 0.0) -> list:
    """The emulator's results (twice, bit for bit the same) against the NumPy backend's; each output
    by a block-per-output kernel."""
    device = gc.compile(outputs, backend="cuda-emulator")
    assert len(_block_kernels(device)) == len(outputs), device.show("source")
    first, second = device(**values), device(**values)
    for got, again, want in zip(first, second, gc.compile(outputs)(**values)):
        np.testing.assert_array_equal(got, again)
        if np.asarray(want).dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=rtol, equal_nan=True)
        else:
            np.testing.assert_array_equal(got, want)
    return first


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_max_over_middle_and_batch_axes_lets_nan_win(dtype: str) -> None:
    x = gc.input("x", (None, 6, 40), dtype)
    rng = np.random.default_rng(1)
    values = rng.standard_normal((37, 6, 40)).astype(dtype)
    values[5, 2, 11] = np.nan  # in one output of each reduction below
    values[:, 4, :] = -np.inf
    values[0, 4, 0] = -5.0
    got = _check([gc.max(x, axis=(0, 2)), gc.max(x, axis=0), gc.max(x)], {"x": values})
    assert np.isnan(got[0][2]) and not np.isnan(got[0][[0, 1, 3, 4, 5]]).any()
    assert got[0][4] == -5.0 and np.isnan(got[2])


def test_sums_over_middle_axes_and_strided_views() -> None:
    x = gc.input("x", (None, 40, 3), "float64")
    values = {"x": np.random.default_rng(2).standard_normal((9, 40, 3))}
    _check([gc.sum(x, axis=1), gc.sum(x, axis=(0, 2)), gc.sum(gc.transpose(x, (2, 0, 1)), axis=(1, 2))], values,
           rtol=1e-12)


def test_float32_block_sums_accumulate_in_double() -> None:
    """2^24 and then ones: in float32 one by one, or pairwise, the ones vanish; in double they count."""
    x = gc.input("x", (4, None, 3), "float32")
    values = np.ones((4, 300, 3), np.float32)
    values[:, 0, :] = 2.0 ** 24
    out = gc.compile(gc.sum(x, axis=1), backend="cuda-emulator")
    assert _block_kernels(out)
    np.testing.assert_array_equal(out(x=values), np.full((4, 3), np.float32(2.0 ** 24 + 299)))


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_integer_sums_and_maxima(dtype: str) -> None:
    x = gc.input("x", (None, 70, 2), dtype)
    values = np.random.default_rng(4).integers(-10 ** 6, 10 ** 6, (50, 70, 2)).astype(dtype)
    values[:, :, 1] = np.iinfo(dtype).min  # a max whose every element is the type's least
    _check([gc.sum(x, axis=(0, 1)), gc.max(x, axis=1), gc.max(x, axis=(0, 1))], {"x": values})


def test_more_outputs_than_the_grid_has_blocks_and_fewer_elements_than_threads() -> None:
    """4100 outputs over at most 4096 blocks (the block-stride loop takes the rest), 40 elements each
    (most threads of a block read none)."""
    x = gc.input("x", (None, 40), "float64")
    values = np.random.default_rng(5).standard_normal((40, 4100))
    _check([gc.max(gc.transpose(x), axis=1)], {"x": values.T.copy()})


# ---------------------------------------------------------------- the emulator's barriers and shuffles

_KERNELS = r"""
extern "C" __global__ void shuffle_down(const long long n, const double *in, double *out) {
    const double x = in[blockIdx.x * blockDim.x + threadIdx.x];
    out[blockIdx.x * blockDim.x + threadIdx.x] = __shfl_down_sync(0xffffffffu, x, 3);
}

extern "C" __global__ void reverse_in_shared(const long long n, const double *in, double *out) {
    __shared__ double tile[1024];
    tile[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = tile[blockDim.x - 1 - threadIdx.x];
}

extern "C" __global__ void divergent_barrier(const long long n, const double *in, double *out) {
    if (threadIdx.x < 32) __syncthreads();
}
"""


def _launch(name: str, blocks: int, threads: int, values: np.ndarray) -> np.ndarray:
    library = emulator.build(PRELUDE + _KERNELS)
    out = np.zeros_like(values)
    args = [ctypes.c_longlong(values.size), ctypes.c_void_p(values.ctypes.data), ctypes.c_void_p(out.ctypes.data)]
    table = (ctypes.c_void_p * 3)(*[ctypes.addressof(a) for a in args])
    if getattr(library, f"launch_{name}")(blocks, threads, table):
        raise GraphcError(f"{name}: the threads of a block could not all meet")
    return out


def test_a_shuffle_reads_the_lane_delta_above_within_its_warp() -> None:
    values = np.arange(2 * 64, dtype=np.float64)
    out = _launch("shuffle_down", 2, 64, values)
    lane = np.arange(values.size) % 32
    np.testing.assert_array_equal(out, np.where(lane + 3 < 32, values + 3, values))


def test_threads_see_each_others_shared_writes_after_the_barrier() -> None:
    values = np.arange(3 * BLOCK, dtype=np.float64)
    out = _launch("reverse_in_shared", 3, BLOCK, values)
    np.testing.assert_array_equal(out, values.reshape(3, BLOCK)[:, ::-1].ravel())


def test_a_barrier_some_threads_never_reach_fails_the_launch() -> None:
    with pytest.raises(GraphcError, match="could not all meet"):
        _launch("divergent_barrier", 1, 64, np.zeros(64))


# ---------------------------------------------------------------- the GPU's own compiler

def test_nvrtc_compiles_the_block_reductions_and_the_scalar_kernel() -> None:
    compile_tests = pytest.importorskip("test_cuda_compile")
    if compile_tests._nvrtc() is None:
        pytest.skip("no CuPy with NVRTC")
    x = gc.input("x", (None, 6, 40), "float32")
    xi = gc.input("xi", (None, 70), "int64")
    outputs = [gc.max(x, axis=(0, 2)), gc.sum(x, axis=(0, 2)), gc.sum(xi, axis=0), gc.max(xi, axis=0),
               gc.max(gc.cast(xi, "float64"), axis=0)]
    units = [gc.compile(outputs, backend="cupy").generated.kernels, _mlp_adam("cupy").generated.kernels]
    for unit in units:
        for architecture in ("75", "90"):
            compile_tests.nvrtc_compiles(unit, architecture)
