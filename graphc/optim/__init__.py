"""Optimizers, each one rule over the packed parameter vector, compiled into the train step."""
from graphc.optim.base import Optimizer
from graphc.optim.sgd import SGD

__all__ = ["Optimizer", "SGD"]
