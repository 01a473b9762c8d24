"""Modules: callables that build graph nodes and own the parameters they create.

A module makes its parameters on first call, once it knows the input's width,
so ``Dense(256)`` needs no input size.  Parameter names are module paths
(``dense0.W``, ``moe0.expert1.dense0.W``): a container names each child by its
place in the container, so names are unique without the user choosing any, and
stable across rebuilds of the same model, which is what the compile cache and
checkpoints key on.  An explicit ``name=`` replaces the child's own segment of
the path, never its parents' segments.

``Module.__call__`` records the shape of what the module built, which is all a
model summary needs: the graph itself is the source of truth for shapes.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional

from graphc import composites, ops
from graphc.errors import GraphcError
from graphc.ir.node import Node
from graphc.ir.layer import mark_layer
from graphc.ir.site import layer_call, user_site
from graphc.ir.shapes import Shape


class Module:
    kind = "module"

    def __init__(self, name: Optional[str] = None):
        self.explicit_name = name
        self.name = name if name is not None else self.kind
        self.output_shape: Optional[Shape] = None
        self._params: list[Node] = []
        self._state: list[Node] = []
        self.declared_at = user_site()

    def __call__(self, x: Node, training: bool = True) -> Node:
        with layer_call(self.declared_at):
            y = self.forward(x, training)
        if self.name:
            mark_layer(self.name, y, x)
        self.output_shape = y.shape
        return y

    def forward(self, x: Node, training: bool) -> Node:
        """The graph this module computes from ``x``; ``training`` selects batch vs. running behaviour."""
        raise NotImplementedError(f"{type(self).__name__} must define forward(x, training)")

    # ---- structure and names ----------------------------------------------
    def named_children(self) -> list[tuple[str, "Module"]]:
        """Each child with the path segment this container gives it (when it has no explicit name)."""
        return []

    def children(self) -> list["Module"]:
        return [child for _, child in self.named_children()]

    def adopt_children(self) -> None:
        """Name every descendant by its path under this module; containers call it once built."""
        for segment, child in self.named_children():
            child.rename(join_path(self.name, child.explicit_name or segment))

    def rename(self, path: str) -> None:
        """Called by a container to give this module (and its descendants) a path-based name."""
        if path == self.name:
            return
        if self._params or self._state:
            raise GraphcError(f"module '{self.name}' was already called, so its variables carry that name; "
                              f"put it into its container ('{path}') before calling it")
        self.name = path
        self.adopt_children()

    def modules(self) -> Iterator["Module"]:
        yield self
        for child in self.children():
            yield from child.modules()

    def parameters(self) -> list[Node]:
        return [p for m in self.modules() for p in m._params]

    def states(self) -> list[Node]:
        return [s for m in self.modules() for s in m._state]

    def describe(self) -> str:
        return self.kind


def join_path(parent: str, segment: str) -> str:
    return f"{parent}.{segment}" if parent else segment


def attach_updates(node: Node, updates: Mapping[Node, Node]) -> Node:
    """Record state updates on ``node`` for the train step to collect.

    Nodes are hash-consed, so ``node`` may already carry updates from another
    builder of the same expression: merge, never overwrite.
    """
    node.meta.setdefault("updates", {}).update(updates)
    return node


class Lambda(Module):
    """A parameter-free function (an activation) used as a layer."""

    def __init__(self, fn: Callable[[Node], Node], name: Optional[str] = None):
        fn_name = getattr(fn, "__name__", "")
        self.kind = fn_name if fn_name.isidentifier() else "lambda"
        super().__init__(name)
        self.fn = fn

    def forward(self, x: Node, training: bool) -> Node:
        return self.fn(x)


ACTIVATIONS: dict[str, Callable[[Node], Node]] = {
    "relu": ops.relu, "tanh": ops.tanh, "sigmoid": ops.sigmoid, "softmax": composites.softmax,
    "log_softmax": composites.log_softmax,
}


class Activation(Lambda):
    """An activation chosen by name, as a layer: ``Activation("relu")`` or just ``"relu"`` in a container."""

    def __init__(self, activation: str, name: Optional[str] = None):
        if activation not in ACTIVATIONS:
            raise GraphcError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)} "
                              f"or pass a function of one node")
        super().__init__(ACTIVATIONS[activation], name)


def as_module(layer: Any) -> Module:
    """A module for ``layer``: a module itself, an activation by name (``"relu"``) or a function of one node."""
    if isinstance(layer, Module):
        return layer
    if isinstance(layer, str):
        return Activation(layer)
    if callable(layer):
        return Lambda(layer)
    raise GraphcError(f"{layer!r} is neither a module, an activation name nor a function of one node")
