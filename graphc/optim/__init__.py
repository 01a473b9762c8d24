"""Optimizers, each one rule over the packed parameter vector, compiled into the train step."""
from graphc.optim.adam import AdaMax, Adam, AMSGrad, Nadam
from graphc.optim.adaptive import Adadelta, Adagrad, RMSprop
from graphc.optim.base import Optimizer, flush_denormals, moving_average
from graphc.optim.checks import OptimizerError
from graphc.optim.by_name import BY_NAME, make
from graphc.optim.schedules import Cosine, Exponential, Schedule, StepDecay
from graphc.optim.sgd import SGD, Momentum, Nesterov

__all__ = ["Optimizer", "OptimizerError", "BY_NAME", "make", "flush_denormals", "moving_average",
           "Schedule", "StepDecay", "Exponential", "Cosine",
           "SGD", "Momentum", "Nesterov", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdaMax", "Nadam", "AMSGrad"]
