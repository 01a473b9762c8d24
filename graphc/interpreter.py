"""The reference interpreter: evaluates a graph node by node with the primitives' NumPy meanings.

It is deliberately naive — no buffers, no fusion, no rewriting — because it is
the oracle every optimized path is tested against.  It checks fed values with
:mod:`graphc.feeds`, as the compiled steps do, so both reject bad input with the
same message.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from graphc.errors import FeedError
from graphc.feeds import bind_symbols
from graphc.ir.graph import toposort
from graphc.ir.node import Node
from graphc.ir.registry import RANDOM, is_fed, is_named_leaf
from graphc.ir.shapes import resolve
from graphc.ir.site import at_site


def evaluate(outputs: Sequence[Node], feeds: Mapping[str, Any],
             variables: Mapping[str, Any] = {}, rng: Optional[np.random.Generator] = None,
             watch: Optional[Callable[[Node, np.ndarray], None]] = None) -> list[np.ndarray]:
    """Values of ``outputs``, given inputs by name and variables (params, state) by name.

    ``watch`` sees every node's value, leaves included, in topological order (the
    numerics check uses it to stop at the first value that is not finite).
    """
    order = toposort(outputs)
    leaves = [n for n in order if is_named_leaf(n.op)]
    values = [_lookup(leaf, feeds if is_fed(leaf.op) else variables) for leaf in leaves]
    symbols = bind_symbols(leaves, values)
    env: dict[Node, np.ndarray] = dict(zip(leaves, (np.asarray(v) for v in values)))
    rng = rng if rng is not None else np.random.default_rng(0)
    for node in order:
        if node not in env:
            env[node] = np.asarray(_apply(node, env, symbols, rng), dtype=node.dtype)
        if watch is not None:
            watch(node, env[node])
    return [env[o] for o in outputs]


def resolve_or_explain(shape: tuple, symbols: Mapping[str, int]) -> tuple[int, ...]:
    missing = [d for d in shape if isinstance(d, str) and d not in symbols]
    if missing:
        raise FeedError(f"the size {missing[0]} is not known: the graph reads no input with a dimension "
                        f"{missing[0]} (a gradient with respect to an input does not read that input); "
                        f"compute it together with a value that reads the input")
    return resolve(shape, symbols)


def _lookup(leaf: Node, source: Mapping[str, Any]) -> Any:
    if leaf.name not in source:
        raise FeedError(f"no value given for {leaf.op} '{leaf.name}'")
    return source[leaf.name]


def _apply(node: Node, env: Mapping[Node, np.ndarray], symbols: Mapping[str, int],
           rng: np.random.Generator) -> Any:
    attrs = dict(node.attrs)
    if "shape" in attrs and node.op != "constant":
        attrs["shape"] = resolve_or_explain(attrs["shape"], symbols)
    if node.kind == RANDOM:
        attrs["rng"] = rng
        attrs["batched"] = bool(node.shape) and isinstance(node.shape[0], str)  # over the batch, before resolving
    try:
        return node.primitive.impl(*(env[i] for i in node.inputs), **attrs)
    except FeedError as exc:  # a fed value the op refuses (a label out of range): point at the user's line
        raise FeedError(f"{exc}{at_site(node.site)}") from None
