"""Gradient descent and its momentum variants (Ruder 2016, sections 4.1 and 4.2)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphc.ir.node import Node
from graphc.optim.base import LearningRate, Optimizer, Slots, flush_denormals, learning_rate
from graphc.optim.checks import decay_rate


@dataclass
class SGD(Optimizer):
    """θ ← θ − η g."""

    name: ClassVar[str] = "sgd"

    lr: LearningRate = learning_rate(0.01)

    def rule(self, theta: Node, g: Node, t: Node, lr: Node) -> tuple[Node, Slots]:
        return theta - lr * g, {}


@dataclass
class Momentum(Optimizer):
    """v ← γ v + η g;  θ ← θ − v  (Qian 1999).

    The learning rate sits inside the velocity, as in Ruder's equation, so a
    schedule changes the size of new contributions, not of the momentum already built.
    """

    name: ClassVar[str] = "momentum"

    lr: LearningRate = learning_rate(0.01)
    gamma: float = decay_rate(0.9)

    def rule(self, theta: Node, g: Node, t: Node, lr: Node) -> tuple[Node, Slots]:
        v_old = self.slot(theta, "v")
        v = flush_denormals(self.gamma * v_old + lr * g)
        return theta - self.displacement(v, lr * g), {v_old: v}

    def displacement(self, v: Node, lr_g: Node) -> Node:
        """How far θ moves, given the new velocity and this step's η g."""
        return v


class Nesterov(Momentum):
    """Nesterov accelerated gradient in the form frameworks use (Bengio et al. 2013; the form
    Ruder rewrites in his Nadam section): with g the gradient at the current θ,

        v ← γ v + η g;  θ ← θ − (γ v + η g)

    θ here is the look-ahead point θ − γ v of Ruder's equation, so the gradient
    is taken where the classic form would take it, and no second evaluation is needed.
    """

    name: ClassVar[str] = "nesterov"

    def displacement(self, v: Node, lr_g: Node) -> Node:
        return self.gamma * v + lr_g
