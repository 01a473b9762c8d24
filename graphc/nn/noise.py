"""Gaussian noise injection and dropout: regularizers that exist only while training.

At inference each layer returns its input node itself, so the inference graph
contains no random op at all (nothing to draw, nothing to optimize away).
"""
from __future__ import annotations

from typing import Optional

from graphc import ops
from graphc.errors import GraphcError
from graphc.ir.node import Node
from graphc.nn.module import Module


class GaussianNoise(Module):
    """``x + std · ε`` with ε ~ N(0, 1) drawn afresh at every step when training; ``x`` otherwise."""

    kind = "gaussian_noise"

    def __init__(self, std: float, name: Optional[str] = None):
        super().__init__(name)
        if std < 0:
            raise GraphcError(f"GaussianNoise std must be non-negative, got {std}")
        self.std = std

    def forward(self, x: Node, training: bool) -> Node:
        if not training or self.std == 0:
            return x
        return x + self.std * ops.normal(x.shape, x.dtype)

    def describe(self) -> str:
        return f"gaussian_noise({self.std:g})"


class Dropout(Module):
    """``m ⊙ x`` with each mᵢ = 1/(1 − p) with probability 1 − p, else 0, drawn afresh at every step
    when training (inverted dropout: the expected value is x, so inference needs no rescaling);
    ``x`` otherwise."""

    kind = "dropout"

    def __init__(self, p: float, name: Optional[str] = None):
        super().__init__(name)
        if not 0.0 <= p < 1.0:
            raise GraphcError(f"Dropout p (the probability of dropping a value) must lie in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Node, training: bool) -> Node:
        if not training or self.p == 0:
            return x
        kept = ops.cast(ops.greater_equal(ops.uniform(x.shape, x.dtype), self.p), x.dtype)
        return x * (kept * (1.0 / (1.0 - self.p)))

    def describe(self) -> str:
        return f"dropout({self.p:g})"
