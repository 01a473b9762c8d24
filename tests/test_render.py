"""Pictures of graphs: the drawing's structure, rendering through Graphviz, Jupyter's rich displays."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import networkx as nx
import pytest

import graphc as gc
from graphc import nn, optim
from graphc.cli import main
from graphc.draw.dot import FORWARD_FILL, GRADIENT_FILL, draw
from graphc.ir.graph import toposort
from graphc.ir.printing import inline_constant
from graphc.draw.render import RenderError, picture_format, render, to_svg
from graphc.ir.shapes import fmt
from graphc.train.history import EpochRecord, History

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")

_NODE = re.compile(r'\s*(\S+) \[label="((?:[^"\\]|\\.)*)"\s*(.*)\]')
_EDGE = re.compile(r"\s*(\S+) -> (\S+)(?: \[(.*)\])?")


def _step() -> gc.CompiledStep:
    # Shapes no other test uses: a node another test's live graph built first keeps that graph's layer mark.
    x, y = gc.input("x", (None, 13)), gc.input("y", (None,), "int32")
    net = nn.Sequential(nn.Dense(4), nn.tanh, nn.Dense(2))
    return gc.compile(gc.softmax_cross_entropy(net(x), y), optimizer=optim.SGD(0.1))


def _parse(source: str) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str, str]], dict[str, set[str]]]:
    """Boxes (id → label, attributes), edges (from, to, attributes) and each frame's boxes."""
    boxes: dict[str, tuple[str, str]] = {}
    edges: list[tuple[str, str, str]] = []
    frames: dict[str, set[str]] = {}
    frame = None
    for line in source.splitlines():
        if started := re.match(r"\s*subgraph (\S+) \{", line):
            frame = started[1]
            frames[frame] = set()
        elif line.strip() == "}":
            frame = None
        elif edge := _EDGE.fullmatch(line):
            edges.append((edge[1].strip('"'), edge[2].strip('"'), edge[3] or ""))
        elif node := _NODE.fullmatch(line):
            boxes[node[1].strip('"')] = (node[2], node[3])
            if frame is not None:
                frames[frame].add(node[1].strip('"'))
    return boxes, edges, frames


def test_the_drawing_has_every_node_and_data_edge_with_its_shape() -> None:
    step = _step()
    grads, loss = step.program.grads, step.program.outputs["loss"]
    boxes, edges, _ = _parse(draw(grads, context=[loss]).source)
    drawn = [n for n in toposort(list(grads.values()) + [loss]) if not inline_constant(n)]
    ir = nx.MultiDiGraph()
    ir.add_nodes_from((n, {"gradient": n.origin is not None}) for n in drawn)
    ir.add_edges_from((i, n, {"shape": fmt(i.shape)}) for n in drawn for i in n.inputs if i in ir)
    picture = nx.MultiDiGraph()
    picture.add_nodes_from((box, {"gradient": GRADIENT_FILL in attrs}) for box, (_, attrs) in boxes.items()
                           if not box.startswith("out/"))
    for source, target, attrs in edges:
        if "dashed" not in attrs and "invis" not in attrs and not target.startswith("out/"):
            if "dir=back" in attrs:  # laid out as the forward edge it mirrors, drawn the gradient's way
                source, target = target, source
            picture.add_edge(source, target, shape=re.search(r'label="([^"]*)"', attrs)[1])
    same = nx.algorithms.isomorphism.categorical_node_match("gradient", None)
    assert nx.is_isomorphic(picture, ir, node_match=same,
                            edge_match=nx.algorithms.isomorphism.categorical_multiedge_match("shape", None))
    assert {b[len("out/"):] for b in boxes if b.startswith("out/")} == set(grads)


def test_each_gradient_node_is_linked_dashed_to_its_forward_node_and_coloured_apart() -> None:
    step = _step()
    boxes, edges, _ = _parse(step.draw("grad").source)
    gradient = {b for b, (_, attrs) in boxes.items() if GRADIENT_FILL in attrs}
    forward = {b for b, (_, attrs) in boxes.items() if f"fillcolor={FORWARD_FILL}" in attrs}
    links = [(s, t) for s, t, attrs in edges if "style=dashed" in attrs]
    assert gradient and forward
    assert {s for s, _ in links} <= gradient and {t for _, t in links} <= forward
    assert all("∂ " in boxes[g][0] for g in gradient)  # the label names the rule
    drawn = set(toposort(list(step.program.grads.values()) + [step.program.outputs["loss"]]))
    # (a gradient node that another live graph built first has that graph's forward node as origin)
    linked = [n for n in drawn if n.origin is not None and n.origin.forward in drawn and not inline_constant(n)]
    assert len(links) == len(linked) > 10


def test_nodes_are_framed_by_the_layer_that_built_them() -> None:
    boxes, _, frames = _parse(_step().draw("grad").source)
    labels = {frame: {boxes[b][0].split("\\n")[0] for b in members} for frame, members in frames.items()}
    assert set(labels) == {"cluster_dense0", "cluster_tanh1", "cluster_dense2", "cluster_loss"}
    loss_ops = {label.split(" = ")[1].split()[0] for label in labels["cluster_loss"] if " = " in label}
    assert {"max", "exp", "log", "one_hot"} <= loss_ops  # the loss is framed like a layer
    assert {"dense0.W", "dense0.b"} <= labels["cluster_dense0"] and "dense2.W" in labels["cluster_dense2"]
    assert any("= tanh" in label for label in labels["cluster_tanh1"])
    assert not any("dense" in label for label in labels["cluster_tanh1"])


def test_the_gradient_is_laid_out_as_the_mirror_of_the_forward_pass() -> None:
    """Each gradient node is ranked level with its forward node (an invisible edge of length 0), edges
    between gradient nodes are ranked as the forward edges they mirror, and forward values a gradient
    rule reads do not pull the layout; links=False leaves the dashed links out, not the layout."""
    step = _step()
    boxes, edges, _ = _parse(step.draw("grad").source)
    gradient = {b for b, (_, attrs) in boxes.items() if GRADIENT_FILL in attrs}
    level = {(s, t) for s, t, attrs in edges if "style=invis" in attrs and 'minlen=0' in attrs}
    links = {(s, t) for s, t, attrs in edges if "style=dashed" in attrs}
    assert links and {(forward, grad) for grad, forward in links} == level
    for source, target, attrs in edges:
        if "invis" in attrs or "dashed" in attrs or target.startswith("out/"):
            continue
        if source in gradient and target in gradient:
            assert "dir=back" in attrs
        elif target in gradient or (source in gradient and "dir=back" not in attrs):
            assert "constraint=false" in attrs or source in gradient
    bare = _parse(step.draw("grad", links=False).source)[1]
    assert not [e for e in bare if "dashed" in e[2]] and {(s, t) for s, t, a in bare if "invis" in a} == level


def test_collapsing_folds_each_layer_into_a_forward_and_a_gradient_box() -> None:
    step = _step()
    boxes, edges, frames = _parse(step.draw("grad", collapse=True).source)
    folded = {b for b in boxes if b.startswith(("fwd/", "grad/"))}
    assert folded == {f"{part}/{layer}" for part in ("fwd", "grad") for layer in ("dense0", "tanh1", "dense2", "loss")}
    assert not frames
    assert ("fwd/dense0", "fwd/tanh1") in {(s, t) for s, t, _ in edges}
    assert len(boxes) < len(_parse(step.draw("grad").source)[0])
    only_one = _parse(step.draw("grad", collapse=("dense0",)).source)[0]
    assert {b for b in only_one if "/" in b and not b.startswith("out/")} == {"fwd/dense0", "grad/dense0"}


@needs_dot
def test_render_writes_svg_and_png(tmp_path: Path) -> None:
    graph = _step().draw("forward")
    assert render(graph, tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")
    svg = render(graph, tmp_path / "f.svg").read_text()
    assert "<svg" in svg and "dense0" in svg


def test_render_refuses_a_file_type_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"name the file \.svg or \.png or \.pdf"):
        picture_format(tmp_path / "graph.jpg")


def test_without_dot_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RenderError, match="apt-get install graphviz"):
        to_svg(_step().draw())
    assert _step()._repr_svg_() is None  # Jupyter then shows the text form
    assert main(["show", str(EXAMPLES / "explicit_mlp.py"), "--render", str(tmp_path / "g.svg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graphc: error: drawing a graph needs Graphviz's `dot` program") and err.count("\n") == 1


@needs_dot
def test_show_renders_the_chosen_view(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    picture = tmp_path / "grad.svg"
    assert main(["show", str(EXAMPLES / "mlp.py"), "--render", str(picture), "--collapse"]) == 0
    assert capsys.readouterr().out.strip() == f"grad graph drawn in {picture}"
    svg = picture.read_text()
    assert "∂dense0" in svg and "ddense0.W" in svg
    assert main(["show", str(EXAMPLES / "mlp.py"), "--view", "source", "--render", str(picture)]) == 2
    assert "--render draws one of the views forward, grad, autodiff, step" in capsys.readouterr().err
    linked, bare = tmp_path / "linked.svg", tmp_path / "bare.svg"
    assert main(["show", str(EXAMPLES / "mlp.py"), "--render", str(linked)]) == 0
    assert main(["show", str(EXAMPLES / "mlp.py"), "--render", str(bare), "--no-links"]) == 0
    assert linked.read_text().count("stroke-dasharray") > bare.read_text().count("stroke-dasharray") + 10
    assert main(["show", str(EXAMPLES / "mlp.py"), "--no-links"]) == 2
    assert "--no-links applies to --render" in capsys.readouterr().err


@needs_dot
def test_nodes_steps_and_histories_display_themselves_in_jupyter() -> None:
    step = _step()
    assert "<svg" in step._repr_svg_() and "dense0" in step._repr_svg_()
    assert step.show("grad").startswith("grad(")  # show still returns text
    x = gc.input("x", (None, 3))
    assert "tanh" in gc.tanh(x)._repr_svg_()
    history = History([EpochRecord(1, 0.1, 1.0, 0.9, 0.5, 0.8, 0.55, 2.0, 100.0),
                       EpochRecord(2, 0.1, 0.7, 0.6, 0.75, 0.6, 0.7, 2.0, 100.0)])
    html = history._repr_html_()
    assert html.count("<svg") == 1 and html.count("<tr>") == 3 and "<td>0.75</td>" in html


def test_graphc_imports_trains_and_falls_back_to_text_without_the_graphviz_package() -> None:
    """A GPU machine may have only what training needs: drawing is the only thing that may not work."""
    script = textwrap.dedent("""
        import sys
        sys.modules["graphviz"] = None  # as if it were not installed
        import numpy as np
        import graphc as gc
        from graphc.draw.render import RenderError
        x = gc.input("x", (None, 3))
        step = gc.compile(gc.sum(gc.tanh(x @ gc.param("w", (3, 2)))), optimizer=gc.optim.SGD(0.1))
        step(x=np.ones((4, 3), np.float32))
        assert step._repr_svg_() is None and x._repr_svg_() is None
        try:
            step.draw("grad")
        except RenderError as exc:
            print(exc)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("drawing a graph needs the Python package graphviz: pip install graphviz "
                                     "(and Graphviz's dot program to render it)")
