"""Tests of what the trainer refuses before and during training: a model that does not fit its data,
non-finite data, a diverging or non-finite loss, a model too large for memory; and of the numerics
check that names the node which first went non-finite."""
from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import graphc as gc
from graphc import nn
from graphc.errors import DataError, ShapeError
from graphc.ir.program import Program
from graphc.runtime import memory_check, numerics
from graphc.compiler.compiled_step import CompiledStep
from graphc.train import Splits, TrainingError, checkpoint

from test_train import CLASSES, FEATURES, make_trainer, splits

HERE = Path(__file__).name


# ------------------------------------------------------------------ model against data

def test_too_few_outputs_for_the_classes_names_both(tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match=r"to f32\[N,2\], but the data set has 3 classes \(labels 0..2\)"):
        make_trainer(tmp_path, epochs=1, net=nn.Sequential(nn.Dense(8), nn.relu, nn.Dense(2)))


def test_input_width_that_does_not_fit_names_the_data_and_the_line(tmp_path: Path) -> None:
    def model(x: gc.Node, training: bool) -> gc.Node:
        return x @ gc.param("W", (FEATURES + 1, CLASSES))

    with pytest.raises(ShapeError, match=rf"examples x: f32\[N,{FEATURES}\]: matmul.*\n  at .*{HERE}"):
        make_trainer(tmp_path, epochs=1, net=model)


def test_targets_of_another_shape_are_refused(tmp_path: Path) -> None:
    data = splits()
    one_hot = {name: np.eye(CLASSES + 1, dtype=np.float32)[getattr(data, name)]
               for name in ("y_train", "y_val", "y_test")}
    with pytest.raises(ShapeError, match=r"targets are \[N,4\]"):
        make_trainer(tmp_path, epochs=1, data=Splits(data.x_train, one_hot["y_train"], data.x_val,
                                                     one_hot["y_val"], data.x_test, one_hot["y_test"]))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_refused_naming_the_example(tmp_path: Path, bad: float) -> None:
    data = splits()
    x_val = data.x_val.copy()
    x_val[5, 3] = bad
    with pytest.raises(DataError, match="example 5 of the validation split holds NaN or infinity"):
        make_trainer(tmp_path, epochs=1, data=Splits(data.x_train, data.y_train, x_val, data.y_val,
                                                     data.x_test, data.y_test))


def test_negative_labels_are_refused(tmp_path: Path) -> None:
    data = splits()
    y_test = data.y_test.copy()
    y_test[0] = -1
    with pytest.raises(DataError, match="test split has label -1"):
        make_trainer(tmp_path, epochs=1, data=Splits(data.x_train, data.y_train, data.x_val, data.y_val,
                                                     data.x_test, y_test))


# ------------------------------------------------------------------ diverging runs

def test_an_exploding_loss_stops_the_run_and_keeps_no_record_of_it(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, epochs=2, optimizer="sgd", lr=1e4, lr_decay=1.0, max_loss=100.0)
    with pytest.raises(TrainingError, match=r"training loss became .* \(is above max_loss=100\): training "
                                            r"diverged; lower the learning rate \(now 10000\)"):
        trainer.run()
    assert not (tmp_path / "history.json").exists() and not trainer.checkpoint_path.exists()


class PoisonLastStep:
    """The train step, but the update of its last call leaves a NaN in a weight: what a step that
    diverges at the very end of a run does (its loss, computed before the update, is finite)."""

    def __init__(self, trainer: Any, calls: int):
        self.trainer, self.step, self.calls = trainer, trainer.step, calls
        self.materialize = self.step.materialize

    def __call__(self, **feeds: Any) -> Any:
        loss = self.step(**feeds)
        self.calls -= 1
        if self.calls == 0:
            self.trainer.store.values["dense1.W"][0, 0] = np.nan
        return loss


def test_a_nan_made_by_the_last_step_fails_the_run_before_it_is_recorded(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, epochs=2)
    trainer.step = PoisonLastStep(trainer, calls=2 * len(trainer.batches))
    with pytest.raises(TrainingError, match="validation loss became nan in epoch 2 .*not finite"):
        trainer.run()
    history = json.loads((tmp_path / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1]
    assert checkpoint.load(trainer.checkpoint_path).extra["progress"]["epoch"] == 1


def test_a_nan_in_the_state_is_never_checkpointed(tmp_path: Path) -> None:
    data = splits()
    empty_x, empty_y = data.x_train[:0], data.y_train[:0]  # no evaluation to catch it
    trainer = make_trainer(tmp_path, epochs=1, data=Splits(data.x_train, data.y_train, empty_x, empty_y,
                                                           empty_x, empty_y))
    trainer.step = PoisonLastStep(trainer, calls=len(trainer.batches))
    with pytest.raises(TrainingError, match="variable 'dense1.W' became NaN or infinite"):
        trainer.run()
    assert not trainer.checkpoint_path.exists()


def log_of_dense(x: gc.Node, training: bool) -> gc.Node:
    return gc.log(nn.Dense(CLASSES, name="dense")(x))  # log of a negative number: NaN


def test_a_nan_loss_suggests_the_numerics_check(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"training loss became nan in epoch 1, batch 1 .*--check-numerics"):
        make_trainer(tmp_path, epochs=1, net=log_of_dense).run()


def test_the_numerics_check_names_the_first_non_finite_node_and_its_line(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, epochs=1, net=log_of_dense, check_numerics=True)
    before = {name: value.copy() for name, value in trainer.store.values.items()}
    with pytest.raises(TrainingError, match=rf"epoch 1, batch 1: .* = log .*\n  at .*{HERE}:\d+: "
                                            r"return gc.log\(nn.Dense"):
        trainer.run()
    for name, value in before.items():  # the bad step was undone
        assert np.array_equal(trainer.store.values[name], value), name


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_node_graphc_built_is_traced_to_the_users_line_it_reads(tmp_path: Path) -> None:
    # The loss is graphc's own cross-entropy: its nodes have no line of the user's, the layers do.
    trainer = make_trainer(tmp_path, epochs=3, optimizer="sgd", lr=1e6, max_loss=1e300, check_numerics=True)
    with pytest.raises(TrainingError, match=r"first non-finite value .*(\n  at | built at ).*test_train.py:\d+"):
        trainer.run()


def test_a_node_without_a_line_is_traced_to_the_nearest_line_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    x = gc.input("x", (None, 2))
    scaled = x * 2.0
    with monkeypatch.context() as patch:
        patch.setattr("graphc.ir.node.user_site", lambda: None)  # as for nodes graphc builds itself
        bad = gc.log(scaled - 10.0)
    with np.errstate(invalid="ignore"):
        found = numerics.locate(Program("p", {"out": bad}), {"x": np.ones((1, 2), np.float32)}, {})
    assert found is not None
    assert re.search(rf"= log .*\(it reads %\d+, built at .*{HERE}:\d+: scaled = x \* 2.0\)", found), found


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_the_numerics_check_names_a_gradient_node_by_its_forward_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(numerics.ENV_VAR, "1")
    x = gc.input("x", (None, 2))
    w = gc.param("w", (2,), init=lambda rng, shape, dtype: np.ones(shape, dtype))
    root = gc.sqrt(x * w)  # finite at 0, but its gradient 1/(2·sqrt(0)) is infinite
    step = gc.compile(gc.mean(root), optimizer=gc.optim.SGD(0.1))
    with pytest.raises(numerics.NonFiniteError, match=r"\(inf\) is made by .*gradient rule of .*sqrt.*\n  at "):
        step(x=np.zeros((3, 2), np.float32))
    assert np.array_equal(step.state.values["w"], np.ones(2, np.float32))


def test_debug_nans_refuses_non_finite_feeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(numerics.ENV_VAR, "1")
    x = gc.input("x", (None, 2))
    step = gc.compile(gc.mean(x @ gc.param("v", (2, 1))), optimizer=gc.optim.SGD(0.1))
    feed = np.ones((3, 2), np.float32)
    step(x=feed)
    kept = step.state.values["v"].copy()
    feed[1, 1] = np.inf
    with pytest.raises(numerics.NonFiniteError, match="input 'x' holds NaN or infinity"):
        step(x=feed)
    assert np.array_equal(step.state.values["v"], kept)


def test_the_replay_gets_inputs_only_the_unoptimized_program_reads() -> None:
    """The rewrites fold a sum of one-hot rows to 1, so the optimized step no longer reads y;
    the replay runs the program as written, which does."""
    x, y = gc.input("x", (None, 3), "float64"), gc.input("y", (None,), "int32")
    step = numerics.checked(gc.compile(gc.sum(gc.log(x)) + gc.sum(gc.sum(gc.one_hot(y, 3, "float64"), axis=-1))))
    with pytest.raises(numerics.NonFiniteError, match=r"is made by %\d+ f64\[N,3\] = log x"), \
            np.errstate(invalid="ignore"):
        step(x=np.array([[-1.0, 1.0, 1.0]]), y=np.array([0], np.int32))


def test_without_debug_nans_a_step_is_not_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(numerics.ENV_VAR, raising=False)
    assert isinstance(gc.compile(gc.input("x", (2,)) * 2.0), CompiledStep)


# ------------------------------------------------------------------ memory

def test_the_memory_need_counts_exactly_the_variables_the_run_creates(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, epochs=1)
    need = memory_check.need([(trainer.step, 32), (trainer.evaluate_step, 100)])
    trainer.run()
    assert need.variable_bytes == sum(value.nbytes for value in trainer.store.values.values())
    assert need.buffer_bytes > 0


def test_a_model_larger_than_memory_is_refused_before_allocating(tmp_path: Path) -> None:
    def huge(x: gc.Node, training: bool) -> gc.Node:
        hidden = x @ gc.param("wide", (FEATURES, 10**6))
        return hidden @ gc.param("huge", (10**6, 10**6)) @ gc.param("out", (10**6, CLASSES))

    tracemalloc.start()
    try:
        with pytest.raises(memory_check.MemoryCheckError,
                           match=r"needs .* TB .* available; the largest is param 'huge' "
                                 r"float32\[1000000,1000000\] \(4.0 TB\)"):
            make_trainer(tmp_path, epochs=1, net=huge)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100e6


def test_a_model_that_fits_passes_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make_trainer(tmp_path, epochs=1)
    need = memory_check.need([(trainer.step, 32)])
    monkeypatch.setattr(memory_check, "available_bytes", lambda: need.total)
    assert memory_check.check_fits([(trainer.step, 32)]) == need
    monkeypatch.setattr(memory_check, "available_bytes", lambda: need.total - 1)
    with pytest.raises(memory_check.MemoryCheckError):
        memory_check.check_fits([(trainer.step, 32)])
