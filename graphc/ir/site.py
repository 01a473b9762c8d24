"""Where a node came from: the user's source line, and the gradient rule that made it.

Both are recorded when a node is built, because that is the only moment the
information exists: by the time a shape error or a slow kernel is reported, the
Python stack that built the graph is gone.
"""
from __future__ import annotations

import linecache
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Mapping, Optional

if TYPE_CHECKING:
    from graphc.ir.node import Node

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SKIP_PREFIXES = (_PACKAGE_DIR + os.sep, "<frozen ")


@dataclass(frozen=True)
class Site:
    filename: str
    lineno: int

    @property
    def code(self) -> str:
        return linecache.getline(self.filename, self.lineno).strip()

    def short(self) -> str:
        return f"{os.path.basename(self.filename)}:{self.lineno}"

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}"


@dataclass(frozen=True)
class Origin:
    """A gradient node's provenance: the forward node whose rule produced it."""

    forward: "Node"
    rule: str


_origin: Optional[Origin] = None
_site_override: Optional[Site] = None


def user_site() -> Optional[Site]:
    """The innermost stack frame outside the graphc package."""
    if _site_override is not None:
        return _site_override
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_SKIP_PREFIXES):
            return Site(filename, frame.f_lineno)
        frame = frame.f_back
    return None


def current_origin() -> Optional[Origin]:
    return _origin


@contextmanager
def building_gradient_of(forward: "Node", rule: str) -> Iterator[None]:
    """Nodes built inside are gradient nodes of ``forward``, made by ``rule``, at its site."""
    global _origin, _site_override
    saved = _origin, _site_override
    _origin, _site_override = Origin(forward, rule), forward.site
    try:
        yield
    finally:
        _origin, _site_override = saved


@contextmanager
def rebuilding(original: "Node", renamed: "Mapping[Node, Node]") -> Iterator[None]:
    """Nodes built inside inherit ``original``'s site and origin: a rewrite keeps provenance.

    ``renamed`` maps forward nodes to their rewritten selves, so a gradient node's
    origin keeps pointing at a node of the same (optimized) graph."""
    global _origin, _site_override
    saved = _origin, _site_override
    origin = original.origin
    if origin is not None:
        origin = Origin(renamed.get(origin.forward, origin.forward), origin.rule)
    _origin, _site_override = origin, original.site
    try:
        yield
    finally:
        _origin, _site_override = saved
