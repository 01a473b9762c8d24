"""Graphs as pictures: Graphviz drawings of the IR (:mod:`~graphc.draw.dot`) and their rendering
to files and to Jupyter (:mod:`~graphc.draw.render`).  Above the IR: importing this package
gives nodes their Jupyter picture."""
from __future__ import annotations

from typing import Optional

from graphc.draw.dot import draw
from graphc.draw.render import svg_or_none
from graphc.ir import node


def _node_picture(of: node.Node) -> Optional[str]:
    return svg_or_none(lambda: draw([of], title=repr(of)))


node.picture = _node_picture
