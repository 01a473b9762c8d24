"""Adam and the variants Ruder (2016) lists with it: AdaMax, Nadam, AMSGrad (sections 4.6 to 4.9).

The bias corrections 1/(1 − β^t) are scalars; they are folded into the step
size where the equation allows, so each rule makes as few passes over θ as it can.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphc import ops
from graphc.ir.node import Node
from graphc.optim.base import LearningRate, Optimizer, Slots, flush_denormals, learning_rate, moving_average
from graphc.optim.checks import checked, decay_rate, nonnegative_number, positive


@dataclass
class Adam(Optimizer):
    """Kingma & Ba (2015):

        m ← β₁ m + (1 − β₁) g;   v ← β₂ v + (1 − β₂) g²
        m̂ = m / (1 − β₁^t);      v̂ = v / (1 − β₂^t)
        θ ← θ − η m̂ / (√v̂ + ε)
    """

    name: ClassVar[str] = "adam"

    lr: LearningRate = learning_rate(0.001)
    beta1: float = decay_rate(0.9)
    beta2: float = decay_rate(0.999)
    eps: float = positive(1e-8)

    def rule(self, theta: Node, g: Node, t: Node, lr: Node) -> tuple[Node, Slots]:
        m, v, slots = self.moments(theta, g)
        v_hat = v / (1.0 - self.beta2 ** t)
        step_size = lr / (1.0 - self.beta1 ** t)
        return theta - step_size * self.direction(m, g) / (ops.sqrt(v_hat) + self.eps), slots

    def moments(self, theta: Node, g: Node) -> tuple[Node, Node, Slots]:
        """The new m and v, and the state updates that store them."""
        m_old, v_old = self.slot(theta, "m"), self.slot(theta, "v")
        m = moving_average(m_old, g, self.beta1)
        v = moving_average(v_old, g * g, self.beta2)
        return m, v, {m_old: m, v_old: v}

    def direction(self, m: Node, g: Node) -> Node:
        """The numerator, times 1 − β₁^t (folded into the step size): m̂ for Adam."""
        return m


@dataclass
class Nadam(Adam):
    """Dozat (2016) as Ruder gives it (a constant β₁, no momentum schedule):

        θ ← θ − η / (√v̂ + ε) · (β₁ m̂ + (1 − β₁) g / (1 − β₁^t))

    with m, v, m̂, v̂ as in Adam: Nesterov's look-ahead applied to Adam's momentum.
    """

    name: ClassVar[str] = "nadam"

    lr: LearningRate = learning_rate(0.002)

    def direction(self, m: Node, g: Node) -> Node:
        return self.beta1 * m + (1.0 - self.beta1) * g


@dataclass
class AdaMax(Adam):
    """Adam with the ∞-norm (Kingma & Ba 2015, section 7.1):

        m ← β₁ m + (1 − β₁) g;   u ← max(β₂ u, |g|)
        θ ← θ − η / (1 − β₁^t) · m / (u + ε)

    The paper has no ε; here it keeps coordinates whose gradient has always
    been zero (u = 0) at 0 instead of 0/0.  ``eps=0`` gives the paper's rule.
    """

    name: ClassVar[str] = "adamax"

    lr: LearningRate = learning_rate(0.002)
    eps: float = checked(nonnegative_number, 1e-8)

    def rule(self, theta: Node, g: Node, t: Node, lr: Node) -> tuple[Node, Slots]:
        m_old, u_old = self.slot(theta, "m"), self.slot(theta, "u")
        m = moving_average(m_old, g, self.beta1)
        u = flush_denormals(ops.maximum(self.beta2 * u_old, ops.abs(g)))
        step_size = lr / (1.0 - self.beta1 ** t)
        return theta - step_size * m / (u + self.eps), {m_old: m, u_old: u}


class AMSGrad(Adam):
    """Reddi et al. (2018) as Ruder gives it, without bias correction:

        m ← β₁ m + (1 − β₁) g;   v ← β₂ v + (1 − β₂) g²
        v̂ ← max(v̂, v);           θ ← θ − η m / (√v̂ + ε)
    """

    name: ClassVar[str] = "amsgrad"

    def rule(self, theta: Node, g: Node, t: Node, lr: Node) -> tuple[Node, Slots]:
        m, v, slots = self.moments(theta, g)
        v_max_old = self.slot(theta, "v_max")
        v_max = flush_denormals(ops.maximum(v_max_old, v))
        slots[v_max_old] = v_max
        return theta - lr * m / (ops.sqrt(v_max) + self.eps), slots
