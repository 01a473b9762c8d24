"""The train step of a model file, built for looking at rather than training.

``graphc show`` needs graph inputs without training: their shape comes from a
data set (loaded, so its real shape and size are used), from a shape the user
gives, or, with neither, from Fashion-MNIST's known shape and size, the data
set ``graphc train`` uses by default.  With a given shape the targets are
class labels when the loss accepts them (the default cross-entropy does) and
otherwise values shaped like the model's output (a regression loss such as
MSE).  The number of training examples matters only to a learning-rate
schedule that decays per epoch, so that ``show`` prints the step ``train``
would run.
"""
from __future__ import annotations

import math
from typing import Optional

from graphc import ops
from graphc.compiler import compile as compile_graph
from graphc.errors import DTypeError, ShapeError
from graphc.ir.node import Node
from graphc.compiler.compiled_step import CompiledStep
from graphc.train.model_file import ModelFile
from graphc.train.trainer import (MAX_SIZE, ConfigError, TrainConfig, load_splits, make_optimizer, model_loss,
                                  model_output)

FASHION_MNIST_SHAPE = (784,)
FASHION_MNIST_TRAIN = 60_000


def parse_shape(text: str) -> tuple[int, ...]:
    """``"784"``, ``"28,28"`` or ``"28x28"`` as the shape of one example."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(not 1 <= d <= MAX_SIZE for d in shape):
        raise ConfigError(f"--input-shape {text!r} is not a shape: give one example's sizes, "
                          f"such as 784 or 28,28 (each from 1 to {MAX_SIZE})")
    return shape


def build_step(model_file: ModelFile, config: TrainConfig, input_shape: Optional[tuple[int, ...]] = None,
               dataset: Optional[str] = None, data_dir: Optional[str] = None) -> CompiledStep:
    """The train step ``graphc train`` would compile, with inputs shaped as described above."""
    if input_shape is not None and dataset is not None:
        raise ConfigError("give either --input-shape or --dataset, not both")
    if dataset is not None:
        splits = load_splits(dataset, data_dir, config.val_fraction, config.seed)
        x = ops.input("x", (None,) + splits.x_train.shape[1:], splits.x_train.dtype.name)
        labels = ops.input("y", (None,) + splits.y_train.shape[1:], splits.y_train.dtype.name)
        loss = model_loss(model_file.loss, model_output(model_file.model, x, training=True), labels)
        examples = len(splits.x_train)
    else:
        x = ops.input("x", (None,) + (input_shape or FASHION_MNIST_SHAPE), "float32")
        loss = _loss_with_fitting_targets(model_file, model_output(model_file.model, x, training=True))
        examples = FASHION_MNIST_TRAIN - int(FASHION_MNIST_TRAIN * config.val_fraction)
    return compile_graph(loss, make_optimizer(config, math.ceil(examples / config.batch_size)),
                         backend=config.backend)


def _loss_with_fitting_targets(model_file: ModelFile, output: Node) -> Node:
    """The loss on integer class labels if it takes them, else on targets shaped like ``output``."""
    labels = ops.input("y", (None,) + output.shape[1:-1], "int32")
    try:
        return model_loss(model_file.loss, output, labels)
    except (ShapeError, DTypeError) as labels_refused:
        targets = ops.input("y", (None,) + output.shape[1:], output.dtype)
        try:
            return model_loss(model_file.loss, output, targets)
        except (ShapeError, DTypeError):
            raise labels_refused from None
