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
_ENTRY_POINT = os.sep + "graphc"  # the installed `graphc` command is graphc's own frame too


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
        """The path relative to the working directory when it lies below it, as a user typed it."""
        path = os.path.relpath(self.filename) if self.filename.startswith(os.getcwd() + os.sep) else self.filename
        return f"{path}:{self.lineno}"


def at_site(site: Optional[Site]) -> str:
    """The line of an error message that points at the user's code ('' when unknown)."""
    return f"\n  at {site}: {site.code}" if site is not None else ""


@dataclass(frozen=True)
class Origin:
    """A gradient node's provenance: the forward node whose rule produced it."""

    forward: "Node"
    rule: str


_origin: Optional[Origin] = None
_site_override: Optional[Site] = None
INHERITED_META = ("layer",)  # node.meta entries a rewritten node keeps from the node it replaces
_inherited_meta: Mapping[str, object] = {}
_layer_calls: dict[int, Site] = {}  # id of a layer's __call__ frame → the line that declared the layer


def user_site() -> Optional[Site]:
    """The innermost stack frame outside the graphc package — or, if a layer call comes
    first, the line where that layer was declared: a node built by ``Dense(256)`` inside
    a ``Sequential`` belongs to the line that wrote ``Dense(256)``."""
    if _site_override is not None:
        return _site_override
    frame = sys._getframe(1)
    while frame is not None:
        declared = _layer_calls.get(id(frame))
        if declared is not None:
            return declared
        filename = frame.f_code.co_filename
        if not filename.startswith(_SKIP_PREFIXES) and not filename.endswith(_ENTRY_POINT):
            return Site(filename, frame.f_lineno)
        frame = frame.f_back
    return None


@contextmanager
def layer_call(declared: Optional[Site]) -> Iterator[None]:
    """Mark the calling frame (a layer's ``__call__``) as built at ``declared``."""
    caller = sys._getframe(2)  # skip this generator's frame and contextlib's __enter__
    key = id(caller)
    if declared is not None:
        _layer_calls[key] = declared
    try:
        yield
    finally:
        _layer_calls.pop(key, None)


def current_origin() -> Optional[Origin]:
    return _origin


def inherited_meta() -> dict[str, object]:
    """The non-structural facts (such as the layer that built it) a node built now starts with."""
    return dict(_inherited_meta)


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
    global _origin, _site_override, _inherited_meta
    saved = _origin, _site_override, _inherited_meta
    origin = original.origin
    if origin is not None:
        origin = Origin(renamed.get(origin.forward, origin.forward), origin.rule)
    _origin, _site_override = origin, original.site
    _inherited_meta = {k: v for k, v in original.meta.items() if k in INHERITED_META}
    try:
        yield
    finally:
        _origin, _site_override, _inherited_meta = saved
