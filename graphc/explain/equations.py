"""Backpropagation as the course writes it, for a train step's graph, each equation checked.

The forward equations name the quantities of a chain of dense layers, for one
example as a column vector (the course's notation; ⁽ˡ⁾ marks layer l):

    a⁽ˡ⁾ = W⁽ˡ⁾ᵀ h + b⁽ˡ⁾     pre-activation of what the layer reads, h (x for the first layer;
                              graphc's W is inputs × outputs, hence Wᵀ)
    z⁽ˡ⁾ = f(·)               an activation (tanh, sigmoid, relu)
    x̃ = x + ε, z̃⁽ˡ⁾ = ...     noise added to a value, drawn each step
    z̃⁽ˡ⁾ = m⁽ˡ⁾ ⊙ z⁽ˡ⁾       a dropout mask
    μ, σ², x̂, â = γ ⊙ x̂ + β   batch norm of a value, before or after the activation
    v, E                      the output (softmax, or the last value itself) and the loss, targets t

Between two dense layers any sequence of those stages may stand; each gets its
forward equation.  The backward equations go down the same chain: the output
δ⁽ᴸ⁾ = ∂E/∂a⁽ᴸ⁾, ∂E/∂W⁽ˡ⁾ and ∂E/∂b⁽ˡ⁾ are read off the optimized gradient graph
(see :mod:`graphc.explain.expressions`, with δ⁽ˡ⁾ standing for the node the
weight gradient's rule multiplies), so they show what the step computes,
weight decay included; each stage then passes the gradient down by its own
rule: W⁽ˡ⁾ δ⁽ˡ⁾ through a layer, f′ ⊙ (·) through an activation, m ⊙ (·)
through a mask, unchanged through added noise, and Ioffe & Szegedy's six
equations through batch norm.

Nothing is printed unchecked: :func:`derive` evaluates every equation on a
random batch (:mod:`graphc.explain.evaluate`) from the graph's values of the
symbols it names, and compares it with the graph's value of its left side (for
a gradient ∂E/∂q, graphc's own reverse mode through the optimized forward
graph, and for a parameter the train step's gradient too).  A mismatch raises
:class:`EquationMismatch`, which is a bug of graphc's; a graph that is not such
a chain raises :class:`NotInCourseForm`, saying which part did not fit.
"""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np

from graphc.autodiff import grad
from graphc.errors import GraphcError
from graphc.explain import evaluate
from graphc.explain.expressions import (ONE, Call, Coef, Expr, Had, Indicator, Lin, MatVec, Num, Power, Printer,
                                        Quotient, Reader, Square, Sym, Total)
from graphc.interpreter import evaluate as run_graph
from graphc.ir import dtypes
from graphc.ir.graph import toposort, users
from graphc.ir.node import Node
from graphc.ir.program import Program

ACTIVATIONS = ("tanh", "sigmoid", "relu")
RANDOM_OPS = ("normal", "uniform")
FAN_OUT = "fan-out sum"  # the rule name reverse mode gives the sum of a node's gradient contributions
ANNOTATION_COLUMN = 72  # equations longer than this push their annotation right, not everyone's
NOTATION = ("one example as a column vector; ⁽ˡ⁾ marks layer l (never a power); N examples in a batch, "
            "Σₙ sums over them; ⊙ multiplies elementwise; t the targets, v the output, δ⁽ˡ⁾ = ∂E/∂a⁽ˡ⁾")
TOLERANCE = {"float64": 1e-9, "float32": 2e-3}  # relative, of each equation against the graph
CHECK_ROWS = 6  # the batch the equations are checked on


class NotInCourseForm(GraphcError):
    """A gradient graph that cannot be written as the course's layer-by-layer equations."""


class EquationMismatch(NotInCourseForm):
    """An equation that does not give the graph's value: a bug of graphc's, never printed."""


@dataclass(frozen=True)
class Equation:
    number: int
    lhs: Expr
    rhs: Expr
    came_from: tuple[int, ...] = ()  # the forward equations whose nodes' gradient rules built this one
    rules: tuple[str, ...] = ()
    where: Optional[tuple[Expr, Expr]] = None  # a factor named in rhs, with its value
    note: str = ""  # a remark printed after the equation (how noise is drawn)
    node: Optional[Node] = field(default=None, compare=False)  # forward: the node it computes
    wrt: Optional[Node] = field(default=None, compare=False)   # backward: the node E is differentiated by


@dataclass(repr=False)
class Equations:
    forward: list[Equation] = field(default_factory=list)
    backward: list[Equation] = field(default_factory=list)

    def __repr__(self) -> str:
        return self.format()

    def _repr_latex_(self) -> str:
        """Jupyter's view: the equations typeset."""
        return f"$${self.format(tex=True)}$$"

    def all(self) -> list[Equation]:
        return self.forward + self.backward

    def find(self, lhs: str) -> Equation:
        """The equation whose left side prints as ``lhs`` (in Unicode)."""
        text = Printer(tex=False)
        for eq in self.all():
            if text(eq.lhs) == lhs:
                return eq
        raise KeyError(lhs)

    def format(self, tex: bool = False) -> str:
        """Unicode text for a terminal, or LaTeX (an ``aligned`` block) for a notebook."""
        show = Printer(tex)
        if tex:
            rows = [r"&\text{forward} \\"] + [self._tex_row(e, show) for e in self.forward]
            rows += [r"&\text{backward} \\"] + [self._tex_row(e, show) for e in self.backward]
            return "\\begin{aligned}\n" + "\n".join(rows) + "\n\\end{aligned}"
        rows = [self._row(e, show) for e in self.forward + self.backward]
        width = min(max(len(text) for text, _ in rows), ANNOTATION_COLUMN)
        lines = [f"{text:<{width}}   {note}".rstrip() for text, note in rows]
        return "\n".join([f"notation: {NOTATION}", "forward"] + lines[:len(self.forward)] + ["backward"]
                         + lines[len(self.forward):])

    @staticmethod
    def _row(eq: Equation, show: Printer) -> tuple[str, str]:
        text = f"  ({eq.number}) {show(eq.lhs)} = {show(eq.rhs)}"
        if eq.where is not None:
            text += f",   {show(eq.where[0])} = {show(eq.where[1])}"
        if eq.note:
            text += f",   {eq.note}"
        return text, f"← {_source(eq)}" if eq.came_from else ""

    @staticmethod
    def _tex_row(eq: Equation, show: Printer) -> str:
        text = rf"\text{{({eq.number})}}\quad {show(eq.lhs)} &= {show(eq.rhs)}"
        if eq.where is not None:
            text += rf", \quad {show(eq.where[0])} = {show(eq.where[1])}"
        if eq.note:
            text += rf", \quad \text{{{eq.note}}}"
        if eq.came_from:
            text += rf" &&\quad \leftarrow \text{{{_source(eq)}}}"
        return text + r" \\"


def _source(eq: Equation) -> str:
    """Where a backward equation came from: the forward equations and the rules that built it."""
    return f"{', '.join(f'({n})' for n in eq.came_from)}, rule {', '.join(eq.rules)}"


# ------------------------------------------------------------------ the chain of layers

@dataclass
class _BatchNorm:
    gamma: Node
    beta: Node
    mean: Node
    variance: Node
    scale: Node       # √(σ² + ϵ)
    epsilon: float
    normalized: Node  # x̂
    output: Node      # γ ⊙ x̂ + β


@dataclass
class _Stage:
    """One step between dense layers: what it computes from what, and how."""

    kind: str                       # "activation", "batchnorm", "noise" or "mask"
    output: Node
    input: Node
    factor: Optional[Node] = None   # the noise ε or the mask m
    batch_norm: Optional[_BatchNorm] = None


@dataclass
class _Layer:
    number: int
    weight: Node
    matmul: Node
    pre_activation: Node  # matmul + bias (or the matmul itself without a bias)
    bias: Optional[Node] = None
    above: list[_Stage] = field(default_factory=list)  # from a⁽ˡ⁾ up to what the next layer reads, lowest first


def _is_random_factor(node: Node) -> bool:
    """Made of random draws and constants alone: a noise term or a dropout mask."""
    nodes = toposort([node])
    return any(n.op in RANDOM_OPS for n in nodes) and all(
        n.op in RANDOM_OPS or n.op == "constant" or n.inputs for n in nodes)


def _batch_norm(output: Node) -> Optional[_BatchNorm]:
    """Batch norm's nodes, when ``output`` is γ ⊙ (u − μ)/√(σ² + ϵ) + β."""
    if output.op != "add" or output.inputs[0].op != "mul" or output.inputs[1].op != "param":
        return None
    gamma, normalized = output.inputs[0].inputs
    if gamma.op != "param" or normalized.op != "div":
        return None
    centered, scale = normalized.inputs
    if centered.op != "sub" or scale.op != "sqrt" or scale.inputs[0].op != "add":
        return None
    variance, epsilon = scale.inputs[0].inputs
    if epsilon.op != "constant" or epsilon.attrs["value"].array.size != 1:
        return None
    return _BatchNorm(gamma, output.inputs[1], centered.inputs[1], variance, scale,
                      float(epsilon.attrs["value"].array.reshape(())), normalized, output)


def _stage(node: Node) -> Optional[_Stage]:
    """The stage that computes ``node``, if it is one."""
    if node.op in ACTIVATIONS:
        return _Stage("activation", node, node.inputs[0])
    bn = _batch_norm(node)
    if bn is not None:
        return _Stage("batchnorm", node, bn.normalized.inputs[0].inputs[0], batch_norm=bn)
    if node.op in ("add", "mul") and len(node.inputs) == 2:
        for value, factor in (node.inputs, node.inputs[::-1]):
            if _is_random_factor(factor) and not _is_random_factor(value):
                return _Stage("noise" if node.op == "add" else "mask", node, value, factor)
    return None


# ------------------------------------------------------------------ the view

def equations_text(program: Program, tex: bool = False) -> str:
    """The equations as text, or one line saying why this graph has none."""
    try:
        return derive(program).format(tex)
    except NotInCourseForm as exc:
        return f"(no equations: {exc}; --view grad shows the gradient graph)"


def derive(program: Program) -> Equations:
    """The forward and backward equations of a train step's (optimized) program, each checked
    against the graph's values on a random batch."""
    if "loss" not in program.outputs or not program.grads:
        raise NotInCourseForm("there is no gradient to explain: compile the loss with an optimizer")
    derivation = _Derivation(program)
    check(derivation.equations, derivation, GraphValues.random(program, derivation.wrt_nodes()))
    return derivation.equations


class _Derivation:
    def __init__(self, program: Program):
        self.program = program
        self.loss = program.outputs["loss"]
        self.grads = {name[1:]: node for name, node in program.grads.items()}
        self.forward_nodes = toposort([self.loss])
        self.users = users([self.loss])
        self.symbols: dict[Node, Expr] = {}     # forward nodes named by a symbol
        self.meaning: dict[Expr, Node] = {}     # a symbol → the forward node whose value it is
        self.gradient: dict[Expr, Node] = {}    # a symbol → the forward node q whose ∂E/∂q it is
        self.softmaxes: dict[Node, Expr] = {}
        self.defined_by: dict[Node, int] = {}   # forward node → number of the equation that computes it
        self.taken: set[str] = set()
        self.pending_where: Optional[tuple[Expr, Expr]] = None  # an activation's f′, for the next equation
        self.equations = Equations()
        self.below, self.layers = self._chain()
        self.output = self._output()
        self._forward()
        self._backward()

    # ---- recognizing the chain ---------------------------------------------
    def _chain(self) -> tuple[list[_Stage], list[_Layer]]:
        weights = [n for n in self.forward_nodes if n.op == "param" and n.ndim == 2]
        if not weights:
            raise NotInCourseForm("the model has no weight matrix, so no dense layer to write equations for")
        layers = []
        for weight in weights:
            products = [u for u in self.users[weight] if u.op in ("matmul", "transpose")]
            if len(products) != 1 or products[0].op != "matmul" or products[0].inputs[1] is not weight:
                raise NotInCourseForm(f"{weight.name} is not used by exactly one dense layer (x @ W)")
            matmul = products[0]
            bias = next((u for u in self.users[matmul] if u.op == "add" and u.inputs[0] is matmul
                         and u.inputs[1].op == "param" and u.inputs[1].ndim == 1), None)
            layers.append(_Layer(0, weight, matmul, bias if bias is not None else matmul,
                                 bias.inputs[1] if bias is not None else None))
        layers.sort(key=lambda layer: layer.matmul.serial)
        for number, layer in enumerate(layers, 1):
            layer.number = number
        for layer, following in zip(layers, layers[1:]):
            stages, reached = self._peel(following.matmul.inputs[0], f"dense layers {layer.number} and "
                                                                      f"{layer.number + 1}")
            if reached is not layer.pre_activation:
                raise NotInCourseForm(self._not_chained(reached, layer.number, layer.number + 1))
            layer.above = stages
        below, reached = self._peel(layers[0].matmul.inputs[0], "the input and dense layer 1")
        if reached.op != "input":
            raise NotInCourseForm(f"dense layer 1 reads '{reached.op}', not the input or an activation, batch "
                                  f"norm, noise or dropout of it")
        return below, layers

    def _peel(self, node: Node, between: str) -> tuple[list[_Stage], Node]:
        """The stages that compute ``node`` from below, lowest first, and the node they start from."""
        stages: list[_Stage] = []
        while node.op not in ("input", "param") and not self._is_pre_activation(node):
            stage = _stage(node)
            if stage is None:
                raise NotInCourseForm(f"between {between} there is '{node.op}', not an activation "
                                      f"({', '.join(ACTIVATIONS)}), batch norm, noise or dropout")
            stages.insert(0, stage)
            node = stage.input
        return stages, node

    def _is_pre_activation(self, node: Node) -> bool:
        if node.op == "matmul" and node.inputs[1].op == "param":
            return True
        return node.op == "add" and node.inputs[0].op == "matmul" and node.inputs[1].op == "param" \
            and node.inputs[1].ndim == 1

    @staticmethod
    def _not_chained(reached: Node, lower: int, upper: int) -> str:
        if reached.op == "input":
            return (f"dense layers {lower} and {upper} both read the input {reached.name}: the model is not one "
                    f"chain of layers (a mixture of experts or an ensemble has no single δ per layer)")
        return f"dense layer {upper} does not read layer {lower}'s output"

    def _output(self) -> Node:
        """What the loss reads: the last layer's a⁽ᴸ⁾, or an activation, noise or mask of it."""
        last = self.layers[-1]
        node = last.pre_activation
        while True:
            above = [u for u in self.users[node] if (s := _stage(u)) is not None and s.input is node
                     and s.kind != "batchnorm"]
            if len(above) != 1 or len(self.users[node]) != 1:
                return node
            last.above.append(_stage(above[0]))  # type: ignore[arg-type]
            node = above[0]

    # ---- forward equations -------------------------------------------------
    def _symbol(self, text: str, tex: str, layer: Optional[int]) -> Sym:
        text = unicodedata.normalize("NFC", text)  # a + ◌̂ is â: one character where Unicode has one
        key = f"{text}{layer}"
        if key in self.taken:
            raise NotInCourseForm(f"layer {layer} would need two quantities named {text}: two stages of one kind "
                                  f"in a row")
        self.taken.add(key)
        return Sym(text, tex, layer)

    def _define(self, node: Node, symbol: Sym, rhs: Optional[Expr] = None, note: str = "") -> None:
        """Write ``symbol = node`` (read through the symbols so far, or as given) and make ``node`` that symbol."""
        number = len(self.equations.forward) + 1
        rhs = rhs if rhs is not None else self._reader().read(node)
        self.equations.forward.append(Equation(number, symbol, rhs, note=note, node=node))
        self._claim(node, number)
        self.symbols[node] = symbol
        self.meaning[symbol] = node

    def _name(self, node: Node, symbol: Sym) -> None:
        """A leaf's symbol (an input, a parameter, a random factor): no equation of its own."""
        self.symbols[node] = symbol
        self.meaning[symbol] = node

    def _claim(self, node: Node, number: int) -> None:
        """Mark the forward nodes an equation computes (down to the symbols it reads)."""
        stack = [node]
        while stack:
            current = stack.pop()
            if current in self.defined_by or (current in self.symbols and current is not node):
                continue
            self.defined_by[current] = number
            stack.extend(current.inputs)

    def _reader(self) -> Reader:
        return Reader(self.symbols, self.softmaxes)

    def _forward(self) -> None:
        first = self.layers[0].matmul.inputs[0]
        for node in self.forward_nodes:
            if node.op == "input" and self._reached_from(node, first):
                self._name(node, Sym(node.name or "x", rf"\mathbf{{{node.name or 'x'}}}"))
            elif node.op == "input" or node.op == "one_hot":
                self._name(node, Sym("t", r"\mathbf{t}"))
        self._stages(self.below, 0)
        for layer in self.layers:
            l = layer.number
            self._name(layer.weight, Sym("W", r"\mathbf{W}", l))
            if layer.bias is not None:
                self._name(layer.bias, Sym("b", r"\mathbf{b}", l))
            self._define(layer.pre_activation, self._symbol("a", r"\mathbf{a}", l))
            self._stages(layer.above, l)
        v = Sym("v", r"\mathbf{v}")
        if self._reads_softmax(self.output):
            self.softmaxes[self.output] = v
            self.equations.forward.append(Equation(len(self.equations.forward) + 1, v,
                                                   Call("softmax", (self.symbols[self.output],))))
        else:
            self.equations.forward.append(Equation(len(self.equations.forward) + 1, v, self.symbols[self.output],
                                                   node=self.output))
            self.symbols[self.output] = v
            self.meaning[v] = self.output
        self._define(self.loss, Sym("E", "E"))

    def _reached_from(self, node: Node, top: Node) -> bool:
        return node is top or any(n is node for n in toposort([top]))

    def _stages(self, stages: Sequence[_Stage], layer: int) -> None:
        """Forward equations of the stages above layer ``layer`` (0: above the input)."""
        number = layer or None
        for stage in stages:
            below = self.symbols[stage.input]
            base = below.text[0] if isinstance(below, Sym) else "h"
            if stage.kind == "activation":
                self._define(stage.output, self._symbol("z", r"\mathbf{z}", number))
            elif stage.kind == "noise":
                assert stage.factor is not None
                self._name(stage.factor, self._symbol("ε", r"\boldsymbol{\varepsilon}", number))
                self._define(stage.output, self._symbol(f"{base}̃", rf"\tilde{{\mathbf{{{base}}}}}", number),
                             note=self._noise_note(stage.factor))
            elif stage.kind == "mask":
                assert stage.factor is not None
                self._name(stage.factor, self._symbol("m", r"\mathbf{m}", number))
                self._define(stage.output, self._symbol(f"{base}̃", rf"\tilde{{\mathbf{{{base}}}}}", number),
                             rhs=Had((self.symbols[stage.factor], below)), note=_mask_note(stage.factor))
            else:
                self._batch_norm_forward(stage, base, number)

    @staticmethod
    def _noise_note(factor: Node) -> str:
        """How ε is drawn, when it is a scaled standard normal (as nn.GaussianNoise makes it)."""
        if factor.op == "mul" and {i.op for i in factor.inputs} == {"normal", "constant"}:
            scale = next(i for i in factor.inputs if i.op == "constant").attrs["value"].array
            if scale.size == 1:
                return f"ε ~ 𝒩(0, {abs(float(scale.reshape(()))):g}²) drawn afresh each step"
        return "ε drawn afresh each step"

    def _batch_norm_forward(self, stage: _Stage, base: str, layer: Optional[int]) -> None:
        bn = stage.batch_norm
        assert bn is not None
        self._name(bn.gamma, Sym("γ", r"\boldsymbol{\gamma}", layer))
        self._name(bn.beta, Sym("β", r"\boldsymbol{\beta}", layer))
        self._define(bn.mean, self._symbol("μ", r"\boldsymbol{\mu}", layer))
        self._define(bn.variance, self._symbol("σ²", r"\boldsymbol{\sigma}^{2}", layer))
        self._define(bn.normalized, self._symbol("x̂", r"\hat{\mathbf{x}}", layer),
                     rhs=Quotient(self._centered(stage), self._root(bn)))
        hat = base if base in "az" else "y"
        self._define(bn.output, self._symbol(f"{hat}̂", rf"\hat{{\mathbf{{{hat}}}}}", layer))

    def _centered(self, stage: _Stage) -> Expr:
        bn = stage.batch_norm
        assert bn is not None
        return Lin(((Coef(Fraction(1)), self.symbols[stage.input]), (Coef(Fraction(-1)), self.symbols[bn.mean])))

    def _root(self, bn: _BatchNorm, power: Fraction = Fraction(1, 2)) -> Expr:
        """(σ² + ϵ)^power: √ for ½."""
        inside = Lin(((Coef(Fraction(1)), self.symbols[bn.variance]),
                      (Coef(Fraction(bn.epsilon).limit_denominator(10**9)), ONE)))
        return Call("sqrt", (inside,)) if power == Fraction(1, 2) else Power(inside, power)

    def _reads_softmax(self, output: Node) -> bool:
        return any(u.op == "sub" and u.inputs[0] is output and u.inputs[1].op == "max" for u in self.users[output])

    # ---- backward equations ------------------------------------------------
    def _backward(self) -> None:
        for layer in reversed(self.layers):
            l = layer.number
            delta = Sym("δ", r"\boldsymbol{\delta}", l)
            delta_node = self._delta_of(layer)
            if layer is self.layers[-1]:
                self._write(delta, self._reader().read(delta_node), layer.pre_activation,
                            sources=self._sources(delta_node))
            self.symbols[delta_node] = delta
            self._write_read_off(self._gradient_symbol(self.symbols[layer.weight]), layer.weight)
            if layer.bias is not None:
                self._write_read_off(self._gradient_symbol(self.symbols[layer.bias]), layer.bias)
            below = self.layers[l - 2] if l > 1 else None
            stages = below.above if below is not None else self.below
            upstream: Expr = MatVec(self.symbols[layer.weight], False, delta)
            trail = _Trail({self.defined_by[layer.pre_activation]}, {"matmul"})
            for k, stage in reversed(list(enumerate(stages))):
                upstream = self._through(stage, upstream, trail)
                if stage.kind == "batchnorm" and k > 0:  # more stages below: name ∂E/∂u first
                    named = self._gradient_symbol(self.symbols[stage.input])
                    self._write(named, upstream, stage.input, trail=trail)
                    upstream, trail = named, _Trail()
            if below is not None:
                self._write(Sym("δ", r"\boldsymbol{\delta}", below.number), upstream, below.pre_activation,
                            trail=trail)

    def _through(self, stage: _Stage, upstream: Expr, trail: "_Trail") -> Expr:
        """∂E/∂(stage's input) from ``upstream`` = ∂E/∂(its output), by the stage's backward rule;
        ``trail`` gathers the forward equations and rules the gradient came through."""
        if stage.kind == "batchnorm":
            upstream = self._batch_norm_backward(stage, upstream, trail)
            bn = stage.batch_norm
            assert bn is not None
            trail.reset({self.defined_by[n] for n in (bn.mean, bn.variance, bn.normalized, bn.output)},
                        {"add", "div", "mul", "sqrt", "sub", "sum"})
            return upstream
        trail.add(self.defined_by[stage.output], stage.output.op)
        if stage.kind == "noise":  # ∂(u + ε)/∂u = 1
            return upstream
        if stage.kind == "mask":
            assert stage.factor is not None
            return _product(self.symbols[stage.factor], upstream)
        return self._activation(stage, upstream)

    def _activation(self, stage: _Stage, upstream: Expr) -> Expr:
        """f′(s) ⊙ upstream, f′ written as the course does, with its value named beside."""
        activation = stage.output
        below, above = self.symbols[stage.input], self.symbols[activation]
        derivative = Call(f"{activation.op}′", (below,))
        value = {"tanh": Lin(((Coef(Fraction(1)), ONE), (Coef(Fraction(-1)), Square(above)))),
                 "sigmoid": Had((above, Lin(((Coef(Fraction(1)), ONE), (Coef(Fraction(-1)), above))))),
                 "relu": Indicator(below, ">", Num(Fraction(0)))}[activation.op]
        self.pending_where = (derivative, value)
        return _product(derivative, upstream)

    def _batch_norm_backward(self, stage: _Stage, upstream: Expr, trail: "_Trail") -> Expr:
        """Ioffe & Szegedy's backward equations for y = γ ⊙ x̂ + β, x̂ = (u − μ)/√(σ² + ϵ); returns ∂E/∂u."""
        bn = stage.batch_norm
        assert bn is not None
        y, x_hat = self.symbols[bn.output], self.symbols[bn.normalized]
        mean, variance = self.symbols[bn.mean], self.symbols[bn.variance]
        d_y = self._gradient_symbol(y)
        self._write(d_y, upstream, bn.output, trail=trail)
        d_x_hat = self._gradient_symbol(x_hat)
        output, normalized = (self.defined_by[n] for n in (bn.output, bn.normalized))
        self._write(d_x_hat, _product(d_y, self.symbols[bn.gamma]), bn.normalized, trail=_Trail({output}, {"mul"}))
        centered = self._centered(stage)
        d_variance = self._gradient_symbol(variance)
        self._write(d_variance, Lin(((Coef(Fraction(-1, 2)),
                                      Total("n", _product(d_x_hat, centered, self._root(bn, Fraction(-3, 2))))),)),
                    bn.variance, trail=_Trail({normalized}, {"div", "sqrt", "add"}))
        d_mean = self._gradient_symbol(mean)
        self._write(d_mean, Lin(((Coef(Fraction(-1)), Total("n", Quotient(d_x_hat, self._root(bn)))),
                                 (Coef(Fraction(-2), -1), _product(d_variance, Total("n", centered))))),
                    bn.mean, trail=_Trail({normalized, self.defined_by[bn.variance]}, {"sub", "sum", "mul"}))
        self._write_read_off(self._gradient_symbol(self.symbols[bn.gamma]), bn.gamma,
                             Total("n", _product(d_y, x_hat)))
        self._write_read_off(self._gradient_symbol(self.symbols[bn.beta]), bn.beta, Total("n", d_y))
        return Lin(((Coef(Fraction(1)), Quotient(d_x_hat, self._root(bn))),
                    (Coef(Fraction(2), -1), _product(d_variance, centered)),
                    (Coef(Fraction(1), -1), d_mean)))

    def _write_read_off(self, lhs: Sym, parameter: Node, rhs: Optional[Expr] = None) -> None:
        """∂E/∂θ for a parameter θ: as the train step's gradient node reads (or as given)."""
        node = self.grads.get(parameter.name)
        if node is None:
            raise NotInCourseForm(f"the train step has no gradient of {parameter.name}")
        self._write(lhs, rhs if rhs is not None else self._reader().read(node), parameter,
                    sources=self._sources(node))

    def _write(self, lhs: Sym, rhs: Expr, wrt: Node, trail: Optional["_Trail"] = None,
               sources: Optional[set[tuple[Node, str]]] = None) -> None:
        """Add ``lhs = rhs``, the gradient of E with respect to ``wrt``, which came through ``trail``
        (or was built by the gradient graph's ``sources``)."""
        if sources is not None:
            trail = _Trail({self.defined_by[f] for f, _ in sources if f in self.defined_by},
                           {rule for _, rule in sources})
        trail = trail or _Trail()
        where, self.pending_where = self.pending_where, None
        number = len(self.equations.forward) + len(self.equations.backward) + 1
        self.equations.backward.append(Equation(number, lhs, rhs, tuple(sorted(trail.numbers)),
                                                tuple(sorted(trail.rules)), where, wrt=wrt))
        self.gradient[lhs] = wrt

    def _gradient_symbol(self, symbol: Expr) -> Sym:
        text, tex = Printer(tex=False)(symbol), Printer(tex=True)(symbol)
        return Sym(f"∂E/∂{text}", rf"\frac{{\partial E}}{{\partial {tex}}}")

    def _sources(self, node: Node) -> set[tuple[Node, str]]:
        """The (forward node, rule) pairs that built ``node``, looking through fan-out sums."""
        origin = node.origin
        if origin is None:
            return set()
        if origin.rule != FAN_OUT:
            return {(origin.forward, origin.rule)}
        return set().union(*(self._sources(i) for i in node.inputs if i.origin is not None and i.inputs))

    def _delta_of(self, layer: _Layer) -> Node:
        """δ: the node the weight gradient's rule multiplies by the layer's input (Σₙ h δᵀ)."""
        weight_grad = self.grads.get(layer.weight.name)
        for node in toposort([weight_grad]) if weight_grad is not None else ():
            if node.op == "matmul" and node.origin is not None and node.origin.forward is layer.matmul \
                    and node.inputs[0].op == "transpose" and node.inputs[0].inputs[0] is layer.matmul.inputs[0]:
                return node.inputs[1]
        raise NotInCourseForm(f"the gradient of {layer.weight.name} is not Σₙ h δᵀ of its layer")

    def wrt_nodes(self) -> list[Node]:
        """The forward nodes whose gradient some backward equation states."""
        return [eq.wrt for eq in self.equations.backward if eq.wrt is not None]


@dataclass
class _Trail:
    """The forward equations, and the ops' rules, a gradient has come through so far."""

    numbers: set[int] = field(default_factory=set)
    rules: set[str] = field(default_factory=set)

    def add(self, number: int, rule: str) -> None:
        self.numbers.add(number)
        self.rules.add(rule)

    def reset(self, numbers: set[int], rules: set[str]) -> None:
        self.numbers, self.rules = set(numbers), set(rules)


def _product(*factors: Expr) -> Expr:
    flat: list[Expr] = []
    for factor in factors:
        flat.extend(factor.factors if isinstance(factor, Had) else (factor,))
    return Had(tuple(flat)) if len(flat) > 1 else flat[0]


def _mask_note(factor: Node) -> str:
    kept = factor.inputs[0] if factor.op == "mul" else None
    if kept is not None and kept.op == "cast" and kept.inputs[0].op == "ge" and kept.inputs[0].inputs[0].op == "uniform":
        threshold = kept.inputs[0].inputs[1]
        if threshold.op == "constant":
            p = float(threshold.attrs["value"].array.reshape(()))
            return f"m = 0 with probability {p:g}, else 1/(1 − {p:g}), drawn afresh each step"
    return "m drawn afresh each step"


# ------------------------------------------------------------------ checking against the graph

@dataclass
class GraphValues:
    """The values a batch gives every forward node, ∂E/∂q for the nodes q asked for, and the train
    step's parameter gradients, from one run of the interpreter (so random draws agree)."""

    rows: int
    dtype: str
    forward: dict[Node, np.ndarray]
    gradient: dict[Node, np.ndarray]
    step_gradient: dict[str, np.ndarray]

    @classmethod
    def of(cls, program: Program, wrt: Sequence[Node], feeds: dict[str, np.ndarray],
           variables: dict[str, np.ndarray], seed: int = 0) -> "GraphValues":
        loss = program.outputs["loss"]
        forward = toposort([loss])
        wrt = list(dict.fromkeys(wrt))
        oracles = grad(loss, wrt) if wrt else []
        names = list(program.grads)
        values = run_graph(forward + oracles + [program.grads[n] for n in names], feeds, variables,
                           rng=np.random.default_rng(seed))
        rows = next((v.shape[0] for n, v in zip(forward, values) if n.op == "input" and v.ndim), 1)
        gradient = dict(zip(wrt, values[len(forward):len(forward) + len(oracles)]))
        return cls(rows, loss.dtype, dict(zip(forward, values[:len(forward)])), gradient,
                   {name[1:]: v for name, v in zip(names, values[len(forward) + len(oracles):])})

    @classmethod
    def random(cls, program: Program, wrt: Sequence[Node], rows: int = CHECK_ROWS, seed: int = 0) -> "GraphValues":
        """Values for a random batch and random parameters (labels within the classes a one-hot has)."""
        rng = np.random.default_rng(seed)
        forward = toposort([program.outputs["loss"]])
        depth = min((n.attrs["depth"] for n in forward if n.op == "one_hot"), default=2)
        feeds, variables = {}, {}
        for node in forward:
            shape = tuple(rows if isinstance(d, str) else d for d in node.shape)
            if node.op == "input":
                feeds[node.name] = (rng.integers(0, depth, shape).astype(node.dtype) if dtypes.is_int(node.dtype)
                                    else rng.normal(size=shape).astype(node.dtype))
            elif node.is_variable:  # a weight matrix scaled as Glorot's initializer would: no saturated units
                scale = 1.0 / math.sqrt(shape[0]) if node.ndim >= 2 else 0.2
                start = 1.0 if node.name and node.name.endswith("gamma") else 0.0
                variables[node.name] = (start + scale * rng.normal(size=shape)).astype(node.dtype)
        return cls.of(program, wrt, feeds, variables, seed)


def symbol_values(derivation: "_Derivation", values: GraphValues) -> dict[Expr, np.ndarray]:
    """Each symbol's value, in float64: a forward quantity's from the graph, a gradient's from
    reverse mode, and one with no node of its own (the softmax v, which the loss reads as a
    log-softmax) from its defining equation."""
    env: dict[Expr, np.ndarray] = {symbol: values.forward[node].astype(np.float64)
                                   for symbol, node in derivation.meaning.items() if node in values.forward}
    for symbol, node in derivation.gradient.items():
        if node in values.gradient:
            env[symbol] = values.gradient[node].astype(np.float64)
    for eq in derivation.equations.forward:
        if eq.node is None:
            env[eq.lhs] = evaluate.value(eq.rhs, env, values.rows)
    return env


def _expected(eq: Equation, derivation: "_Derivation", values: GraphValues) -> np.ndarray:
    if eq.node is not None:
        return values.forward[eq.node]
    assert eq.wrt is not None
    return values.gradient[eq.wrt]


def check(equations: Equations, derivation: "_Derivation", values: GraphValues) -> None:
    """Every equation, its symbols given the graph's values, against the graph's value of its left
    side (a parameter's gradient also against the train step's); :class:`EquationMismatch` if not.

    The tolerance is relative to each value, with a floor a thousandth of the tolerance times the
    largest gradient: a gradient that is exactly zero (a bias before batch norm) is computed as
    rounding noise, by the graph and by the equation alike."""
    env = symbol_values(derivation, values)
    text = Printer(tex=False)
    tolerance = TOLERANCE.get(values.dtype, TOLERANCE["float32"])
    floor = 1e-3 * max((float(np.max(np.abs(v))) for v in values.gradient.values() if v.size), default=1.0)
    for eq in equations.all():
        if eq.node is None and eq.wrt is None:
            continue  # v = softmax(a): its value enters through E
        local = dict(env)
        if eq.where is not None:
            local[eq.where[0]] = evaluate.value(eq.where[1], local, values.rows)
        with np.errstate(all="ignore"):
            got = np.asarray(evaluate.value(eq.rhs, local, values.rows), dtype=np.float64)
        wants = [_expected(eq, derivation, values)]
        if eq.wrt is not None and eq.wrt.is_variable and eq.wrt.name in values.step_gradient:
            wants.append(values.step_gradient[eq.wrt.name])
        for want in wants:
            want = np.asarray(want, dtype=np.float64)
            scale = float(np.max(np.abs(want))) if want.size else 0.0
            error = float(np.max(np.abs(got - want))) if want.size else 0.0
            if got.shape != want.shape and got.size != 1 or not math.isfinite(error) \
                    or error > tolerance * max(scale, floor):
                raise EquationMismatch(f"equation ({eq.number}) {text(eq.lhs)} = {text(eq.rhs)} does not give the "
                                       f"graph's value (largest difference {error:.3g} against values up to "
                                       f"{scale:.3g}); this is a bug of graphc's, please report the model")

