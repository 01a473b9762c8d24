"""Tests of data-parallel training: the allreduce's place in the step, shares of a batch, replica
checks, the launcher's environment, synchronized batch norm, and, under ``mpirun -n 2``, the same
parameters as one process and bounded failure when a rank stops.

The MPI tests need ``mpirun`` (``pip install -e '.[mpi]'``) and skip without it; the collectives
themselves are checked rank by rank by ``mpi_collectives.py``, run here under mpirun.
"""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim
from graphc.errors import CheckpointError, DistributedError, GraphcError
from graphc.parallel import Communicator, active, use
from graphc.parallel.launch import (DEFAULT_TIMEOUT, collective_timeout, launched_ranks, share_cores,
                                   threads_per_rank, world)
from graphc.parallel.replicas import check_replicas, checksum, shards
from graphc.testing import check_grads
from graphc.train import ConfigError, Splits, TrainConfig, Trainer
from support import needs_fashion_mnist

pytestmark = pytest.mark.usefixtures("stop_signals_heard")  # they send stop signals

HERE = Path(__file__).parent
MLP = str(HERE.parent / "examples" / "mlp.py")
needs_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None,
                                  reason="mpirun not found: pip install -e '.[mpi]' installs Open MPI")


class Ranks(Communicator):
    """Rank ``rank`` of ``size`` in one process: the collectives of a single process (for the parts
    of the trainer that only read the size and rank); ``checksums`` is what allgather returns."""

    def __init__(self, size: int, rank: int = 0, checksums: Optional[list[int]] = None):
        self.size, self.rank, self.checksums = size, rank, checksums

    def allgather(self, values: np.ndarray) -> np.ndarray:
        return np.array(self.checksums, dtype=np.int64)[:, None] if self.checksums else super().allgather(values)


def bn_loss(dtype: str = "float32", width: int = 6) -> tuple[gc.Node, nn.Module]:
    x, y = gc.input("x", (None, 5), dtype), gc.input("y", (None,), "int32")
    net = nn.Sequential(nn.Dense(width), nn.relu, nn.BatchNorm(), nn.Dense(3))
    return gc.softmax_cross_entropy(net(x), y), net


# ---------------------------------------------------------------- the step

def test_a_step_for_two_ranks_makes_one_allreduce_over_the_packed_gradient_and_statistics() -> None:
    loss, net = bn_loss()
    step = gc.compile(loss, optimizer=optim.Adam(1e-3), ranks=2)
    reduces = [n for n in step.program.nodes() if n.op == "allreduce"]
    assert len(reduces) == 1
    params = sum(int(np.prod(p.shape)) for p in net.parameters())
    statistics = sum(int(np.prod(s.shape)) for s in net.states())
    assert reduces[0].shape == (params + statistics + 2,)  # and the rows of this rank's share, and its stop flag
    (stop,) = [i for i in step.inputs if i.name == "stop_requested"]
    assert stop.shape == () and {i.name for i in step.inputs} == {"x", "y", "stop_requested"}
    assert "allreduce" in step.show("step") and "k.allreduce(" in step.source
    single = gc.compile(bn_loss()[0], optimizer=optim.Adam(1e-3))
    assert not [n for n in single.program.nodes() if n.op == "allreduce"]


def test_a_step_for_two_ranks_run_in_one_process_takes_the_one_rank_step() -> None:
    """Alone, a rank's weighted mean is its own gradient and statistics: w·g / w."""
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(size=(n, 5)), "y": rng.integers(0, 3, n).astype(np.int32)} for n in (8, 5, 8)]
    stores = []
    for ranks in (1, 2):
        loss, _ = bn_loss("float64")
        step = gc.compile(loss, optimizer=optim.Adam(1e-2), ranks=ranks, state=gc.Store(3))
        for feed in feeds:
            step(**feed, **({"stop_requested": np.array(0.0)} if ranks > 1 else {}))
        stores.append(step.state.values)
    for name, value in stores[0].items():
        np.testing.assert_allclose(stores[1][name], value, rtol=1e-12, err_msg=name)


def test_the_cuda_backend_copies_an_allreduce_in_one_process_and_refuses_several_ranks() -> None:
    from graphc.backends.cuda import emulator
    if emulator.host_compiler() is None:
        pytest.skip("no C++ compiler for the CUDA emulator")
    x = gc.input("x", (None, 3), "float64")
    values = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(gc.compile(gc.allreduce(x) * 2.0, backend="cuda-emulator")(x=values), 2 * values)
    with use(Ranks(2)), pytest.raises(DistributedError, match="cannot yet lower an allreduce over 2 ranks"):
        gc.compile(bn_loss()[0], optimizer=optim.SGD(0.1), ranks=2, backend="cuda-emulator")


def test_ranks_must_be_a_positive_integer() -> None:
    with pytest.raises(GraphcError, match="ranks must be an integer >= 1, got 0"):
        gc.compile(bn_loss()[0], optimizer=optim.SGD(0.1), ranks=0)


def test_allreduce_refuses_an_unknown_reduction_and_integers() -> None:
    x = gc.input("x", (3,))
    with pytest.raises(GraphcError, match="reduction must be one of mean, sum, got 'max'"):
        gc.allreduce(x, "max")
    with pytest.raises(GraphcError, match="expects float operands, got int32"):
        gc.allreduce(gc.input("i", (3,), "int32"))


@pytest.mark.parametrize("sync", [False, True])
def test_batch_norm_with_synchronized_statistics_is_batch_norm_in_one_process(sync: bool) -> None:
    x = gc.input("x", (6, 4), "float64")
    norm = nn.BatchNorm(sync=sync, name="bn")
    y = norm(x, training=True)
    gamma, beta = norm.parameters()
    weights = np.random.default_rng(1).normal(size=(6, 4))
    loss = gc.sum(gc.constant(weights, "float64") * y * y)
    values = {"x": np.random.default_rng(2).normal(size=(6, 4))}
    check_grads(loss, feeds=values, wrt=[gamma, beta], variables={"bn.gamma": np.full(4, 1.5), "bn.beta": np.ones(4)})
    got = gc.compile(y, state=gc.Store(0))(**values)
    centered = values["x"] - values["x"].mean(axis=0)
    np.testing.assert_allclose(got, centered / np.sqrt(centered.var(axis=0) + 1e-5), rtol=1e-10)


# ---------------------------------------------------------------- shares and replicas

def test_each_rank_takes_a_contiguous_share_differing_by_at_most_one_row() -> None:
    x, y = np.arange(14).reshape(7, 2), np.arange(7)
    parts = [list(shards([(x, y)], Ranks(3, rank))) for rank in range(3)]
    assert [len(p[0][0]) for p in parts] == [3, 2, 2]
    np.testing.assert_array_equal(np.concatenate([p[0][0] for p in parts]), x)
    np.testing.assert_array_equal(np.concatenate([p[0][1] for p in parts]), y)
    assert list(shards([(x[:2], y[:2])], Ranks(3, 1))) == []  # fewer rows than ranks: skipped by all


def test_the_broadcast_reaches_variables_that_are_views_with_strides(monkeypatch: pytest.MonkeyPatch) -> None:
    """MPI sends contiguous buffers only: a strided variable goes through a contiguous copy."""
    from graphc.parallel.replicas import broadcast_variables

    class FromRankZero(Communicator):
        def broadcast(self, array: np.ndarray) -> None:
            assert array.flags.c_contiguous, "a strided buffer was handed to the broadcast"
            array[...] = 7.0  # what rank 0 holds
    store = gc.Store(0)
    store.values.update(w=np.zeros((3, 2)), v=np.zeros((2, 3)).T)
    broadcast_variables(store, FromRankZero())
    assert store.values["w"].tolist() == [[7.0] * 2] * 3 and store.values["v"].tolist() == [[7.0] * 2] * 3


def test_replicas_that_differ_are_named() -> None:
    store = gc.Store(0)
    store.values["w"] = np.ones(3, np.float32)
    same = checksum(store)
    check_replicas(store, Ranks(2, checksums=[same, same]), "after epoch 1")
    with pytest.raises(DistributedError, match="on rank 1 differ from rank 0's after epoch 1"):
        check_replicas(store, Ranks(2, checksums=[same, same + 1]), "after epoch 1")
    store.values["w"][0] = 2.0
    assert checksum(store) != same


def test_the_launchers_environment_gives_the_ranks_their_cores_and_timeout() -> None:
    assert launched_ranks({}) == 1 and launched_ranks({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert launched_ranks({"PMI_SIZE": "3"}) == 3
    assert type(world({})) is Communicator
    assert threads_per_rank({"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, cores=2) == 1
    assert threads_per_rank({"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, cores=16) == 8
    assert threads_per_rank({"OMPI_COMM_WORLD_LOCAL_SIZE": "3"}, cores=2) == 1
    assert collective_timeout({"GRAPHC_MPI_TIMEOUT": "2.5"}) == 2.5
    for bad in ("soon", "0"):
        with pytest.raises(DistributedError, match="GRAPHC_MPI_TIMEOUT must be a number of seconds above 0"):
            collective_timeout({"GRAPHC_MPI_TIMEOUT": bad})


def test_use_restores_the_previous_communicator_after_the_block_and_after_an_error() -> None:
    before = active()
    with use(Ranks(2)) as inside:
        assert active() is inside
    assert active() is before
    with pytest.raises(RuntimeError), use(Ranks(3)):
        raise RuntimeError("a step failed")
    assert active() is before


def test_one_process_collectives_return_their_operand_or_the_buffer_given() -> None:
    one, x = Communicator(), np.array([1.0, 2.0])
    copy = one.allreduce(x)
    assert copy.tolist() == [1.0, 2.0] and copy is not x
    buffer = np.zeros(2)
    assert one.allreduce(x, "sum", out=buffer) is buffer and buffer.tolist() == [1.0, 2.0]
    assert one.allreduce(x, out=x) is x
    assert one.allgather(x).tolist() == [[1.0, 2.0]] and one.share({"a": 1}) == {"a": 1}


def test_the_launchers_defaults_and_mpichs_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # it may not know
    assert threads_per_rank({}) == 1
    monkeypatch.undo()
    assert collective_timeout({}) == DEFAULT_TIMEOUT == 300.0
    assert threads_per_rank({"MPI_LOCALNRANKS": "4"}, cores=16) == 4  # MPICH's count of ranks on this machine
    assert threads_per_rank({}, cores=6) == 6


def test_a_users_own_blas_thread_setting_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import threadpoolctl
    calls: list[int] = []
    monkeypatch.setattr(threadpoolctl, "threadpool_limits", lambda limits, user_api: calls.append(limits))
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        share_cores({name: "3", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"})
    assert calls == []
    share_cores({"OMPI_COMM_WORLD_LOCAL_SIZE": "2"})
    assert calls == [threads_per_rank({"OMPI_COMM_WORLD_LOCAL_SIZE": "2"})]


class FakeClock:
    """time.monotonic and time.sleep for a wait that must not take real time."""

    def __init__(self) -> None:
        self.now, self.naps = 0.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds


class FakeWorld:
    """Two ranks holding the same values: what a collective gets and when it completes."""

    def __init__(self, polls_until_done: float = 1) -> None:
        self.polls_until_done, self.sent = polls_until_done, []

    def Get_size(self) -> int:  # noqa: N802 (mpi4py's names)
        return 2

    def Get_rank(self) -> int:  # noqa: N802
        return 0

    def Iallreduce(self, send: Any, out: np.ndarray, op: Any) -> "FakeWorld":  # noqa: N802
        from mpi4py import MPI
        self.sent.append(send)
        np.multiply(out if send is MPI.IN_PLACE else send, 2, out=out)
        return self

    def Test(self) -> bool:  # noqa: N802
        self.polls_until_done -= 1
        return self.polls_until_done <= 0


needs_mpi4py = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None, reason="mpi4py not installed")


@needs_mpi4py
def test_an_allreduce_into_its_own_input_is_made_in_place() -> None:
    from mpi4py import MPI

    from graphc.parallel.mpi import MPICommunicator
    world_ = FakeWorld()
    comm = MPICommunicator(5.0, comm=world_)
    x = np.array([1.0, 3.0])
    assert comm.allreduce(x, "sum", out=x) is x and x.tolist() == [2.0, 6.0]
    assert world_.sent[-1] is MPI.IN_PLACE
    y = np.array([1.0, 3.0], np.float32)
    got = comm.allreduce(y)  # the mean: the sum over the two ranks, halved
    assert world_.sent[-1] is y and got.tolist() == [1.0, 3.0] and y.tolist() == [1.0, 3.0]


@needs_mpi4py
def test_a_wait_polls_with_growing_naps_and_gives_up_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from graphc.parallel import mpi
    clock = FakeClock()
    monkeypatch.setattr(mpi, "time", clock)
    comm = mpi.MPICommunicator(2.0, comm=FakeWorld(polls_until_done=5))
    comm.allreduce(np.zeros(3))
    assert clock.naps == [0.0, 1e-5, 2e-5, 4e-5]  # a collective that completes soon is not slept on
    clock.naps.clear()
    stuck = mpi.MPICommunicator(2.0, comm=FakeWorld(polls_until_done=float("inf")))
    with pytest.raises(DistributedError, match="rank 0 of 2 waited 2 s for the allreduce of 3 float64 values"):
        stuck.allreduce(np.zeros(3))
    assert max(clock.naps) == mpi._LONGEST_NAP == 1e-3
    assert 2.0 < clock.now <= 2.0 + 2 * mpi._LONGEST_NAP


# ---------------------------------------------------------------- the trainer

def tiny_splits() -> Splits:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 5)).astype(np.float32), rng.integers(0, 3, 64).astype(np.int32)
    return Splits(x[:48], y[:48], x[48:56], y[48:56], x[56:], y[56:])


def tiny_trainer(out: Path, communicator: Communicator, batch_size: int = 16) -> Trainer:
    config = TrainConfig.from_options({"optimizer": "adam", "batch_size": batch_size, "epochs": 1})
    net = nn.Sequential(nn.Dense(4), nn.relu, nn.Dense(3))
    return Trainer(net, tiny_splits(), config, out, log=lambda line: None, progress_bar=False,
                   communicator=communicator)


def test_a_checkpoint_resumes_on_the_number_of_ranks_that_wrote_it(tmp_path: Path) -> None:
    tiny_trainer(tmp_path, Communicator()).run()
    history = json.loads((tmp_path / "history.json").read_text())
    assert [record["ranks"] for record in history] == [1]
    with pytest.raises(CheckpointError, match="written by a run on 1 ranks, and this one has 2; resume with the "
                                              "same number of processes"):
        tiny_trainer(tmp_path, Ranks(2)).run(resume=True)


def test_a_batch_smaller_than_the_number_of_ranks_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size 2 gives some of the 3 ranks no examples; make it at least 3"):
        tiny_trainer(tmp_path, Ranks(3), batch_size=2)


# ---------------------------------------------------------------- under mpirun

def mpi_environment(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if name not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(extra)
    if os.geteuid() == 0:  # Open MPI refuses root unless told twice
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    return env


def train_command(out: Path, *flags: str, ranks: int = 0) -> list[str]:
    launcher = ["mpirun", "-n", str(ranks)] if ranks else []
    return launcher + [sys.executable, "-m", "graphc.cli", "train", MLP, "--limit", "4096", "--batch-size", "128",
                       "--seed", "3", "--out", str(out), *flags]


@needs_mpirun
def test_collectives_their_gradients_and_synchronized_batch_norm_under_mpirun() -> None:
    # Unbound, so that each rank's BLAS would see every core unless graphc limited it.
    command = ["mpirun", "--bind-to", "none", "-n", "2", sys.executable, str(HERE / "mpi_collectives.py")]
    result = subprocess.run(command, env=mpi_environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(result.stdout.split("\n"))[-2:] == ["rank 0 ok", "rank 1 ok"]


NOISY_MODEL = """from graphc import nn
model = nn.Sequential(nn.GaussianNoise(0.3), nn.Dense(64, init="he"), nn.relu, nn.Dropout(0.2), nn.Dense(10))
"""


@needs_mpirun
@needs_fashion_mnist
@pytest.mark.parametrize("model", ["mlp", "noisy"])
def test_two_ranks_end_with_the_parameters_of_one_process(tmp_path: Path, model: str) -> None:
    """With noise and dropout too: every rank draws the whole batch's numbers and keeps its rows, so
    two ranks draw what one process draws (once each rank drew its own rows from the same state)."""
    model_file = MLP
    if model == "noisy":
        model_file = str(tmp_path / "noisy.py")
        Path(model_file).write_text(NOISY_MODEL)
    for out, ranks in ((tmp_path / "one", 0), (tmp_path / "two", 2)):
        command = train_command(out, "--epochs", "1", ranks=ranks)
        command[command.index(MLP)] = model_file
        result = subprocess.run(command, env=mpi_environment(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("test accuracy:") == 1  # rank 0 alone reports
    one, two = np.load(tmp_path / "one" / "checkpoint.npz"), np.load(tmp_path / "two" / "checkpoint.npz")
    variables = [name for name in one.files if name.startswith("var/")]
    assert sorted(variables) == sorted(name for name in two.files if name.startswith("var/"))
    for name in variables:
        scale = max(float(np.abs(one[name]).max()), 1e-30)
        assert float(np.abs(one[name] - two[name]).max()) / scale < 1e-3, name
    assert [r["ranks"] for r in json.loads((tmp_path / "two" / "history.json").read_text())] == [2]


def rank_process(tag: str, rank: int) -> Optional[int]:
    """The process id of rank ``rank`` of the run whose environment holds ``GRAPHC_TEST_RUN=tag``."""
    wanted = {f"GRAPHC_TEST_RUN={tag}".encode(), f"OMPI_COMM_WORLD_RANK={rank}".encode()}
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            variables = set(Path(path).read_bytes().split(b"\0"))
        except OSError:
            continue
        if wanted <= variables:
            return int(path.split("/")[2])
    return None


def stop_rank_one_after_the_first_checkpoint(out: Path, how: signal.Signals, tag: str,
                                             timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    """Start a 20-epoch run on two ranks, send ``how`` to rank 1 once epoch 1 is saved; returns the
    finished run and the seconds from the signal to its end."""
    env = mpi_environment(GRAPHC_TEST_RUN=tag, GRAPHC_MPI_TIMEOUT=str(timeout))
    run = subprocess.Popen(train_command(out, "--epochs", "20", ranks=2), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while not (out / "checkpoint.npz").exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = rank_process(tag, 1)
        assert pid is not None and run.poll() is None, "the run ended before epoch 1 was saved"
        os.kill(pid, how)
        signalled = time.monotonic()
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    return subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr), time.monotonic() - signalled


@needs_mpirun
@needs_fashion_mnist
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks' processes in /proc")
def test_a_hung_rank_ends_the_run_with_a_clear_error_after_the_timeout_and_the_checkpoint_resumes(
        tmp_path: Path) -> None:
    out = tmp_path / "run"
    # The timeout leaves room for the ranks' other waits (one compiling slower, rank 0 evaluating).
    result, seconds = stop_rank_one_after_the_first_checkpoint(out, signal.SIGSTOP, f"hung-{os.getpid()}", 8.0)
    assert result.returncode != 0
    assert "graphc: error: rank 0: rank 0 of 2 waited 8 s for the allreduce of 235148 float32 values: another " \
           "rank has died or hung; the last checkpoint resumes the run with --resume" in result.stderr
    assert seconds < 60
    done = len(json.loads((out / "history.json").read_text()))
    resumed = subprocess.run(train_command(out, "--epochs", str(done + 1), "--resume", ranks=2),
                             env=mpi_environment(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {out / 'checkpoint.npz'}: {done} epochs done" in resumed.stdout
    assert len(json.loads((out / "history.json").read_text())) == done + 1


@needs_mpirun
@needs_fashion_mnist
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks' processes in /proc")
def test_a_rank_that_dies_ends_the_run(tmp_path: Path) -> None:
    result, seconds = stop_rank_one_after_the_first_checkpoint(tmp_path / "run", signal.SIGKILL,
                                                               f"killed-{os.getpid()}", 30.0)
    assert result.returncode != 0
    assert "rank 1" in result.stderr and seconds < 60


def test_ranks_that_disagree_on_model_data_or_options_are_named_before_training() -> None:
    from graphc.parallel.replicas import check_agreement

    class Gathered(Communicator):
        size = 3

        def __init__(self, rows: list[list[int]]):
            self.rows = rows

        def allgather(self, values: np.ndarray) -> np.ndarray:
            return np.array([values.tolist() if i == 0 else row for i, row in enumerate(self.rows)], np.int64)

    records = {"model": "relu", "data": "600 rows", "options": "sgd"}
    import zlib
    same = [zlib.crc32(t.encode()) for t in records.values()]
    check_agreement(Gathered([same, same, same]), records)
    other_model = [zlib.crc32(b"tanh"), same[1], same[2]]
    other_data = [same[0], zlib.crc32(b"300 rows"), same[2]]
    with pytest.raises(DistributedError, match=r"the ranks disagree before training: the model of rank 1 differs "
                                               r"from rank 0's; the data of rank 2 differs from rank 0's"):
        check_agreement(Gathered([same, other_model, other_data]), records)


@needs_mpirun
@needs_fashion_mnist
@pytest.mark.parametrize("second", [["--limit", "2048"], ["--lr", "0.5"]])
def test_ranks_started_on_other_data_or_options_stop_naming_them(tmp_path: Path, second: list[str]) -> None:
    """Two different commands under one mpirun (as `mpirun -n 1 A : -n 1 B`): once heap corruption or a
    hybrid model, now one line on each rank."""
    first = train_command(tmp_path / "run", "--epochs", "1")
    other = first[:first.index("--limit")] + ["--limit", "4096"] + first[first.index("--limit") + 2:] + second
    command = ["mpirun", "-n", "1"] + first + [":", "-n", "1"] + other
    result = subprocess.run(command, env=mpi_environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    what = "data" if second[0] == "--limit" else "options"
    assert f"the ranks disagree before training: the {what} of rank 1 differs from rank 0's" in result.stderr
    assert "Traceback" not in result.stderr and "corrupt" not in result.stderr.lower()


@needs_mpirun
@needs_fashion_mnist
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks' processes in /proc")
def test_ctrl_c_on_one_rank_stops_every_rank_after_the_same_step_and_resumes_as_if_never_stopped(
        tmp_path: Path) -> None:
    """SIGINT reaches rank 1 alone: its stop request rides in the next step's allreduce, both ranks
    stop after that step, rank 0 saves, and the resumed run ends where an unbroken one does."""
    out = tmp_path / "run"
    result, _ = stop_rank_one_after_the_first_checkpoint(out, signal.SIGINT, f"ctrl-c-{os.getpid()}", 60.0)
    assert result.returncode == 130, result.stderr
    stops = re.findall(r"rank (\d): (SIGINT|another rank was asked to stop): stopped (.*?);", result.stderr)
    assert sorted(rank for rank, _, _ in stops) == ["0", "1"], result.stderr
    assert dict((rank, cause) for rank, cause, _ in stops) == {"0": "another rank was asked to stop", "1": "SIGINT"}
    assert stops[0][2] == stops[1][2], "the ranks stopped after different steps"
    done = len(json.loads((out / "history.json").read_text()))
    epochs = str(done + 1)
    resumed = subprocess.run(train_command(out, "--epochs", epochs, "--resume", ranks=2),
                             env=mpi_environment(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    unbroken = subprocess.run(train_command(tmp_path / "unbroken", "--epochs", epochs, ranks=2),
                              env=mpi_environment(), capture_output=True, text=True, timeout=300)
    assert unbroken.returncode == 0, unbroken.stderr
    with np.load(out / "checkpoint.npz") as a, np.load(tmp_path / "unbroken" / "checkpoint.npz") as b:
        variables = [name for name in b.files if name != "meta"]  # the rest: parameters and optimizer state
        assert variables and sorted(a.files) == sorted(b.files)
        for name in variables:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    then, now = (json.loads((folder / "history.json").read_text()) for folder in (out, tmp_path / "unbroken"))
    assert [row["train_loss"] for row in then] == pytest.approx([row["train_loss"] for row in now], rel=1e-12)
