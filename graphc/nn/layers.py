"""The basic layers: dense, sequential stacks and weight-decay terms."""
from __future__ import annotations

from numbers import Integral
from typing import Any, Optional

from graphc import init as initializers
from graphc import ops
from graphc.errors import GraphcError
from graphc.ir.layer import mark_layer
from graphc.ir.node import Node
from graphc.nn.module import Module, as_module


class Dense(Module):
    """``x @ W + b`` with W of shape (in, units).

    ``init`` initializes W: a name from :data:`graphc.init.BY_NAME` (``"glorot"``,
    ``"he"``, ``"normal"`` for small Gaussian weights, ...) or a function
    ``init(rng, shape, dtype)`` such as ``gc.init.normal(0.05)``.  Biases start at zero.
    """

    kind = "dense"

    def __init__(self, units: int, init: Any = "glorot", bias: bool = True, name: Optional[str] = None):
        if isinstance(units, bool) or not isinstance(units, Integral) or units < 1:
            raise GraphcError(f"Dense(units) takes a positive whole number of outputs, got {units!r}")
        super().__init__(name)
        self.units = int(units)
        self.init = initializers.resolve(init)
        self.bias = bias

    def forward(self, x: Node, training: bool) -> Node:
        if not self._params:
            w = ops.param(f"{self.name}.W", (x.shape[-1], self.units), init=self.init, dtype=x.dtype)
            self._params = [w]
            if self.bias:
                self._params.append(ops.param(f"{self.name}.b", (self.units,), init=initializers.zeros,
                                              dtype=x.dtype))
        y = x @ self._params[0]
        return y + self._params[1] if self.bias else y

    def describe(self) -> str:
        return f"dense({self.units})"


class Sequential(Module):
    """Layers applied in order.  A top-level stack without a name adds no segment
    to its layers' names (``dense0.W``, not ``sequential.dense0.W``)."""

    kind = "sequential"

    def __init__(self, *layers: Any, name: Optional[str] = None):
        super().__init__(name)
        if name is None:
            self.name = ""
        self.layers = [as_module(layer) for layer in layers]
        self.adopt_children()

    def named_children(self) -> list[tuple[str, Module]]:
        return [(f"{layer.kind}{i}", layer) for i, layer in enumerate(self.layers)]

    def forward(self, x: Node, training: bool) -> Node:
        for layer in self.layers:
            x = layer(x, training)
        return x


def weights(module: Module) -> list[Node]:
    """The parameters weight decay applies to: matrices, not biases or BN scales."""
    return [p for p in module.parameters() if p.ndim >= 2]


def l2(module: Module) -> Node:
    """½ Σ w² over the module's weight matrices: the weight-decay term of the loss.

    Call it after the module has been applied once (its weights exist then).
    """
    ws = weights(module)
    if not ws:
        raise GraphcError("l2: the module has no weights yet; call it on an input first")
    total = ops.sum(ws[0] * ws[0])
    for w in ws[1:]:
        total = total + ops.sum(w * w)
    decay = 0.5 * total
    mark_layer("weight decay", decay, None)  # a frame of its own in pictures (the weights keep their layers')
    return decay
