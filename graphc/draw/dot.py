"""A graph as a Graphviz drawing: the DOT text, and the ``graphviz.Digraph`` that renders it.

Forward nodes are white boxes and gradient nodes orange ones, so the backward
pass stands out as the mirror image of the forward one.  It is laid out as a
mirror too: an edge between two gradient nodes ranks them the way the forward
edge they reverse does (the arrow still points the way the gradient flows), so
each gradient node sits level with the forward node whose rule made it, and the
dashed link between the two (``links``, on by default) runs across, not down
the page.  Nodes sit in a frame named after the layer that built them (the
loss and weight decay have frames of their own), and every data edge carries
the shape of the value it moves.  ``collapse`` turns a layer into one box (one for its forward nodes,
one for its gradient nodes), which keeps a deep model's picture readable.
Scalar constants are written into the label of the node that reads them
instead of being drawn, since a box for every ``1.0`` only adds clutter.
"""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Collection, Sequence, Union

from graphc.ir.graph import toposort
from graphc.ir.layer import layer_of
from graphc.ir.node import Node
from graphc.ir.printing import Namer, Outputs, _as_named, inline_constant, type_str
from graphc.ir.registry import is_named_leaf
from graphc.draw.render import graphviz_package
from graphc.ir.shapes import fmt

if TYPE_CHECKING:
    import graphviz

FORWARD_FILL = "white"
GRADIENT_FILL = "#fbd7a8"
LEAF_FILL = {"input": "#e3e3e3", "param": "#cfe8cf", "state": "#d7e3f4"}
ORIGIN_EDGE = {"style": "dashed", "color": "#c06000", "constraint": "false", "arrowhead": "empty"}

Collapse = Union[bool, Collection[str]]


def to_dot(outputs: Outputs, title: str = "graph", collapse: Collapse = (), context: Sequence[Node] = (),
           links: bool = True) -> str:
    """The DOT text of :func:`draw`."""
    return draw(outputs, title, collapse, context, links).source


def draw(outputs: Outputs, title: str = "graph", collapse: Collapse = (),
         context: Sequence[Node] = (), links: bool = True) -> "graphviz.Digraph":
    """The drawing of everything ``outputs`` and ``context`` depend on.

    ``context`` adds nodes drawn without being outputs: for a gradient graph, the
    loss, so that the forward nodes the gradient rules came from are in the
    picture.  (Origins are not followed themselves: hash-consing can share a
    gradient node with another model, whose forward node is then its origin.)
    ``collapse`` is True (every layer) or the names of the layers to fold; ``links=False``
    leaves out the dashed links from gradient nodes to their forward nodes.
    """
    named = _as_named(outputs)
    order = [n for n in toposort(list(named.values()) + list(context)) if not inline_constant(n)]
    boxes = _Boxes(order, collapse)
    graph = graphviz_package().Digraph(title, graph_attr={"rankdir": "TB", "label": title, "labelloc": "t",
                                                "fontname": "sans-serif", "newrank": "true"},
                             node_attr={"shape": "box", "fontname": "monospace", "fontsize": "10",
                                        "style": "filled", "fillcolor": FORWARD_FILL},
                             edge_attr={"fontname": "monospace", "fontsize": "8"})
    by_layer: dict[str, list[tuple[str, str, dict[str, str]]]] = defaultdict(list)
    for box, (label, attrs, layer) in boxes.labels.items():
        if layer is not None and not boxes.folded(layer):
            by_layer[layer].append((box, label, attrs))
        else:
            graph.node(box, label, **attrs)
    for layer, members in by_layer.items():
        with graph.subgraph(name=f"cluster_{layer}") as frame:
            frame.attr(label=layer, style="rounded,dashed", color="#888888", fontname="sans-serif")
            for box, label, attrs in members:
                frame.node(box, label, **attrs)
    for source, target, shape in boxes.edges:
        if boxes.gradient(source) and boxes.gradient(target):  # ranked as the forward edge it mirrors
            graph.edge(target, source, label=shape, dir="back")
        elif boxes.gradient(target):  # a forward value a gradient rule reads: no pull on the layout
            graph.edge(source, target, label=shape, constraint="false")
        else:
            graph.edge(source, target, label=shape)
    for gradient, forward in boxes.origin_links:  # level with its forward node, where the ranks allow
        graph.edge(forward, gradient, style="invis", minlen="0", weight="4")
        if links:
            graph.edge(gradient, forward, **ORIGIN_EDGE)
    for out_name, node in named.items():
        graph.node(f"out/{out_name}", out_name, shape="plaintext", style="")
        graph.edge(boxes.of(node), f"out/{out_name}", label=fmt(node.shape))
    return graph


class _Boxes:
    """The boxes of the drawing: one per node, or one per folded layer's forward or gradient part."""

    def __init__(self, order: list[Node], collapse: Collapse):
        self.collapse = collapse
        self.name = Namer()
        self.box: dict[Node, str] = {}
        self.single: set[str] = set()  # boxes that hold one node
        self.labels: dict[str, tuple[str, dict[str, str], str | None]] = {}
        folded_count: dict[str, int] = defaultdict(int)
        for i, node in enumerate(order):
            layer = layer_of(node)
            if layer is not None and self.folded(layer) and not is_named_leaf(node.op):
                gradient = node.origin is not None
                box = f"{'grad' if gradient else 'fwd'}/{layer}"
                folded_count[box] += 1
                self.box[node] = box
                fill = GRADIENT_FILL if gradient else FORWARD_FILL
                self.labels[box] = (f"{'∂' if gradient else ''}{layer}\\n{_count(folded_count[box])}",
                                    {"fillcolor": fill, "style": "filled,bold"}, None)
            else:
                self.box[node] = f"n{i}"
                self.single.add(f"n{i}")
                self.labels[f"n{i}"] = (self._label(node), self._look(node), layer)
        self.edges: list[tuple[str, str, str]] = []
        seen: set[tuple[str, str]] = set()
        for node in order:
            for operand in node.inputs:
                if operand not in self.box:
                    continue
                pair = (self.box[operand], self.box[node])
                folded = pair[0] not in self.single or pair[1] not in self.single
                if pair[0] == pair[1] or (folded and pair in seen):
                    continue  # one edge between folded boxes; x ⊙ x keeps both of its edges
                seen.add(pair)
                self.edges.append((pair[0], pair[1], fmt(operand.shape)))
        self.origin_links = sorted({(self.box[n], self.box[n.origin.forward]) for n in order
                                    if n.origin is not None and n.origin.forward in self.box
                                    and self.box[n] != self.box[n.origin.forward]})

    def gradient(self, box: str) -> bool:
        return self.labels[box][1].get("fillcolor") == GRADIENT_FILL

    def folded(self, layer: str) -> bool:
        return self.collapse is True or (not isinstance(self.collapse, bool) and layer in self.collapse)

    def of(self, node: Node) -> str:
        return self.box[node]

    def _label(self, node: Node) -> str:
        if node.name is not None:
            return f"{node.name}\\n{type_str(node)}"
        constants = " ".join(self.name(i) for i in node.inputs if inline_constant(i))
        rule = f"\\n∂ {node.origin.rule}" if node.origin is not None else ""
        return f"{self.name(node)} = {node.op} {constants}".rstrip() + f"\\n{type_str(node)}{rule}"

    @staticmethod
    def _look(node: Node) -> dict[str, str]:
        if node.op in LEAF_FILL:
            return {"shape": "ellipse", "fillcolor": LEAF_FILL[node.op]}
        return {"fillcolor": GRADIENT_FILL if node.origin is not None else FORWARD_FILL}


def _count(nodes: int) -> str:
    return "1 node" if nodes == 1 else f"{nodes} nodes"
