"""Layers and model building blocks; every one compiles into the train step."""
from graphc.nn.batchnorm import BatchNorm
from graphc.nn.layers import Dense, Sequential, l2, weights
from graphc.nn.mixtures import Ensemble, MixtureOfExperts
from graphc.nn.module import ACTIVATIONS, Activation, Lambda, Module, attach_updates
from graphc.nn.noise import Dropout, GaussianNoise
from graphc.nn.summary import summary
from graphc.ops import relu, sigmoid, tanh

__all__ = ["ACTIVATIONS", "Activation", "BatchNorm", "Dense", "Dropout", "Ensemble", "GaussianNoise", "Lambda",
           "MixtureOfExperts", "Module", "Sequential", "attach_updates", "l2", "relu", "sigmoid", "summary",
           "tanh", "weights"]
