"""Per-coordinate learning rates from accumulated squared gradients (Ruder 2016, sections 4.3 to 4.5).

ε is placed where Ruder's equations place it: inside the square root.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphc import ops
from graphc.ir.node import Node
from graphc.optim.base import LearningRate, Optimizer, Slots, flush_denormals, learning_rate, moving_average
from graphc.optim.checks import decay_rate, positive


@dataclass
class Adagrad(Optimizer):
    """G ← G + g²;  θ ← θ − η g / √(G + ε)  (Duchi et al. 2011)."""

    name: ClassVar[str] = "adagrad"

    lr: LearningRate = learning_rate(0.01)
    eps: float = positive(1e-8)

    def rule(self, theta: Node, g: Node, t: Node, lr: Node) -> tuple[Node, Slots]:
        total_old = self.slot(theta, "sum_g2")
        total = flush_denormals(total_old + g * g)
        return theta - lr * g / ops.sqrt(total + self.eps), {total_old: total}


@dataclass
class RMSprop(Optimizer):
    """E[g²] ← γ E[g²] + (1 − γ) g²;  θ ← θ − η g / √(E[g²] + ε)  (Hinton, lecture 6e)."""

    name: ClassVar[str] = "rmsprop"

    lr: LearningRate = learning_rate(0.001)
    gamma: float = decay_rate(0.9)
    eps: float = positive(1e-8)

    def rule(self, theta: Node, g: Node, t: Node, lr: Node) -> tuple[Node, Slots]:
        mean_old = self.slot(theta, "mean_g2")
        mean = moving_average(mean_old, g * g, self.gamma)
        return theta - lr * g / ops.sqrt(mean + self.eps), {mean_old: mean}


@dataclass
class Adadelta(Optimizer):
    """Zeiler (2012), with RMS[x] = √(E[x²] + ε):

        E[g²] ← ρ E[g²] + (1 − ρ) g²
        Δθ = RMS[Δθ]_{t−1} / RMS[g]_t · g
        E[Δθ²] ← ρ E[Δθ²] + (1 − ρ) Δθ²
        θ ← θ − lr · Δθ

    The method has no learning rate; ``lr`` is a multiplier on the applied step
    only (E[Δθ²] tracks the unscaled Δθ), 1.0 by default, so a schedule can anneal it.
    """

    name: ClassVar[str] = "adadelta"

    lr: LearningRate = learning_rate(1.0)
    rho: float = decay_rate(0.9)
    eps: float = positive(1e-6)

    def rule(self, theta: Node, g: Node, t: Node, lr: Node) -> tuple[Node, Slots]:
        grad_old, delta_old = self.slot(theta, "mean_g2"), self.slot(theta, "mean_dx2")
        grad_mean = moving_average(grad_old, g * g, self.rho)
        delta = ops.sqrt(delta_old + self.eps) / ops.sqrt(grad_mean + self.eps) * g
        delta_mean = moving_average(delta_old, delta * delta, self.rho)
        return theta - lr * delta, {grad_old: grad_mean, delta_old: delta_mean}
