"""Device-resident state: a device step leaves the variables it writes on the device, and the store
fetches them only when someone reads them.

On the adversarial stand-in of ``tests/cuda_standin.py`` (every ``memcpyAsync`` direction logged),
a train step copies its loss back and nothing else, a launch copies nothing back, and every reader
— ``store.values``, ``store[name]``, a checkpoint, a load, another compiled function, the trainer's
evaluation — sees the newest values.  Each bound GPU step has its own stream and cuBLAS handle,
destroyed with the step.
"""
from __future__ import annotations

import gc as collector
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cuda_standin import D2H, Cublas, StandIn, install
from test_cuda_runtime import _batches, _mlp, _numpy_reference, _same_state

import graphc as gc
from graphc import nn, optim
from graphc.backends.cuda import cublas, emulator
from graphc.train import checkpoint

pytestmark = pytest.mark.skipif(emulator.host_compiler() is None, reason="no C++ compiler for the emulator")

SEEDS = 8


@pytest.fixture(params=range(SEEDS))
def stand_in(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    return install(monkeypatch, request.param)


def _downloads(stand_in: StandIn) -> int:
    return stand_in.kinds.count(D2H)


def test_an_ordinary_step_copies_back_its_loss_alone_and_a_launch_nothing(stand_in: StandIn) -> None:
    gpu = _mlp("cupy")
    losses = _numpy_reference((6, 8))[0]
    for step, (x, y) in enumerate(_batches(6, 8)):
        before = _downloads(stand_in)
        if step % 2:
            gpu.launch(x=x, y=y)
            assert _downloads(stand_in) == before
        else:
            np.testing.assert_allclose(gpu(x=x, y=y), losses[step], rtol=2e-4)
            assert _downloads(stand_in) == before + 1  # the loss: one scalar
    _same_state(gpu, (6, 8))


def test_reading_the_variables_after_device_steps_fetches_the_newest_values_once(stand_in: StandIn) -> None:
    gpu = _mlp("cupy")
    for x, y in _batches(3, 8):
        gpu(x=x, y=y)
    before = _downloads(stand_in)
    _same_state(gpu, (3, 8))
    fetched = _downloads(stand_in)
    assert fetched > before
    expected = _numpy_reference((3, 8))[1]
    for name in expected:
        np.testing.assert_allclose(gpu.state[name], expected[name], rtol=2e-4, atol=1e-5, err_msg=name)
    assert _downloads(stand_in) == fetched  # the host holds the newest values now


def test_a_checkpoint_after_device_steps_saves_the_newest_values(stand_in: StandIn, tmp_path: Path) -> None:
    gpu = _mlp("cupy")
    for x, y in _batches(4, 8):
        gpu.launch(x=x, y=y)
    checkpoint.save(tmp_path / "state.npz", gpu.state, {})
    saved = checkpoint.load(tmp_path / "state.npz").variables
    expected = _numpy_reference((4, 8))[1]
    assert saved.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(saved[name], value, rtol=2e-4, atol=1e-5, err_msg=name)


def test_loading_some_variables_after_device_steps_keeps_the_newest_values_of_the_others(stand_in: StandIn) -> None:
    gpu = _mlp("cupy")
    batches = _batches(4, 8)
    for x, y in batches[:3]:
        gpu(x=x, y=y)
    store = gpu.state
    name = next(iter(_numpy_reference((3, 8))[1]))
    value = np.full_like(_numpy_reference((3, 8))[1][name], 0.5)
    store.load({name: value}, names=[name])
    for other, expected in _numpy_reference((3, 8))[1].items():
        if other != name:
            np.testing.assert_allclose(store[other], expected, rtol=2e-4, atol=1e-5, err_msg=other)
    np.testing.assert_array_equal(store[name], value)
    gpu(*batches[3])  # the loaded value goes to the device
    assert np.isfinite(store[name]).all() and not np.array_equal(store[name], value)


def _train_and_infer(backend: str, state: Any = None) -> tuple[Any, Any]:
    """A train step and an inference function over the same variables."""
    x = gc.input("x", (None, 784))
    y = gc.input("y", (None,), dtype="int32")
    net = nn.Sequential(nn.Dense(64, init="he"), nn.relu, nn.Dense(10, init="he"))
    train = gc.compile(gc.softmax_cross_entropy(net(x), y), optim.Adam(1e-3), backend=backend, state=state)
    return train, gc.compile(net(x), state=train.state, backend=backend)


def test_a_second_compiled_function_sharing_the_store_sees_the_newest_values(stand_in: StandIn) -> None:
    (train, infer), (cpu_train, cpu_infer) = _train_and_infer("cupy"), _train_and_infer("numpy")
    batches = _batches(4, 8)
    for x, y in batches[:3]:
        train(x=x, y=y)
        cpu_train(x=x, y=y)
        np.testing.assert_allclose(infer(x=x), cpu_infer(x=x), rtol=2e-4, atol=1e-5)
    x, y = batches[3]
    train.launch(x=x, y=y)
    cpu_train(x=x, y=y)
    np.testing.assert_allclose(infer(x=x), cpu_infer(x=x), rtol=2e-4, atol=1e-5)


def test_the_trainers_steps_copy_back_their_loss_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each train step copies one scalar back, but for the first at another batch size (the last
    batch of an epoch): its own arena starts from the values the other size's step holds.
    Evaluation and checkpoints still see the newest values: the run ends where the emulator's does."""
    from test_train import make_trainer
    stand_in = install(monkeypatch, 3)
    trainer = make_trainer(tmp_path / "gpu", epochs=2, backend="cupy")
    step, per_step = trainer.step, []

    def counted(*args: Any, **feeds: Any) -> Any:
        before = _downloads(stand_in)
        result = step(*args, **feeds)
        per_step.append((len(feeds["x"]), _downloads(stand_in) - before))
        return result
    counted.materialize = step.materialize  # type: ignore[attr-defined]
    monkeypatch.setattr(trainer, "step", counted)
    history = trainer.run().history
    assert len(per_step) == 16  # two epochs of 240 rows in batches of 32
    for (rows, copies), (previous, _) in zip(per_step, per_step[:1] + per_step):
        assert copies == 1 or rows != previous, per_step
    emulated = make_trainer(tmp_path / "emulator", epochs=2, backend="cuda-emulator")
    expected = emulated.run().history
    for got, want in zip(history.to_dicts(), expected.to_dicts()):
        np.testing.assert_allclose(got["val_loss"], want["val_loss"], rtol=1e-4)
    saved = checkpoint.load(trainer.checkpoint_path)
    for name, value in checkpoint.load(emulated.checkpoint_path).variables.items():
        np.testing.assert_allclose(saved.variables[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    assert saved.device_counter == emulated.store.device_counter[0]


class _RecordingCublas(Cublas):
    """The stand-in's libcublas, recording every handle destroyed."""

    def __init__(self, device: StandIn, destroyed: list[int]):
        super().__init__(device)
        self.destroyed = destroyed

    def cublasDestroy_v2(self, handle: Any) -> int:
        self.destroyed.append(handle.value)
        return super().cublasDestroy_v2(handle)


def test_a_steps_cublas_handle_is_destroyed_with_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compile cache keeps the program; the handle (and its workspace) goes with the bound step."""
    device = install(monkeypatch, 0)
    destroyed: list[int] = []
    monkeypatch.setattr(cublas, "_library", lambda: _RecordingCublas(device, destroyed))
    a, b = gc.input("a", (None, 8)), gc.input("b", (8, 4))
    product = gc.compile(gc.matmul(a, b), backend="cupy")
    rng = np.random.default_rng(0)
    left, right = rng.standard_normal((5, 8)).astype(np.float32), rng.standard_normal((8, 4)).astype(np.float32)
    np.testing.assert_allclose(product(a=left, b=right), left @ right, rtol=1e-5)
    assert destroyed == []
    del product
    collector.collect()
    assert len(destroyed) == 1


def test_threads_calling_one_function_at_once_get_their_own_results() -> None:
    """Each thread binds its own step; the emulator's device runs one call at a time."""
    a, b = gc.input("a", (None, 16)), gc.input("b", (16, 8))
    product = gc.compile(gc.relu(gc.matmul(a, b)), backend="cuda-emulator")
    failures: list[AssertionError] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for rows in (3, 7, 3, 11) * 5:
                left = rng.standard_normal((rows, 16)).astype(np.float32)
                right = rng.standard_normal((16, 8)).astype(np.float32)
                np.testing.assert_allclose(product(a=left, b=right), np.maximum(left @ right, 0), rtol=1e-5,
                                           atol=1e-6)
        except AssertionError as exc:
            failures.append(exc)
    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[0]


def test_restoring_a_checkpoint_mid_run_restores_the_device_random_stream(tmp_path: Path) -> None:
    """Steps bound before the restore hold the store's counter array: the restored counter must
    reach them, so the steps after it draw the noise they drew after the save."""
    x_in = gc.input("x", (None, 784))
    y_in = gc.input("y", (None,), dtype="int32")
    net = nn.Sequential(nn.GaussianNoise(0.3), nn.Dense(32, init="he"), nn.relu, nn.Dense(10, init="he"))
    step = gc.compile(gc.softmax_cross_entropy(net(x_in), y_in), optim.SGD(0.1), backend="cuda-emulator")
    batches = _batches(4, 8)
    step(*batches[0])
    checkpoint.save(tmp_path / "state.npz", step.state, {})
    after_save = [float(step(*batch)) for batch in batches[1:]]
    checkpoint.restore(step.state, checkpoint.load(tmp_path / "state.npz"), tmp_path / "state.npz")
    assert [float(step(*batch)) for batch in batches[1:]] == after_save
