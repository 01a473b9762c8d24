"""Combining sub-networks: a gated mixture of experts and an ensemble (mixture of models).

Both are plain containers: every member is an ordinary module with its own
path-based names (``moe0.expert1.dense0.W``), and the combination is written in
the DSL, so the gradient through the gate and the members needs no rule of its own.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

import numpy as np

from graphc import composites, ops
from graphc.errors import GraphcError, ShapeError
from graphc.ir.node import Node
from graphc.ir.shapes import fmt
from graphc.nn.layers import Dense
from graphc.nn.module import Module, as_module

Average = Literal["outputs", "probabilities"]


class MixtureOfExperts(Module):
    """y = Σ_k softmax(gate(x))_k · expert_k(x).

    ``gate`` is any module producing one logit per expert from the input
    (default: ``Dense(len(experts))``).  Every expert must produce outputs of
    the same shape, of the gate's rank.
    """

    kind = "moe"

    def __init__(self, experts: Sequence[Any], gate: Any = None, name: Optional[str] = None):
        super().__init__(name)
        if not experts:
            raise GraphcError("MixtureOfExperts needs at least one expert")
        self.experts = [as_module(expert) for expert in experts]
        self.gate = as_module(gate) if gate is not None else Dense(len(self.experts))
        self.adopt_children()

    def named_children(self) -> list[tuple[str, Module]]:
        return [(f"expert{k}", e) for k, e in enumerate(self.experts)] + [("gate", self.gate)]

    def gates(self, x: Node, training: bool = True) -> Node:
        """The mixing weights softmax(gate(x)), one per expert along the last axis; they sum to 1."""
        logits = self.gate(x, training)
        if logits.shape[-1] != len(self.experts):
            raise ShapeError(f"{self.name}: the gate makes {logits.shape[-1]} logits per example for "
                             f"{len(self.experts)} experts; give it {len(self.experts)} outputs")
        return composites.softmax(logits, axis=-1)

    def forward(self, x: Node, training: bool) -> Node:
        weights = self.gates(x, training)
        outputs = same_shape_outputs(self, [expert(x, training) for expert in self.experts])
        if outputs[0].ndim != weights.ndim:
            raise ShapeError(f"{self.name}: the experts' outputs {fmt(outputs[0].shape)} and the gate's "
                             f"{fmt(weights.shape)} must have the same rank")
        terms = [_component(weights, k) * out for k, out in enumerate(outputs)]
        return _total(terms)

    def describe(self) -> str:
        return f"moe({len(self.experts)} experts)"


class Ensemble(Module):
    """A mixture of models with equal weights: the prediction averages the members'.

    ``average="outputs"`` (default) takes the mean of the members' outputs: the
    prediction for regressors, the logits for classifiers (a geometric mean of
    their probabilities, renormalized).  ``average="probabilities"`` treats the
    outputs as logits and averages the class probabilities, the proper mixture
    p(t|x) = (1/M) Σ_m p_m(t|x); it returns log of that average, which is a
    valid set of logits: ``softmax`` of it gives the averaged probabilities and
    ``softmax_cross_entropy`` on it is the mixture's negative log-likelihood.
    """

    kind = "ensemble"

    def __init__(self, members: Sequence[Any], average: Average = "outputs", name: Optional[str] = None):
        super().__init__(name)
        if not members:
            raise GraphcError("Ensemble needs at least one member")
        if average not in ("outputs", "probabilities"):
            raise GraphcError(f"Ensemble average must be 'outputs' or 'probabilities', got {average!r}")
        self.members = [as_module(member) for member in members]
        self.average = average
        self.adopt_children()

    def named_children(self) -> list[tuple[str, Module]]:
        return [(f"member{m}", member) for m, member in enumerate(self.members)]

    def forward(self, x: Node, training: bool) -> Node:
        outputs = same_shape_outputs(self, [member(x, training) for member in self.members])
        if self.average == "probabilities":
            return _log_mean_exp([composites.log_softmax(out, axis=-1) for out in outputs])
        return _total(outputs) / float(len(outputs))

    def describe(self) -> str:
        return f"ensemble({len(self.members)}, {self.average})"


def same_shape_outputs(container: Module, outputs: list[Node]) -> list[Node]:
    shapes = {out.shape for out in outputs}
    if len(shapes) > 1:
        raise ShapeError(f"{container.name}: its members' outputs differ in shape "
                         f"({', '.join(fmt(out.shape) for out in outputs)}); they must agree to be combined")
    return outputs


def _component(weights: Node, k: int) -> Node:
    """Column k of ``weights``, keeping the axis so it broadcasts against an expert's output."""
    selector = np.zeros(weights.shape[-1], dtype=weights.dtype)
    selector[k] = 1
    return ops.sum(weights * ops.constant(selector), axis=-1, keepdims=True)


def _total(terms: list[Node]) -> Node:
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _log_mean_exp(terms: list[Node]) -> Node:
    """log((1/M) Σ_m exp(t_m)), element-wise, shifted by the largest term so nothing overflows."""
    largest = terms[0]
    for term in terms[1:]:
        largest = ops.maximum(largest, term)
    shift = ops.stop_gradient(largest)
    return ops.log(_total([ops.exp(t - shift) for t in terms]) / float(len(terms))) + shift
