"""Gaussian noise injection: a regularizer that exists only while training.

At inference the layer returns its input node itself, so the inference graph
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
