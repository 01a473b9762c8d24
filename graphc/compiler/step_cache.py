"""The compile cache: generated code keyed by a structural hash of the optimized program.

The hash sees what the code depends on — ops, attributes, wiring, leaf names,
shapes and dtypes, constant values — and what its comments show: each node's
source line and gradient provenance, so a hit never shows another model's lines.
It leaves out what neither depends on: parameter identities and random-op keys
(the wiring, by position in a structural walk, still tells two draws apart), so
the same model built again from the same lines in the same process hits the
cache (the nodes a compile adds, such as the optimizer's update, belong to the
line that called ``gc.compile``).  Entries live as long as the process.
"""
from __future__ import annotations

import hashlib
from typing import Any, Optional

from graphc.ir.graph import structural_order
from graphc.ir.node import Literal, Node
from graphc.ir.program import Program

_cache: dict[str, Any] = {}


def _attr_text(node: Node) -> str:
    parts = []
    for k, v in sorted(node.attrs.items()):
        if k in ("uid", "key"):
            continue
        if isinstance(v, Literal):
            v = hashlib.sha256(repr(v._key).encode()).hexdigest()
        parts.append(f"{k}={v!r}")
    return ",".join(parts)


def _provenance(node: Node) -> str:
    """What the generated comments say about a node: its user's line and the rule that made it."""
    origin = node.origin
    made_by = "" if origin is None else f"{origin.rule}@{origin.forward.op}"
    return f"<{node.site}|{made_by}>"


def structural_key(program: Program, backend: str) -> str:
    order = structural_order(program.roots)
    index = {n: i for i, n in enumerate(order)}
    h = hashlib.sha256(f"{backend}|{program.name}".encode())
    for node in order:
        h.update(f"{node.op}({','.join(str(index[i]) for i in node.inputs)})[{_attr_text(node)}]"
                 f"{_provenance(node)};".encode())
    for name, node in program.outputs.items():
        h.update(f"out {name}={index[node]};".encode())
    for var, new in program.updates.items():
        h.update(f"upd {var.name}={index[new]};".encode())
    for group in program.arenas:
        h.update(f"arena {','.join(v.name for v in group)};".encode())
    return h.hexdigest()


def lookup(key: str) -> Optional[Any]:
    return _cache.get(key)


def store(key: str, value: Any) -> None:
    _cache[key] = value


def clear() -> None:
    """Forget every compiled step: the next compile of any program starts cold."""
    _cache.clear()
