"""Modules: callables that build graph nodes and own the parameters they create.

A module makes its parameters on first call, once it knows the input's width,
so ``Dense(256)`` needs no input size.  Parameter names are module paths
(``dense0.W``): stable across rebuilds of the same model, which is what the
compile cache and checkpoints key on.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

from graphc.ir.node import Node


class Module:
    kind = "module"

    def __init__(self, name: Optional[str] = None):
        self.name = name if name is not None else self.kind
        self._named = name is not None
        self._params: list[Node] = []
        self._state: list[Node] = []

    def __call__(self, x: Node, training: bool = True) -> Node:
        raise NotImplementedError

    def children(self) -> list["Module"]:
        return []

    def rename(self, prefix: str) -> None:
        """Called by a container to give this module its path-based name."""
        if not self._named:
            self.name = prefix
        for i, child in enumerate(self.children()):
            child.rename(f"{self.name}.{child.kind}{i}")

    def parameters(self) -> list[Node]:
        return [p for m in self.modules() for p in m._params]

    def states(self) -> list[Node]:
        return [s for m in self.modules() for s in m._state]

    def modules(self) -> Iterator["Module"]:
        yield self
        for child in self.children():
            yield from child.modules()

    def describe(self) -> str:
        return self.kind


class Lambda(Module):
    """A parameter-free function (an activation) used as a layer."""

    def __init__(self, fn: Callable[[Node], Node], name: Optional[str] = None):
        self.kind = getattr(fn, "__name__", "lambda")
        super().__init__(name)
        self.fn = fn

    def __call__(self, x: Node, training: bool = True) -> Node:
        return self.fn(x)


def as_module(layer: Any) -> Module:
    if isinstance(layer, Module):
        return layer
    if callable(layer):
        return Lambda(layer)
    raise TypeError(f"{layer!r} is neither a module nor a function of one node")
