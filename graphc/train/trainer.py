"""The training loop: epochs of compiled steps, evaluation, checkpoints and early stopping.

The loop's one hard promise is that a run stopped and resumed is the run that
was never stopped, bit for bit.  Everything that decides the numbers is either
a pure function of (seed, epoch) — the data split, each epoch's batch order,
the learning-rate schedule, which lives in the graph and reads the
optimizer's step counter — or is held in the variable store and its random
generator, which a checkpoint saves whole.  A stop signal (Ctrl-C's SIGINT,
a scheduler's SIGTERM, a closed terminal's SIGHUP) is therefore honoured
between two steps, never inside one (a step writes many variables in turn):
the first asks the loop to checkpoint the state after the current batch and
stop, a second interrupts at once.  Under ``mpirun`` the signal may reach one
rank only: the ranks' requests ride in the step's allreduce, so all of them
stop after the same step, and rank 0 writes the state they share.

A run is a classification (accuracy is reported) or a regression (mean
squared and absolute errors are): the ``task`` option says which, else the
loss does (cross-entropies classify, ``mse`` regresses), else the targets
(integer labels classify).  With early stopping (``patience``), a validation
metric is watched (``monitor``, by default the validation loss) and at the end
of the run the parameters of the best epoch are put back, so the final test
metrics are those of the model validation chose; ``best.npz`` keeps them
across restarts.  Without early stopping the final model is the last epoch's.
"""
from __future__ import annotations

import inspect
import json
import math
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
from tqdm import tqdm

from graphc import backends, nn, ops, optim
from graphc.compiler import compile as compile_graph
from graphc.composites import mse, sigmoid_binary_cross_entropy, softmax_cross_entropy
from graphc.data import Batches, load_fashion_mnist, load_mnist, train_val_split
from graphc.errors import CheckpointError, GraphcError, ShapeError
from graphc.ir import dtypes
from graphc.ir.graph import toposort
from graphc.ir.node import Node
from graphc.ir.shapes import fmt
from graphc.parallel import Communicator
from graphc.parallel.communicator import batch_rows
from graphc.parallel.replicas import broadcast_variables, check_agreement, check_replicas, shards
from graphc.compiler.train_step import STOP_INPUT, STOP_OUTPUT
from graphc.runtime import memory_check, numerics
from graphc.runtime.store import Store
from graphc.train import checkpoint, data_checks, fingerprint, run_folder
from graphc.train.history import EpochRecord, History
from graphc.train.progress import Progress, is_integer, is_number, read_progress

Model = Callable[..., Node]
Loss = Callable[[Node, Node], Node]
Log = Callable[[str], None]

MAX_SIZE = 2**31 - 1  # the largest batch, limit or dimension taken from a user: NumPy's C sizes hold it
CHECKPOINT_NAME = "checkpoint.npz"
BEST_NAME = "best.npz"
EVAL_BATCH = 10_000  # rows per evaluation call, which bounds its memory


class ConfigError(GraphcError, ValueError):
    """Trainer options that cannot work together or are out of range."""


class TrainingError(GraphcError):
    """Training that cannot go on, such as a loss that became NaN."""


class TrainingInterrupted(KeyboardInterrupt):
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP), after the state was saved; ``str()`` says where
    and how to resume, ``signum`` which signal it was."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


# ------------------------------------------------------------------ options

@dataclass
class TrainConfig:
    optimizer: str = "sgd"
    lr: Optional[float] = None  # None: the optimizer's own default
    lr_decay: float = 1.0  # the learning rate is multiplied by this after every epoch
    batch_size: int = 128
    epochs: int = 10
    seed: int = 0
    val_fraction: float = 0.1
    patience: Optional[int] = None  # stop after this many epochs without a better validation metric
    monitor: str = "val_loss"  # the validation metric early stopping and the best epoch go by
    task: Optional[str] = None  # "classification" or "regression"; None: told by the loss, else the targets
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    backend: str = "numpy"
    max_loss: float = 1e6  # a loss above this (or not finite) ends the run: it has diverged
    check_numerics: bool = False  # find the first node that went non-finite (slow; for debugging)

    @classmethod
    def from_options(cls, *layers: Mapping[str, Any]) -> "TrainConfig":
        """Merge option dicts, later ones winning (model-file defaults, then command-line flags)."""
        known = {f.name for f in fields(cls)}
        merged: dict[str, Any] = {}
        for layer in layers:
            unknown = sorted(set(layer) - known)
            if unknown:
                raise ConfigError(f"unknown trainer option '{unknown[0]}'; known options: {', '.join(sorted(known))}")
            merged.update(layer)
        config = cls(**merged)
        config.validate()
        return config

    def validate(self) -> None:
        """Types first (a model file's ``defaults`` may hold anything), then ranges (which NaN fails)."""
        _require(isinstance(self.optimizer, str) and self.optimizer.lower() in optim.BY_NAME,
                 f"optimizer must be one of {', '.join(optim.BY_NAME)}, got {self.optimizer!r}")
        _require(self.lr is None or (is_number(self.lr) and 0 < self.lr < math.inf),
                 f"lr must be a positive number, got {self.lr!r}")
        _require(is_number(self.lr_decay) and 0 < self.lr_decay < math.inf,
                 f"lr_decay must be a positive number, got {self.lr_decay!r}")
        _require(is_integer(self.batch_size) and 1 <= self.batch_size <= MAX_SIZE,
                 f"batch_size must be an integer from 1 to {MAX_SIZE}, got {self.batch_size!r}")
        _require(is_integer(self.epochs) and self.epochs >= 1,
                 f"epochs must be an integer >= 1, got {self.epochs!r}")
        _require(is_integer(self.seed) and self.seed >= 0, f"seed must be an integer >= 0, got {self.seed!r}")
        _require(is_number(self.val_fraction) and 0.0 <= self.val_fraction < 1.0,
                 f"val_fraction must lie in [0, 1), got {self.val_fraction!r}")
        _require(self.patience is None or (is_integer(self.patience) and self.patience >= 1),
                 f"patience must be an integer >= 1, got {self.patience!r}")
        _require(self.patience is None or self.val_fraction > 0,
                 f"early stopping (patience) watches the validation set's {self.monitor}; set val_fraction above 0")
        _require(self.monitor in MONITORS, f"monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}")
        _require(self.task is None or self.task in TASKS,
                 f"task must be one of {', '.join(TASKS)} (or left out), got {self.task!r}")
        _require(isinstance(self.optimizer_options, dict),
                 f"optimizer_options must be a dict, got {type(self.optimizer_options).__name__}")
        _require(self.backend in backends.NAMES,
                 f"backend must be one of {', '.join(backends.NAMES)}, got {self.backend!r}")
        _require(is_number(self.max_loss) and self.max_loss > 0,
                 f"max_loss must be a positive number, got {self.max_loss!r}")
        _require(isinstance(self.check_numerics, bool),
                 f"check_numerics must be true or false, got {self.check_numerics!r}")

    def replay_key(self) -> dict[str, Any]:
        """The options a resumed run must share with the run that wrote the checkpoint
        (the number of epochs and the watches on the numbers may change)."""
        key = asdict(self)
        for watch_only in ("epochs", "max_loss", "check_numerics"):
            del key[watch_only]
        return key


TASKS = ("classification", "regression")
METRICS = {"classification": ("accuracy",), "regression": ("mse", "mae")}  # besides the loss
MONITORS = ("val_loss", "val_accuracy", "val_mse", "val_mae")


def infer_task(config: TrainConfig, loss: Callable, y: np.ndarray) -> str:
    """Classification or regression: as configured, else by the loss, else by the targets' type."""
    if config.task is not None:
        return config.task
    if loss is mse:
        return "regression"
    if loss in (softmax_cross_entropy, sigmoid_binary_cross_entropy) or y.dtype.kind in "iub":
        return "classification"
    return "regression"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def base_lr(config: TrainConfig) -> float:
    """The learning rate of the first epoch: the configured one, else the optimizer's default."""
    if config.lr is not None:
        return config.lr
    return float(optim.make(config.optimizer, **config.optimizer_options).lr)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optim.Optimizer:
    """The configured optimizer; with ``lr_decay`` its learning rate drops once per epoch."""
    lr: Any = config.lr
    if config.lr_decay != 1.0:
        lr = optim.StepDecay(base_lr(config), every=steps_per_epoch, factor=config.lr_decay)
    return optim.make(config.optimizer, lr, **config.optimizer_options)


# ------------------------------------------------------------------ data

@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}

    def named(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {"training": (self.x_train, self.y_train), "validation": (self.x_val, self.y_val),
                "test": (self.x_test, self.y_test)}


DATASETS = {"fashion-mnist": load_fashion_mnist, "mnist": load_mnist}


def load_splits(dataset: str, data_dir: Optional[str], val_fraction: float, seed: int,
                limit: Optional[int] = None) -> Splits:
    """Train/validation/test arrays; ``limit`` keeps the first examples of the training file
    (before the validation split); the test set is always whole."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown data set '{dataset}'; choose one of {', '.join(DATASETS)}")
    if limit is not None and not 2 <= limit <= MAX_SIZE:
        raise ConfigError(f"limit must be from 2 to {MAX_SIZE} examples, got {limit}")
    data = DATASETS[dataset](data_dir)
    x, y = data.x_train[:limit], data.y_train[:limit]
    x_train, y_train, x_val, y_val = train_val_split(x, y, val_fraction, seed)
    return Splits(x_train, y_train, x_val, y_val, data.x_test, data.y_test)


# ------------------------------------------------------------------ graphs

def _check_signature(function: Callable, what: str, *args: Any, **kwargs: Any) -> None:
    """Refuse a model or loss that cannot take graphc's arguments, before calling it (the
    TypeError would otherwise point into graphc, not at the user's definition)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some callables have no signature to inspect; call them as they are
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise GraphcError(f"{what} cannot be called as graphc calls it ({exc}); "
                          f"its parameters are {signature}") from None


def model_output(model: Model, x: Node, training: bool) -> Node:
    _check_signature(model, "model(x, training)", x, training=training)
    output = model(x, training=training)
    if not isinstance(output, Node):
        raise GraphcError(f"model(x, training) returned {type(output).__name__}, not a graph node; "
                          f"return the network's output (the logits)")
    return output


def model_loss(loss: Loss, output: Node, y: Node) -> Node:
    _check_signature(loss, "loss(output, y)", output, y)
    value = loss(output, y)
    if not isinstance(value, Node) or value.shape != ():
        found = f"shape {fmt(value.shape)}" if isinstance(value, Node) else type(value).__name__
        raise GraphcError(f"loss(output, y) must return a scalar graph node, got {found}; "
                          f"average the per-example losses (gc.mean)")
    return value


def inputs_like(x: np.ndarray, y: np.ndarray) -> tuple[Node, Node]:
    """Graph inputs ``x`` and ``y`` shaped like one batch of the arrays (any batch size)."""
    return (ops.input("x", (None,) + x.shape[1:], x.dtype.name),
            ops.input("y", (None,) + y.shape[1:], y.dtype.name))


def describe_model(model: Model, x: Node, output: Node) -> str:
    """The model's layers (for modules) or parameters (for functions), shapes and counts."""
    head = f"input x: {fmt(x.shape)} -> output: {fmt(output.shape)}"
    if isinstance(model, nn.Module):
        return head + "\n" + nn.summary(model)
    params = [n for n in toposort([output]) if n.op == "param"]
    width = max([len(p.name) for p in params] + [len("parameter")])
    rows = [f"{'parameter':<{width}}  {'shape':<14} {'count':>10}"]
    rows += [f"{p.name:<{width}}  {fmt(p.shape):<14} {math.prod(p.shape):>10,}" for p in params]
    rows.append(f"trainable parameters: {sum(math.prod(p.shape) for p in params):,}")
    return "\n".join([head] + rows)


# ------------------------------------------------------------------ progress

@dataclass
class TrainResult:
    history: History
    test_loss: Optional[float]
    test_accuracy: Optional[float]  # None for a regression
    stopped_early: bool
    best_epoch: Optional[int]
    checkpoint: Path
    task: str = "classification"
    test_metrics: dict[str, Optional[float]] = field(default_factory=dict)  # the loss and the task's metrics


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, a scheduler or `docker stop`, a hangup


class _DeferredInterrupt:
    """Turns the first stop signal into a request the loop honours between steps."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None  # the signal that asked the run to stop
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "_DeferredInterrupt":
        """Catch the stop signals, except those the process was told to ignore: ``nohup`` ignores
        SIGHUP so that the run outlives its terminal, and it must."""
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._request)
        return self

    def _request(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise TrainingInterrupted("interrupted again before the checkpoint was written; "
                                      "the previous checkpoint is intact", signum)
        self.signum = signum

    def interrupted(self, where: str, path: Path) -> "TrainingInterrupted":
        """The stop to raise; on a rank that got no signal, another rank's request stops it."""
        cause = signal.Signals(self.signum).name if self.signum is not None else "another rank was asked to stop"
        return TrainingInterrupted(f"{cause}: stopped {where}; the checkpoint {path} holds that state exactly, "
                                   f"continue with --resume", self.signum or signal.SIGINT)

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


# ------------------------------------------------------------------ the trainer

class Trainer:
    def __init__(self, model: Model, data: Splits, config: TrainConfig, out_dir: str | Path,
                 loss: Loss = softmax_cross_entropy, log: Log = print, progress_bar: bool = True,
                 communicator: Optional[Communicator] = None):
        """With a ``communicator`` of K ranks, each rank trains on its K-th of every batch and
        rank 0 alone evaluates, logs and writes files (see :mod:`graphc.parallel`)."""
        config.validate()
        self.comm = communicator or Communicator()
        self.leader = self.comm.rank == 0
        _require(config.batch_size >= self.comm.size,
                 f"batch_size {config.batch_size} gives some of the {self.comm.size} ranks no examples; "
                 f"make it at least {self.comm.size}")
        if not self.leader:
            log, progress_bar = _silent, False
        if config.patience is not None and len(data.x_val) == 0:
            raise ConfigError("early stopping needs validation examples, but the validation split is empty; "
                              "raise val_fraction or the number of training examples")
        data_checks.check_values(data.named())
        self.data_fingerprint = data_checks.fingerprint(data.named())
        self.task = infer_task(config, loss, data.y_train)
        metric = config.monitor.removeprefix("val_")
        _require(metric == "loss" or metric in METRICS[self.task],
                 f"monitor={config.monitor} does not apply to a {self.task}; choose one of "
                 f"{', '.join('val_' + m for m in ('loss',) + METRICS[self.task])}")
        self.config, self.data, self.out_dir = config, data, Path(out_dir)
        self.log, self.progress_bar = log, progress_bar
        self.store = Store(config.seed)
        self.batches = Batches(data.x_train, data.y_train, config.batch_size, config.seed)
        self._compile(model, loss)
        memory_check.check_fits([(self.step, config.batch_size), (self.evaluate_step, EVAL_BATCH)])

    def _compile(self, model: Model, loss: Loss) -> None:
        """The train step, and the inference function (outputs and loss) sharing its variables."""
        x, y = inputs_like(self.data.x_train, self.data.y_train)
        try:
            train_output = model_output(model, x, training=True)
        except ShapeError as exc:
            raise ShapeError(f"the model does not fit the data set's examples "
                             f"x: {dtypes.SHORT[x.dtype]}{fmt(x.shape)}: {exc}") from None
        data_checks.check_model_fits(train_output, x, self.data.named())
        self.summary = describe_model(model, x, train_output)
        optimizer = make_optimizer(self.config, steps_per_epoch=len(self.batches))
        self._check_lr_fits(train_output.dtype)
        train_loss = model_loss(loss, train_output, y)
        self.model_text = fingerprint.model_text(train_loss)
        self.step_dtype = train_loss.dtype
        step_outputs = train_loss if self.comm.size == 1 else {"loss": train_loss}  # and the ranks' stop requests
        self.step = compile_graph(step_outputs, optimizer, state=self.store, backend=self.config.backend,
                                  ranks=self.comm.size)
        eval_output = model_output(model, x, training=False)
        self.evaluate_step = compile_graph({"output": eval_output, "loss": model_loss(loss, eval_output, y)},
                                           state=self.store, backend=self.config.backend)
        if self.config.check_numerics:
            self.step, self.evaluate_step = numerics.checked(self.step), numerics.checked(self.evaluate_step)

    def _check_lr_fits(self, dtype: str) -> None:
        """A learning rate the parameters' float type cannot hold fails deep in the graph: say so here."""
        lr = base_lr(self.config)
        if dtypes.is_float(dtype) and lr > float(np.finfo(dtype).max):
            raise ConfigError(f"lr={lr:g} does not fit {dtype}, the type of the model's parameters (largest "
                              f"{float(np.finfo(dtype).max):.3g}); choose a smaller --lr")

    def lr_of_epoch(self, epoch: int) -> float:
        """The learning rate during epoch ``epoch`` (counted from 0)."""
        return base_lr(self.config) * self.config.lr_decay ** epoch

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    # ---- the run ------------------------------------------------------------
    def run(self, resume: bool = False, overwrite: bool = False) -> TrainResult:
        """Train in ``out_dir``, which no other run may be using; one that already holds a run
        needs ``resume`` (continue it) or ``overwrite`` (replace it).  In a data-parallel run,
        rank 0 claims the folder for all ranks, since it alone writes there."""
        claimed = run_folder.claim(self.out_dir, resume=resume, overwrite=overwrite) if self.leader else nullcontext()
        with claimed:
            return self._run(resume)

    def _run(self, resume: bool) -> TrainResult:
        self.log(self.summary)
        check_agreement(self.comm, {"model": self.model_text, "data": json.dumps(self._data_record()),
                                    "options": json.dumps(self.config.replay_key(), sort_keys=True)})
        self._initialize_variables()
        progress, history = self._resume() if resume else (Progress(), History())
        broadcast_variables(self.store, self.comm)
        with _DeferredInterrupt() as interrupt:
            while progress.epoch < self.config.epochs and not self._should_stop(history):
                self._train_epoch(progress, history, interrupt)
                progress = self._finish_epoch(progress, history)
                if self._stop_agreed(interrupt.requested):
                    raise interrupt.interrupted(f"after epoch {progress.epoch}", self.checkpoint_path)
        return self._result(history)

    def _initialize_variables(self) -> None:
        """Create every variable now (not at the first step), so a checkpoint can be checked
        against them and loaded into them."""
        for compiled in (self.step, self.evaluate_step):
            compiled.materialize()

    def _should_stop(self, history: History) -> bool:
        return (self.config.patience is not None
                and history.epochs_since_best(self.config.monitor) >= self.config.patience)

    def _train_epoch(self, progress: Progress, history: History, interrupt: _DeferredInterrupt) -> None:
        epoch = progress.epoch
        remaining = shards(islice(self.batches.epoch(epoch), progress.batch, None), self.comm)
        with tqdm(total=len(self.batches), initial=progress.batch, unit="batch", leave=False,
                  desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=not self.progress_bar) as bar:
            tick = time.perf_counter()
            for xb, yb, window in remaining:
                try:
                    with batch_rows(*window):  # random draws of the whole batch: ranks draw as one process
                        loss, stop = self._take_step(xb, yb, interrupt.requested)
                except numerics.NonFiniteError as exc:
                    raise TrainingError(f"in epoch {epoch + 1}, batch {progress.batch + 1}: {exc}") from None
                now = time.perf_counter()
                self._account(progress, loss, len(xb), now - tick)
                tick = now
                bar.update()
                bar.set_postfix(loss=f"{progress.loss_sum / progress.examples:.4f}",
                                ex_per_s=f"{progress.examples / progress.seconds:,.0f}", refresh=False)
                if stop:
                    self._save_checkpoint(self._whole_progress(progress), history)
                    self.comm.share(None)  # the others wait for the file: a rank that ends, ends the job
                    raise interrupt.interrupted(f"in epoch {epoch + 1} after batch {progress.batch}",
                                                self.checkpoint_path)

    def _take_step(self, x: np.ndarray, y: np.ndarray, stop_requested: bool) -> tuple[float, bool]:
        """One train step: its loss, and whether the run stops after it.  Over several ranks the
        step's allreduce sums their stop requests, so every rank gets the same answer after the
        same step, whichever rank the signal reached."""
        if self.comm.size == 1:
            return float(self.step(x=x, y=y)), stop_requested
        flag = np.array(float(stop_requested), dtype=self.step_dtype)
        result = self.step(x=x, y=y, **{STOP_INPUT: flag})
        return float(result["loss"]), float(result[STOP_OUTPUT]) > 0

    def _whole_progress(self, progress: Progress) -> Progress:
        """The progress over every rank's examples, as a checkpoint records it (rank 0 resumes
        with the sums, the others from zero)."""
        loss_sum, examples = self.comm.allreduce(np.array([progress.loss_sum, progress.examples]), "sum")
        return replace(progress, loss_sum=float(loss_sum), examples=int(examples))

    def _stop_agreed(self, requested: bool) -> bool:
        """Whether any rank was asked to stop (a signal that came between steps)."""
        return bool(self.comm.allreduce(np.array([float(requested)]), "sum")[0] > 0)

    def _account(self, progress: Progress, loss: float, examples: int, seconds: float) -> None:
        self._check_loss("training loss", loss, progress.epoch, f", batch {progress.batch + 1}")
        progress.batch += 1
        progress.loss_sum += loss * examples
        progress.examples += examples
        progress.seconds += seconds

    def _check_loss(self, what: str, loss: Optional[float], epoch: int, where: str = "") -> None:
        """A loss that is not finite or above ``max_loss`` means training diverged: stop the run
        before the diverged state is recorded or checkpointed."""
        if loss is None or (math.isfinite(loss) and abs(loss) <= self.config.max_loss):
            return
        problem = "is not finite" if not math.isfinite(loss) else f"is above max_loss={self.config.max_loss:g}"
        hint = "" if self.config.check_numerics else "; --check-numerics names the node that went wrong first"
        raise TrainingError(f"the {what} became {loss:g} in epoch {epoch + 1}{where} ({problem}): training "
                            f"diverged; lower the learning rate (now {self.lr_of_epoch(epoch):g}){hint}")

    def _finish_epoch(self, progress: Progress, history: History) -> Progress:
        """Evaluate, record, save; returns the progress at the start of the next epoch."""
        record = self._record(progress)
        history.append(record)
        done = Progress(epoch=progress.epoch + 1)
        check_replicas(self.store, self.comm, f"after epoch {record.epoch}")
        if self.leader and self.config.patience is not None and history.best_epoch(self.config.monitor) == record.epoch:
            checkpoint.save(self.out_dir / BEST_NAME, self.store, self._progress_extra(done, history))
        self._save_checkpoint(done, history)
        if self.leader:
            history.write(self.out_dir)
        self.log(_epoch_line(record, self.config.epochs))
        return done

    def _record(self, progress: Progress) -> EpochRecord:
        """The epoch's record: training loss and speed over every rank's examples, evaluated by
        rank 0 and shared with the others."""
        loss_sum, examples = self.comm.allreduce(np.array([progress.loss_sum, progress.examples]), "sum")
        if not self.leader:
            return EpochRecord(**self.comm.share(None))
        val = self.evaluate(self.data.x_val, self.data.y_val)
        test = self.evaluate(self.data.x_test, self.data.y_test)
        self._check_loss("validation loss", val["loss"], progress.epoch)
        self._check_loss("test loss", test["loss"], progress.epoch)
        metrics = {"val_accuracy": None, "test_accuracy": None}  # a regression has none
        metrics.update({f"{split}_{name}": value for split, values in (("val", val), ("test", test))
                        for name, value in values.items()})
        record = EpochRecord(
            epoch=progress.epoch + 1, lr=self.lr_of_epoch(progress.epoch), train_loss=float(loss_sum / examples),
            seconds=progress.seconds, examples_per_s=float(examples / progress.seconds), ranks=self.comm.size,
            **metrics)
        return EpochRecord(**self.comm.share(asdict(record)))

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict[str, Optional[float]]:
        """The inference graph's mean loss on ``(x, y)`` and the task's metrics: accuracy for a
        classification, mean squared and absolute error (over every output value) for a
        regression.  Each is None when there are no examples."""
        names = ("loss",) + METRICS[self.task]
        if len(x) == 0:
            return dict.fromkeys(names)
        sums = dict.fromkeys(names, 0.0)
        values = 0
        for start in range(0, len(x), EVAL_BATCH):
            xb, yb = x[start:start + EVAL_BATCH], y[start:start + EVAL_BATCH]
            result = self.evaluate_step(x=xb, y=yb)
            output = np.asarray(result["output"])
            sums["loss"] += float(result["loss"]) * len(xb)
            if self.task == "classification":
                sums["accuracy"] += correct_predictions(output, yb)
            else:
                error = output.astype(np.float64) - yb.reshape(output.shape)
                sums["mse"] += float(np.sum(error * error))
                sums["mae"] += float(np.sum(np.abs(error)))
                values += error.size
        return {name: total / (values if name in ("mse", "mae") else len(x)) for name, total in sums.items()}

    # ---- checkpoints ------------------------------------------------------------
    def _progress_extra(self, progress: Progress, history: History) -> dict[str, Any]:
        return {"progress": asdict(progress), "history": history.to_dicts(),
                "config": self.config.replay_key(), "data": self._data_record(), "ranks": self.comm.size,
                "model": {"fingerprint": fingerprint.digest(self.model_text), "text": self.model_text}}

    def _data_record(self) -> dict[str, Any]:
        return {**self.data.sizes(), "fingerprint": self.data_fingerprint}

    def _save_checkpoint(self, progress: Progress, history: History) -> None:
        for name, value in self.store.values.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise TrainingError(f"variable '{name}' became NaN or infinite in epoch {progress.epoch + 1}; "
                                    f"the last checkpoint was kept; lower the learning rate "
                                    f"(now {self.lr_of_epoch(progress.epoch):g})")
        if self.leader:
            checkpoint.save(self.checkpoint_path, self.store, self._progress_extra(progress, history))

    def _resume(self) -> tuple[Progress, History]:
        path = self.checkpoint_path
        if not path.exists():
            raise CheckpointError(f"nothing to resume: {path} does not exist; train without --resume to start")
        self._check_same_run(checkpoint.load_extra(path), path)  # options and model first: they explain the rest
        saved = checkpoint.load(path, expected=self.store.values)
        if saved.extra.get("ranks", 1) != self.comm.size:
            raise CheckpointError(f"{path} was written by a run on {saved.extra.get('ranks', 1)} ranks, and this "
                                  f"one has {self.comm.size}; resume with the same number of processes (mpirun -n)")
        progress, history = read_progress(saved.extra, len(self.batches), path)
        if not self.leader:  # the checkpoint holds every rank's sums: rank 0 carries them on
            progress = replace(progress, loss_sum=0.0, examples=0)
        checkpoint.restore(self.store, saved, path)
        self.log(f"resuming from {path}: {progress.epoch} epochs done"
                 + (f", {progress.batch} batches into the next" if progress.batch else ""))
        return progress, history

    def _check_same_run(self, extra: Mapping[str, Any], path: Path) -> None:
        self._check_same_model(extra.get("model"), path)
        then_data = extra.get("data")
        if not isinstance(then_data, dict) or then_data.get("fingerprint") != self.data_fingerprint:
            then = then_data.get("fingerprint") if isinstance(then_data, dict) else None
            raise CheckpointError(
                f"{path} was written for other data (data set fingerprint {then!r}, this run's is "
                f"{self.data_fingerprint!r}); resume with the same --dataset, --data folder and --limit")
        for what, current in (("config", self.config.replay_key()), ("data", self._data_record())):
            now = json.loads(json.dumps(current))  # as the checkpoint recorded it: tuples become lists
            then = extra.get(what)
            if not isinstance(then, dict):
                raise CheckpointError(f"{path} has no '{what}' record; it was edited or damaged, delete it "
                                      f"to start afresh")
            for key in sorted(set(now) | set(then)):
                if now.get(key) != then.get(key):
                    raise CheckpointError(
                        f"{path} was written with {what} {key}={then.get(key)!r} but this run has "
                        f"{key}={now.get(key)!r}; a resumed run must repeat the original options "
                        f"(only epochs, max_loss and check_numerics may change)")

    def _check_same_model(self, then: Any, path: Path) -> None:
        """The checkpoint's model must be this one: the same forward graph, loss and parameters."""
        if then is None:  # written before checkpoints recorded their model
            self.log(f"warning: {path} does not record its model, so resuming cannot check that it is this one")
            return
        if not isinstance(then, dict) or not isinstance(then.get("text"), str):
            raise CheckpointError(f"{path} has a damaged 'model' record; delete it to start afresh")
        if then.get("fingerprint") == fingerprint.digest(self.model_text):
            return
        old, new = fingerprint.first_difference(then["text"], self.model_text)
        raise CheckpointError(f"{path} was written by another model; the first difference in its forward graph "
                              f"(graphc show --view forward):\n  then: {old or '(nothing)'}\n  now:  "
                              f"{new or '(nothing)'}\nresume with the model that wrote it, or train afresh "
                              f"with --overwrite")

    def _result(self, history: History) -> TrainResult:
        best = history.best_epoch(self.config.monitor)
        if self.config.patience is not None and best != len(history):
            best_path = self.out_dir / BEST_NAME
            checkpoint.restore(self.store, checkpoint.load(best_path, expected=self.store.values), best_path)
            self.log(f"restored the parameters of epoch {best}, the best by {self.config.monitor}")
        test = self.evaluate(self.data.x_test, self.data.y_test) if self.leader else {}
        return TrainResult(history, test.get("loss"), test.get("accuracy"), self._should_stop(history), best,
                           self.checkpoint_path, self.task, test)


def _silent(message: str) -> None:
    """The log of ranks other than 0."""


def correct_predictions(output: np.ndarray, y: np.ndarray) -> int:
    """How many examples a classifier gets right: the largest output is its class, or, for one
    output per example (a binary classifier's logit), class 1 where it is positive."""
    if output.ndim == 1 or output.shape[-1] == 1:
        predicted = output.reshape(len(output), -1)[:, 0] > 0
        labels = y.reshape(len(y), -1)[:, 0] > 0.5
    else:
        predicted = np.argmax(output, axis=-1)
        labels = y if y.ndim == 1 else np.argmax(y, axis=-1)
    return int(np.count_nonzero(predicted == labels))


SHORT_NAMES = {"loss": "loss", "accuracy": "acc", "mse": "mse", "mae": "mae"}


def _epoch_line(record: EpochRecord, epochs: int) -> str:
    parts = [f"epoch {record.epoch}/{epochs}", f"lr {record.lr:.3g}", f"train loss {record.train_loss:.4f}"]
    for split in ("val", "test"):
        for name, short in SHORT_NAMES.items():
            value = getattr(record, f"{split}_{name}")
            if value is not None:
                parts.append(f"{split} {short} {value:.4f}")
    parts.append(f"{record.seconds:.2f}s ({record.examples_per_s:,.0f} ex/s)")
    return "  ".join(parts)
