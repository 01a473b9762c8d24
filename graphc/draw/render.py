"""Drawings turned into pictures by Graphviz's ``dot`` program: files for the command line,
SVG text for Jupyter.

The ``dot`` program is a system package, not a Python one, so its absence is
the likely failure: it is reported as one line saying how to install it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from graphc.errors import GraphcError

if TYPE_CHECKING:
    import graphviz

FORMATS = ("svg", "png", "pdf")
INSTALL_HINT = ("drawing a graph needs Graphviz's `dot` program, which was not found on PATH; "
                "install it with `apt-get install graphviz` (Debian/Ubuntu) or `brew install graphviz` (macOS)")


class RenderError(GraphcError):
    """A picture that cannot be drawn: no ``dot`` program, or a file type it cannot write."""


def graphviz_package() -> Any:
    """The ``graphviz`` package, imported when a picture is first asked for: a machine that never
    draws (a GPU box given only what training needs) imports graphc without it."""
    try:
        import graphviz
    except ImportError:
        raise RenderError("drawing a graph needs the Python package graphviz: pip install graphviz "
                          "(and Graphviz's dot program to render it)") from None
    return graphviz


def picture_format(path: str | Path) -> str:
    """The picture format a file name asks for, by its suffix."""
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in FORMATS:
        raise RenderError(f"cannot tell the picture format of {path}: name the file "
                          f"{' or '.join('.' + f for f in FORMATS)}")
    return suffix


def render(graph: "graphviz.Digraph", path: str | Path) -> Path:
    """Draw ``graph`` into ``path``, in the format its suffix names."""
    path = Path(path)
    path.write_bytes(_pipe(graph, picture_format(path)))
    return path


def to_svg(graph: "graphviz.Digraph") -> str:
    """The drawing as SVG text."""
    return _pipe(graph, "svg").decode("utf-8")


def svg_or_none(drawing: Callable[[], "graphviz.Digraph"]) -> Optional[str]:
    """SVG of ``drawing()`` for a notebook's rich display; None without the graphviz package or the
    ``dot`` program, so Jupyter shows the text form instead."""
    try:
        return to_svg(drawing())
    except RenderError:
        return None


def _pipe(graph: "graphviz.Digraph", fmt: str) -> bytes:
    graphviz = graphviz_package()
    try:
        return graph.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise RenderError(INSTALL_HINT) from None
    except graphviz.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise RenderError(f"Graphviz's dot failed: {detail[-1] if detail else exc}") from None
