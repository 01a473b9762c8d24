"""Layers and model building blocks; every one compiles into the train step."""
from graphc.nn.layers import Dense, Sequential, l2, weights
from graphc.nn.module import Lambda, Module
from graphc.ops import relu, sigmoid, tanh

__all__ = ["Dense", "Sequential", "Lambda", "Module", "l2", "weights", "relu", "sigmoid", "tanh"]
