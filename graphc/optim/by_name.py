"""Optimizers by name, for the command line (``--optimizer adam --lr 1e-3``) and configs."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Optional

from graphc.optim.adam import AdaMax, Adam, AMSGrad, Nadam
from graphc.optim.adaptive import Adadelta, Adagrad, RMSprop
from graphc.optim.base import Optimizer
from graphc.optim.checks import OptimizerError
from graphc.optim.schedules import LearningRate
from graphc.optim.sgd import SGD, Momentum, Nesterov

BY_NAME: dict[str, type[Optimizer]] = {cls.name: cls for cls in (
    SGD, Momentum, Nesterov, Adagrad, Adadelta, RMSprop, Adam, AdaMax, Nadam, AMSGrad)}


def make(name: str, lr: Optional[LearningRate] = None, **options: Any) -> Optimizer:
    """The optimizer called ``name`` (any case), with ``lr`` (its own default when None) and options."""
    cls = BY_NAME.get(name.lower())
    if cls is None:
        raise OptimizerError(f"unknown optimizer {name!r}; choose one of {', '.join(BY_NAME)}")
    accepted = [f.name for f in fields(cls) if f.name != "lr"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise OptimizerError(f"{cls.name} has no option {', '.join(map(repr, unknown))}; "
                             f"it takes {', '.join(accepted)}")
    return cls(**options) if lr is None else cls(lr, **options)
