"""Plain stochastic gradient descent: θ ← θ − η g."""
from __future__ import annotations

from graphc.ir.node import Node
from graphc.optim.base import Optimizer


class SGD(Optimizer):
    name = "sgd"

    def rule(self, theta: Node, g: Node, t: Node) -> tuple[Node, dict[Node, Node]]:
        return theta - self.lr * g, {}
