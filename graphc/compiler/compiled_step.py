"""What ``gc.compile`` returns: a running step (:class:`~graphc.runtime.step.Step`) with the
views a user looks inside it through — the graphs as text or pictures, the generated
source, backprop as equations.  The views live here, above the runtime, because they
need the explainer and the drawing, which the runtime does not.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from graphc.draw.dot import Collapse, draw
from graphc.draw.render import svg_or_none
from graphc.explain.equations import Equations, derive, equations_text
from graphc.ir.node import Node
from graphc.ir.printing import format_graph
from graphc.runtime.step import Step

if TYPE_CHECKING:
    import graphviz


class CompiledStep(Step):
    """A compiled function: call it like :class:`~graphc.runtime.step.Step`, look inside it here."""

    @property
    def source(self) -> str:
        return self.generated.source

    def show(self, view: str = "step") -> str:
        """One view of the compiled function, as text:

        ``forward`` the model as built; ``grad`` the gradients after optimization
        (what the step computes); ``autodiff`` the gradients as reverse mode first
        wrote them; ``step`` the whole optimized program, updates included;
        ``source`` the generated code (for the CUDA backend, the host schedule of
        launches, GEMMs and copies); ``kernels`` the generated kernel source (C
        loops, or the CUDA translation unit); ``equations`` backprop in the
        course's notation.
        """
        if view == "source":
            return self.source
        if view == "kernels":
            return self.generated.kernels or "(no kernels: nothing was fused)"
        if view == "equations":
            return equations_text(self.program)
        if view == "step":
            return self.program.format()
        graph = self.graph(view)
        if not graph:
            return "(no gradients: this function was compiled without an optimizer)"
        return format_graph(graph, title=view)

    def equations(self) -> Equations:
        """Backprop as the course writes it, read off the gradient graph (LaTeX in Jupyter);
        raises :class:`~graphc.explain.equations.NotInCourseForm` for a graph not of that form."""
        return derive(self.program)

    def graph(self, view: str) -> dict[str, Node]:
        """The named nodes a view (``forward``, ``grad``, ``autodiff`` or ``step``) shows."""
        if view == "forward":
            return dict(self.source_program.outputs)
        if view in ("grad", "autodiff"):
            return dict((self.program if view == "grad" else self.source_program).grads)
        if view == "step":
            return self.program.shown()
        raise ValueError(f"unknown view {view!r}: choose forward, grad, autodiff, step, source, kernels or equations")

    def draw(self, view: str = "grad", collapse: Collapse = (), links: bool = True) -> "graphviz.Digraph":
        """A view as a Graphviz drawing (shown as a picture in Jupyter); see :func:`graphc.draw.dot.draw`."""
        context = self.source_program if view == "autodiff" else self.program
        return draw(self.graph(view), title=view, collapse=collapse, context=list(context.outputs.values()),
                    links=links)

    def _repr_svg_(self) -> Optional[str]:
        """Jupyter's picture of a train step: its gradient graph (the forward graph without an optimizer)."""
        return svg_or_none(lambda: self.draw("grad" if self.program.grads else "forward"))
