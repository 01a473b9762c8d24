"""Tests of the trainer: exact resume, checkpoint safety, early stopping, history files.

The training runs here are tiny (a few hundred synthetic examples, a small
network), except one end-to-end run on real Fashion-MNIST.  The models use
input noise, batch norm and Adam on purpose: random draws, running statistics
and optimizer moments are exactly what a resumed run must restore.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import signal
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pytest

import graphc as gc
from graphc import nn
from graphc.data import Batches, load_fashion_mnist
from graphc.errors import CheckpointError, DataError
from graphc.parallel import Communicator
from graphc.train import ConfigError, History, Splits, TrainConfig, Trainer, TrainingInterrupted, checkpoint
from graphc.train import trainer as trainer_module
from graphc.train.history import TIMING_FIELDS, HistoryWriteError

pytestmark = pytest.mark.usefixtures("stop_signals_heard")  # they send stop signals

FEATURES, CLASSES = 12, 3


def blobs(n: int, seed: int, shuffle_labels: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian clusters: learnable, but not perfectly, in a few epochs."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(123).normal(0.0, 1.0, (CLASSES, FEATURES))
    y = rng.integers(0, CLASSES, n).astype(np.int32)
    x = (centers[y] + rng.normal(0.0, 1.5, (n, FEATURES))).astype(np.float32)
    if shuffle_labels:
        y = rng.permutation(y)
    return x, y


def splits(random_val_labels: bool = False) -> Splits:
    x_train, y_train = blobs(240, seed=1)
    x_val, y_val = blobs(60, seed=2, shuffle_labels=random_val_labels)
    x_test, y_test = blobs(90, seed=3)
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test)


def noisy_bn_net(width: int = 16) -> nn.Module:
    return nn.Sequential(nn.GaussianNoise(0.3), nn.Dense(width, init="he"), nn.BatchNorm(), nn.relu,
                         nn.Dense(CLASSES))


def make_trainer(out: Path, epochs: int, data: Optional[Splits] = None, net: Optional[nn.Module] = None,
                 loss: Any = gc.softmax_cross_entropy, **options: Any) -> Trainer:
    config = TrainConfig.from_options({"optimizer": "adam", "lr": 0.01, "lr_decay": 0.9, "batch_size": 32,
                                       "epochs": epochs, "seed": 7, **options})
    return Trainer(net or noisy_bn_net(), data or splits(), config, out, loss=loss, log=lambda line: None,
                   progress_bar=False)


def assert_same_state(a: Trainer, b: Trainer) -> None:
    assert a.store.values.keys() == b.store.values.keys()
    for name, value in a.store.values.items():
        assert np.array_equal(value, b.store.values[name]), name
    assert a.store.rng.bit_generator.state == b.store.rng.bit_generator.state
    assert np.array_equal(a.store.device_counter, b.store.device_counter)  # both None on the CPU


def metrics(history: History) -> list[dict[str, Any]]:
    """The records without wall-clock fields, which no replay reproduces."""
    return [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in history.to_dicts()]


def test_checkpoint_holds_parameters_optimizer_state_and_running_statistics(tmp_path: Path) -> None:
    net = noisy_bn_net()
    trainer = make_trainer(tmp_path, epochs=1, net=net)
    trainer.run()
    saved = checkpoint.load(trainer.checkpoint_path).variables
    assert net.states(), "the test model should hold running statistics"
    assert {v.name for v in net.parameters() + net.states()} <= saved.keys()
    assert any(name.startswith("adam.") for name in saved)
    assert saved.keys() == trainer.store.values.keys()
    for name, value in trainer.store.values.items():
        assert np.array_equal(saved[name], value), name


# ------------------------------------------------------------------ resume

def test_resume_at_epoch_boundary_is_bit_for_bit(tmp_path: Path) -> None:
    straight = make_trainer(tmp_path / "straight", epochs=3)
    straight_result = straight.run()

    make_trainer(tmp_path / "stopped", epochs=2).run()
    resumed = make_trainer(tmp_path / "stopped", epochs=3)
    resumed_result = resumed.run(resume=True)

    assert_same_state(straight, resumed)
    assert len(resumed_result.history) == 3
    assert metrics(resumed_result.history) == metrics(straight_result.history)
    assert resumed_result.test_accuracy == straight_result.test_accuracy


class InterruptingBatches(Batches):
    """Batches that deliver a signal (SIGINT, as Ctrl-C would) just before one chosen batch."""

    at: tuple[int, int] = (1, 3)  # (epoch, batch)
    signum: int = signal.SIGINT

    def epoch(self, index: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i, batch in enumerate(super().epoch(index)):
            if (index, i) == self.at:
                signal.raise_signal(self.signum)
            yield batch


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_mid_epoch_saves_a_state_that_resumes_bit_for_bit(tmp_path: Path, signum: int,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    straight = make_trainer(tmp_path / "straight", epochs=3)
    straight_result = straight.run()

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "Batches", InterruptingBatches)
        patch.setattr(InterruptingBatches, "signum", signum)
        interrupted = make_trainer(tmp_path / "stopped", epochs=3)
        with pytest.raises(TrainingInterrupted, match=f"{signal.Signals(signum).name}: .*--resume") as stop:
            interrupted.run()
    assert stop.value.signum == signum
    saved = checkpoint.load(interrupted.checkpoint_path).extra["progress"]
    assert (saved["epoch"], saved["batch"]) == (1, InterruptingBatches.at[1] + 1)

    resumed = make_trainer(tmp_path / "stopped", epochs=3)
    resumed_result = resumed.run(resume=True)
    assert_same_state(straight, resumed)
    assert metrics(resumed_result.history) == metrics(straight_result.history)


class DoublyInterruptingBatches(InterruptingBatches):
    """Two Ctrl-C presses before one batch, as an impatient user gives them."""

    def epoch(self, index: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i, batch in enumerate(Batches.epoch(self, index)):
            if (index, i) == self.at:
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)
            yield batch


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_previous_checkpoint(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "Batches", DoublyInterruptingBatches)
        with pytest.raises(TrainingInterrupted, match="interrupted again .* previous checkpoint is intact"):
            make_trainer(tmp_path, epochs=3).run()
    saved = checkpoint.load(tmp_path / "checkpoint.npz").extra["progress"]
    assert (saved["epoch"], saved["batch"]) == (1, 0)


def test_a_run_leaves_the_previous_signal_handlers_in_place(tmp_path: Path) -> None:
    before = {signum: signal.getsignal(signum) for signum in trainer_module.STOP_SIGNALS}
    make_trainer(tmp_path, epochs=1).run()
    assert {signum: signal.getsignal(signum) for signum in trainer_module.STOP_SIGNALS} == before


def test_resume_refuses_other_options(tmp_path: Path) -> None:
    make_trainer(tmp_path, epochs=1).run()
    with pytest.raises(CheckpointError, match="batch_size=32.*batch_size=16"):
        make_trainer(tmp_path, epochs=2, batch_size=16).run(resume=True)


def test_resume_without_checkpoint_says_so(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing to resume"):
        make_trainer(tmp_path, epochs=1).run(resume=True)


# ------------------------------------------------------------------ checkpoint files

def small_store(width: int, fill: float) -> gc.Store:
    store = gc.Store(seed=0)
    store.values["dense.W"] = np.full((FEATURES, width), fill, np.float32)
    store.values["dense.b"] = np.full((width,), fill, np.float32)
    return store


def test_checkpoint_round_trip_restores_values_and_generator(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    source = small_store(4, fill=1.5)
    source.rng.normal(size=3)  # move the generator off its initial state
    checkpoint.save(path, source, {"epoch": 2})
    target = small_store(4, fill=0.0)
    saved = checkpoint.load(path)
    checkpoint.restore(target, saved, path)
    assert saved.extra == {"epoch": 2}
    for name in source.values:
        assert np.array_equal(target.values[name], source.values[name])
    assert np.array_equal(target.rng.normal(size=5), source.rng.normal(size=5))


def test_failed_write_keeps_the_old_checkpoint_and_no_temporary_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.npz"
    checkpoint.save(path, small_store(4, fill=1.0), {"epoch": 1})
    old_bytes = path.read_bytes()

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", failing_fsync)
    with pytest.raises(CheckpointError, match="No space left"):
        checkpoint.save(path, small_store(4, fill=2.0), {"epoch": 2})
    assert path.read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]


def test_a_checkpoint_of_a_wider_model_is_refused_naming_the_first_difference(tmp_path: Path) -> None:
    make_trainer(tmp_path, epochs=1, net=noisy_bn_net(width=8)).run()
    wider_net = noisy_bn_net(width=9)
    with pytest.raises(CheckpointError) as info:
        make_trainer(tmp_path, epochs=1, net=wider_net).run(resume=True)
    then, now = (line for line in str(info.value).splitlines() if line.startswith(("  then:", "  now:")))
    assert "f32[8]" in then and "f32[9]" in now  # the first parameter in the graph's order that differs


@pytest.mark.parametrize("change", ["activation", "loss", "initializer"])
def test_resuming_a_changed_model_is_refused_naming_the_first_difference(tmp_path: Path, change: str) -> None:
    """ReLU turned into tanh (same shapes), cross-entropy into another loss, another initializer: the
    history would mix two models, so the checkpoint's forward graph must be this one's."""
    def net(activation: Any = nn.relu, init: str = "he") -> nn.Module:
        return nn.Sequential(nn.Dense(8, init=init), activation, nn.Dense(CLASSES))

    make_trainer(tmp_path, epochs=1, net=net()).run()
    changed = {"activation": dict(net=net(nn.tanh)), "initializer": dict(net=net(init="glorot")),
               "loss": dict(net=net(), loss=lambda out, y: gc.softmax_cross_entropy(out, y, "sum"))}[change]
    with pytest.raises(CheckpointError, match="was written by another model; the first difference") as info:
        make_trainer(tmp_path, epochs=2, **changed).run(resume=True)
    then, now = (line.split(":", 1)[1] for line in str(info.value).splitlines()
                 if line.startswith(("  then:", "  now:")))
    expected = {"activation": ("relu", "tanh"), "initializer": ("he_normal", "glorot_uniform"),
                "loss": ("", "")}[change]
    assert expected[0] in then and expected[1] in now and then != now
    same = make_trainer(tmp_path, epochs=2, net=net()).run(resume=True)  # the same model, rebuilt: resumes
    assert len(same.history) == 2


def test_checkpoint_missing_and_extra_variables_are_named(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    checkpoint.save(path, small_store(4, fill=1.0), {})
    saved = checkpoint.load(path)
    fewer = small_store(4, fill=0.0)
    del fewer.values["dense.b"]
    with pytest.raises(CheckpointError, match=r"'dense.b' is absent in the model but float32\[4\]"):
        checkpoint.restore(fewer, saved, path)
    more = small_store(4, fill=0.0)
    more.values["extra"] = np.zeros(2, np.float32)
    with pytest.raises(CheckpointError, match=r"'extra' is float32\[2\] in the model but absent"):
        checkpoint.restore(more, saved, path)


UNPICKLED: list[str] = []


def record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class PickleTrap:
    """Unpickling this object runs ``record_unpickling``: the side effect a malicious file would have."""

    def __reduce__(self) -> tuple:
        return (record_unpickling, ("ran",))


def test_loading_never_unpickles(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    meta = json.dumps({"format": checkpoint.FORMAT, "rng": {}, "extra": {}})
    np.savez(path, meta=np.array(meta), **{"var/W": np.array([PickleTrap()], dtype=object)})
    with pytest.raises(CheckpointError, match="pickled"):
        checkpoint.load(path)
    assert UNPICKLED == []


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="junk.npz"):
        checkpoint.load(path)


# ------------------------------------------------------------------ early stopping, history

def test_early_stopping_stops_and_restores_the_best_epoch(tmp_path: Path) -> None:
    # Validation labels are shuffled, so validation accuracy wanders instead of improving.
    data = splits(random_val_labels=True)
    stopped = make_trainer(tmp_path / "stopped", epochs=12, data=data, patience=2)
    result = stopped.run()
    best = result.history.best_epoch()
    assert result.stopped_early
    assert len(result.history) == best + 2 < 12

    reference = make_trainer(tmp_path / "reference", epochs=best, data=data)
    reference.run()
    assert_same_state(stopped, reference)
    assert result.test_accuracy == result.history.records[best - 1].test_accuracy


def regression_splits() -> Splits:
    """A noisy linear map from 12 features to 2 targets: its MSE falls epoch after epoch."""
    rng = np.random.default_rng(5)
    weights = rng.normal(0.0, 1.0, (FEATURES, 2))

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(0.0, 1.0, (n, FEATURES)).astype(np.float32)
        return x, (x @ weights + rng.normal(0.0, 0.1, (n, 2))).astype(np.float32)
    return Splits(*part(240), *part(60), *part(90))


def test_a_regression_reports_errors_and_stops_on_the_validation_loss(tmp_path: Path) -> None:
    """A linear output trained with MSE has no accuracy to watch: one that is always 1 once stopped
    such a run after its second epoch and put the first epoch's parameters back."""
    result = make_trainer(tmp_path, epochs=5, data=regression_splits(), net=nn.Dense(2), loss=gc.mse, patience=1,
                          optimizer="sgd", lr=0.02, lr_decay=1.0).run()
    records = result.history.records
    assert [r.val_accuracy for r in records] == [None] * 5 and result.test_accuracy is None
    val_losses = [r.val_loss for r in records]
    assert val_losses == sorted(val_losses, reverse=True)  # improving every epoch: nothing to stop for
    assert len(records) == 5 and not result.stopped_early and result.best_epoch == 5
    last = records[-1]
    assert result.task == "regression" and 0 < last.val_mae and 0 < last.val_mse < val_losses[0]
    assert result.test_metrics == {"loss": last.test_loss, "mse": last.test_mse, "mae": last.test_mae}


def test_the_task_comes_from_the_option_the_loss_or_the_targets() -> None:
    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int32)
    config = TrainConfig()
    assert trainer_module.infer_task(config, gc.mse, y) == "regression"
    assert trainer_module.infer_task(config, gc.sigmoid_binary_cross_entropy, x) == "classification"
    assert trainer_module.infer_task(config, lambda out, t: gc.mse(out, t), x) == "regression"
    assert trainer_module.infer_task(config, lambda out, t: gc.mse(out, t), y) == "classification"
    assert trainer_module.infer_task(TrainConfig(task="regression"), gc.softmax_cross_entropy, y) == "regression"
    with pytest.raises(ConfigError, match="task must be one of classification, regression"):
        TrainConfig.from_options({"task": "ranking"})
    with pytest.raises(ConfigError, match="monitor=val_accuracy does not apply to a regression"):
        make_trainer(Path("unused"), epochs=1, data=regression_splits(), net=nn.Dense(2), loss=gc.mse,
                     monitor="val_accuracy")


def test_a_classifier_with_one_logit_is_right_where_the_logit_has_the_label_s_sign() -> None:
    output = np.array([[2.0], [-1.0], [0.5], [-3.0]])
    assert trainer_module.correct_predictions(output, np.array([1, 0, 0, 0], np.int32)) == 3
    assert trainer_module.correct_predictions(output[:, 0], np.array([1.0, 0.0, 1.0, 1.0])) == 3
    assert trainer_module.correct_predictions(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])) == 1


def test_early_stopping_can_watch_validation_accuracy(tmp_path: Path) -> None:
    data = splits(random_val_labels=True)
    result = make_trainer(tmp_path, epochs=12, data=data, patience=2, monitor="val_accuracy").run()
    best = result.history.best_epoch("val_accuracy")
    accuracies = [r.val_accuracy for r in result.history.records]
    assert accuracies[best - 1] == max(accuracies) and best == accuracies.index(max(accuracies)) + 1
    assert result.stopped_early and len(result.history) == best + 2


def test_history_files_and_plot_are_written(tmp_path: Path) -> None:
    result = make_trainer(tmp_path, epochs=2).run()
    with (tmp_path / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    assert [float(row["test_accuracy"]) for row in rows] == [r.test_accuracy for r in result.history.records]
    assert json.loads((tmp_path / "history.json").read_text()) == result.history.to_dicts()
    assert (tmp_path / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "checkpoint.npz").is_file()


def test_learning_rate_decays_each_epoch(tmp_path: Path) -> None:
    result = make_trainer(tmp_path, epochs=3, lr=0.02, lr_decay=0.5).run()
    assert [r.lr for r in result.history.records] == pytest.approx([0.02, 0.01, 0.005])


@pytest.mark.parametrize("options, complaint", [
    ({"patience": 2, "val_fraction": 0.0}, "validation"),
    ({"batch_size": 0}, "batch_size"),
    ({"epochs": 0}, "epochs"),
    ({"momentum": 0.9}, "unknown trainer option 'momentum'"),
    ({"backend": "tpu"}, "backend must be one of numpy, cupy, cuda-emulator, got 'tpu'"),
])
def test_bad_options_are_refused(options: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        TrainConfig.from_options(options)


# ------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_mlp_learns_fashion_mnist(tmp_path: Path) -> None:
    try:
        data = load_fashion_mnist()
    except DataError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")
    empty_x, empty_y = data.x_train[:0], data.y_train[:0]
    split = Splits(data.x_train[:10_000], data.y_train[:10_000], empty_x, empty_y, data.x_test, data.y_test)
    config = TrainConfig(optimizer="sgd", lr=0.1, lr_decay=0.7, batch_size=32, epochs=5, val_fraction=0.0)
    net = nn.Sequential(nn.Dense(256, init="he"), nn.relu, nn.Dense(10))
    result = Trainer(net, split, config, tmp_path, log=lambda line: None, progress_bar=False).run()
    assert len(data.x_test) == 10_000
    assert result.test_accuracy > 0.80


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("name", ["history.csv", "history.json", "history.png"])
def test_a_full_disk_while_writing_history_names_the_file_and_keeps_the_old_one(
        tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    history = History.from_dicts(make_history_rows())
    history.write(tmp_path)
    before = (tmp_path / name).read_bytes()
    real_fsync = os.fsync

    def full(fd: int) -> None:  # the disk fills up while this one file is written
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{name}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(HistoryWriteError, match=f"cannot write {tmp_path / name}: No space left on device"):
        history.write(tmp_path)
    assert (tmp_path / name).read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def make_history_rows() -> list[dict[str, Any]]:
    return [{"epoch": 1, "lr": 0.1, "train_loss": 1.0, "val_loss": None, "val_accuracy": None, "test_loss": 0.9,
             "test_accuracy": 0.5, "seconds": 1.0, "examples_per_s": 100.0}]


def test_resume_on_the_cuda_emulator_is_bit_for_bit_with_noise(tmp_path: Path) -> None:
    """The device draws noise from a counter-based stream whose counter lives on the device: it is
    fetched with the variables and saved in the checkpoint, so a resumed run draws what the
    uninterrupted one drew."""
    straight = make_trainer(tmp_path / "straight", epochs=2, backend="cuda-emulator")
    history = straight.run().history
    make_trainer(tmp_path / "resumed", epochs=1, backend="cuda-emulator").run()
    resumed = make_trainer(tmp_path / "resumed", epochs=2, backend="cuda-emulator")
    assert metrics(resumed.run(resume=True).history) == metrics(history)
    assert straight.store.device_counter is not None
    assert_same_state(straight, resumed)


# ---------------------------------------------------------------- gaps a mutation run found

def test_a_signal_during_the_last_epochs_evaluation_stops_the_run_after_saving(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, epochs=1)
    evaluate = trainer.evaluate
    signalled: list[bool] = []

    def evaluate_and_get_a_signal(x: np.ndarray, y: np.ndarray) -> dict[str, Optional[float]]:
        if not signalled:
            signalled.append(True)
            signal.raise_signal(signal.SIGTERM)
        return evaluate(x, y)
    trainer.evaluate = evaluate_and_get_a_signal  # type: ignore[method-assign]
    with pytest.raises(TrainingInterrupted, match="SIGTERM: stopped after epoch 1"):
        trainer.run()
    assert checkpoint.load(trainer.checkpoint_path).extra["progress"]["epoch"] == 1


def test_a_loss_diverging_downwards_stops_the_run(tmp_path: Path) -> None:
    def unbounded_below(output: gc.Node, y: gc.Node) -> gc.Node:
        return gc.softmax_cross_entropy(output, y) - 1e7
    with pytest.raises(trainer_module.TrainingError, match=r"training loss became -1e\+07 .*above max_loss=1e\+06"):
        make_trainer(tmp_path, epochs=1, loss=unbounded_below).run()


def test_a_test_loss_above_max_loss_stops_the_run_without_a_validation_split(tmp_path: Path) -> None:
    data = splits()
    far = Splits(data.x_train, data.y_train, data.x_val[:0], data.y_val[:0], data.x_test * 1e4, data.y_test)
    with pytest.raises(trainer_module.TrainingError, match="the test loss became .* above max_loss=50"):
        make_trainer(tmp_path, epochs=1, data=far, max_loss=50.0, val_fraction=0.0).run()
    assert not (tmp_path / "history.json").exists()


class Follower(Communicator):
    """Rank 1 of 2 in one process: its collectives are its own values, and rank 0's record is
    ``record``."""

    size, rank = 2, 1

    def __init__(self, record: dict[str, Any]):
        self.record = record

    def share(self, value: Any) -> Any:
        return self.record if value is None else value


def test_a_rank_other_than_0_writes_and_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    leader = make_trainer(tmp_path / "leader", epochs=1)
    record = leader.run().history.to_dicts()[0]
    config = TrainConfig.from_options({"optimizer": "adam", "lr": 0.01, "lr_decay": 0.9, "batch_size": 32,
                                       "epochs": 1, "seed": 7})
    follower = Trainer(noisy_bn_net(), splits(), config, tmp_path / "follower", communicator=Follower(record))
    assert len(follower.run().history) == 1
    assert not (tmp_path / "follower").exists()
    assert capsys.readouterr() == ("", "")  # no summary, no epoch line, no progress bar


def test_rank_0_prints_its_summary_epochs_and_progress_bar_by_default(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = TrainConfig.from_options({"batch_size": 32, "epochs": 1})
    Trainer(noisy_bn_net(), splits(), config, tmp_path).run()
    out, err = capsys.readouterr()
    assert "trainable parameters: 291" in out and "epoch 1/1  lr 0.01  train loss" in out
    assert "epoch 1/1:" in err and "0/8" in err  # tqdm's bar


def test_a_config_made_directly_is_validated_by_the_trainer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="epochs must be an integer >= 1, got 0"):
        Trainer(noisy_bn_net(), splits(), TrainConfig(epochs=0), tmp_path)


def test_a_loss_with_the_wrong_parameters_or_result_is_named(tmp_path: Path) -> None:
    with pytest.raises(gc.GraphcError, match=r"loss\(output, y\) cannot be called as graphc calls it"):
        make_trainer(tmp_path, epochs=1, loss=lambda output: gc.mean(output))
    with pytest.raises(gc.GraphcError, match=r"loss\(output, y\) must return a scalar graph node, got shape "
                                             r"\[N,3\]; average"):
        make_trainer(tmp_path, epochs=1, loss=lambda output, y: output * 2.0)
    with pytest.raises(gc.GraphcError, match=r"must return a scalar graph node, got float"):
        make_trainer(tmp_path, epochs=1, loss=lambda output, y: 0.5)


@pytest.mark.parametrize("option, good, bad", [
    ("lr", [None, 1e-9, 5.0], [0.0, -1.0, float("inf"), float("nan"), "fast", True]),
    ("lr_decay", [1e-9, 1.0, 2.0], [0.0, -0.5, float("inf"), float("nan"), None]),
    ("batch_size", [1, 2**31 - 1], [0, 2**31, 1.5, "32", True]),
    ("epochs", [1, 1000], [0, -1, 2.0, None]),
    ("seed", [0, 2**40], [-1, 0.5, "7"]),
    ("val_fraction", [0.0, 0.5, 0.999], [1.0, -0.1, float("nan"), "0.1"]),
    ("patience", [None, 1], [0, -2, 1.5]),
    ("monitor", ["val_loss", "val_mae"], ["loss", "val_f1", None]),
    ("task", [None, "regression"], ["clustering", 1]),
    ("optimizer", ["sgd", "Adam"], ["lbfgs", 3]),
    ("optimizer_options", [{}, {"beta1": 0.8}], [[], "beta1=0.8"]),
    ("backend", ["numpy", "cuda-emulator"], ["tpu", None]),
    ("max_loss", [1.0, 1e30], [0.0, -5.0, float("nan"), "big"]),
    ("check_numerics", [True, False], [1, "yes", None]),
])
def test_every_option_is_checked_at_its_bounds(option: str, good: list[Any], bad: list[Any]) -> None:
    for value in good:
        TrainConfig(**{option: value}).validate()
    for value in bad:
        with pytest.raises(ConfigError, match=f"{option} must"):
            TrainConfig(**{option: value}).validate()
