"""Learning-rate schedules, computed inside the train step from the step counter.

A schedule is a function from the number of steps already taken, k = 0, 1,
2, ... (a float64 scalar node read from the optimizer's counter), to the
learning rate of step k + 1.  Because it is part of the graph, the schedule
survives checkpoints with the counter, prints with the program and needs no
callback between steps.  Step counts are optimizer steps, not epochs.

A plain float learning rate is the constant schedule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

from graphc import ops
from graphc.ir.node import Node
from graphc.optim.checks import (OptimizerError, check_fields, checked, nonnegative_number, positive,
                                 positive_integer)


class Schedule:
    """Subclasses define ``__call__(k)``: the learning rate after ``k`` completed steps."""

    def __post_init__(self) -> None:
        check_fields(self)

    def __call__(self, k: Node) -> Node:
        raise NotImplementedError


LearningRate = Union[float, Schedule]


@dataclass(frozen=True)
class StepDecay(Schedule):
    """lr · factor^⌊k / every⌋: drop by ``factor`` every ``every`` steps."""

    lr: float = positive()
    every: int = checked(positive_integer)
    factor: float = positive(0.5)

    def __call__(self, k: Node) -> Node:
        # k >= 0, so truncation toward zero is the floor.
        drops = ops.cast(ops.cast(k / self.every, "int64"), k.dtype)
        return self.lr * self.factor ** drops


@dataclass(frozen=True)
class Exponential(Schedule):
    """lr · rate^k: multiply by ``rate`` after every step (rate = 0.999 halves it in ~693 steps)."""

    lr: float = positive()
    rate: float = positive()

    def __call__(self, k: Node) -> Node:
        return self.lr * self.rate ** k


@dataclass(frozen=True)
class Cosine(Schedule):
    """floor + (lr − floor) · (1 + cos(π · min(k, T) / T)) / 2 with T = ``total_steps``
    (Loshchilov & Hutter's SGDR without restarts): from ``lr`` down to ``floor``, then flat."""

    lr: float = positive()
    total_steps: int = checked(positive_integer)
    floor: float = checked(nonnegative_number, 0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.floor > self.lr:
            raise OptimizerError(f"Cosine: floor {self.floor} is above the initial lr {self.lr}; "
                                 f"the schedule decays from lr down to floor")

    def __call__(self, k: Node) -> Node:
        progress = ops.minimum(k, float(self.total_steps)) / float(self.total_steps)
        return self.floor + (self.lr - self.floor) * 0.5 * (1.0 + ops.cos(math.pi * progress))
