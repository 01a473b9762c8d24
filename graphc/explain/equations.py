"""Backpropagation as the course writes it, read off a train step's gradient graph.

The forward equations name the quantities of each dense layer, for one
example as a column vector (the course's notation):

    aˡ = Wˡᵀ zˡ⁻¹ + bˡ      pre-activation (z⁰ = x; graphc's W is inputs × outputs, hence Wᵀ)
    zˡ = f(aˡ)              activation; the output layer's aᴸ gives v (softmax, or v = aᴸ)
    E  = ...                the loss, with targets t

and, for a batch-normalized layer, μˡ, σˡ, x̂ˡ and âˡ = γˡ ⊙ x̂ˡ + βˡ.  The
backward equations are not a template: each is the reading (see
:mod:`graphc.explain.expressions`) of a node of the optimized gradient graph,
with the nodes above standing as symbols and δˡ = ∂E/∂aˡ standing for the
node the weight gradient's rule multiplies (∂E/∂Wˡ = Σₙ zˡ⁻¹ δˡᵀ).  An
activation's δ is split into the product the rule built: the part read
through the next layer (Wˡ⁺¹ δˡ⁺¹) and f′, the rest with that part set to 1.
Each backward equation names the forward equation whose node's rule made it.

Graphs that are not a chain of dense layers (each optionally followed by
batch norm and an elementwise activation) ending in a loss raise
:class:`NotInCourseForm`, saying which part did not fit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from graphc.errors import GraphcError
from graphc.explain.expressions import ONE, Call, Expr, Had, Printer, Reader, Sym
from graphc.ir.graph import toposort, users
from graphc.ir.node import Node
from graphc.program import Program

ACTIVATIONS = ("tanh", "sigmoid", "relu")
FAN_OUT = "fan-out sum"  # the rule name reverse mode gives the sum of a node's gradient contributions
ANNOTATION_COLUMN = 72  # equations longer than this push their annotation right, not everyone's


class NotInCourseForm(GraphcError):
    """A gradient graph that cannot be written as the course's layer-by-layer equations."""


@dataclass(frozen=True)
class Equation:
    number: int
    lhs: Expr
    rhs: Expr
    came_from: tuple[int, ...] = ()  # the forward equations whose nodes' gradient rules built this one
    rules: tuple[str, ...] = ()
    where: Optional[tuple[Expr, Expr]] = None  # a factor named in rhs, with its value


@dataclass(repr=False)
class Equations:
    forward: list[Equation] = field(default_factory=list)
    backward: list[Equation] = field(default_factory=list)

    def __repr__(self) -> str:
        return self.format()

    def _repr_latex_(self) -> str:
        """Jupyter's view: the equations typeset."""
        return f"$${self.format(tex=True)}$$"

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
        return "\n".join(["forward"] + lines[:len(self.forward)] + ["backward"] + lines[len(self.forward):])

    @staticmethod
    def _row(eq: Equation, show: Printer) -> tuple[str, str]:
        text = f"  ({eq.number}) {show(eq.lhs)} = {show(eq.rhs)}"
        if eq.where is not None:
            text += f",   {show(eq.where[0])} = {show(eq.where[1])}"
        return text, f"← {_source(eq)}" if eq.came_from else ""

    @staticmethod
    def _tex_row(eq: Equation, show: Printer) -> str:
        text = rf"\text{{({eq.number})}}\quad {show(eq.lhs)} &= {show(eq.rhs)}"
        if eq.where is not None:
            text += rf", \quad {show(eq.where[0])} = {show(eq.where[1])}"
        if eq.came_from:
            text += rf" &&\quad \leftarrow \text{{{_source(eq)}}}"
        return text + r" \\"


def _source(eq: Equation) -> str:
    """Where a backward equation came from: the forward equations and the rules that built it."""
    return f"{', '.join(f'({n})' for n in eq.came_from)}, rule {', '.join(eq.rules)}"


@dataclass
class _Layer:
    """One dense layer found in the forward graph, with what follows it up to the next layer."""

    number: int
    weight: Node
    matmul: Node
    pre_activation: Node  # matmul + bias (or the matmul itself without a bias)
    bias: Optional[Node] = None
    batch_norm: Optional["_BatchNorm"] = None
    activation: Optional[Node] = None  # f(a) or f(â)


@dataclass
class _BatchNorm:
    gamma: Node
    beta: Node
    mean: Node
    scale: Node  # √(σ² + ε)
    normalized: Node  # x̂
    output: Node  # â = γ ⊙ x̂ + β


def equations_text(program: Program, tex: bool = False) -> str:
    """The equations as text, or one line saying why this graph has none."""
    try:
        return derive(program).format(tex)
    except NotInCourseForm as exc:
        return f"(no equations: {exc}; --view grad shows the gradient graph)"


def derive(program: Program) -> Equations:
    """The forward and backward equations of a train step's (optimized) program."""
    if "loss" not in program.outputs or not program.grads:
        raise NotInCourseForm("there is no gradient to explain: compile the loss with an optimizer")
    return _Derivation(program).equations


class _Derivation:
    def __init__(self, program: Program):
        self.loss = program.outputs["loss"]
        self.grads = {name[1:]: node for name, node in program.grads.items()}
        self.forward_nodes = toposort([self.loss])
        self.users = users([self.loss])
        self.layers = self._layers()
        self.symbols: dict[Node, Expr] = {}
        self.softmaxes: dict[Node, Expr] = {}
        self.defined_by: dict[Node, int] = {}  # forward node → number of the equation that computes it
        self.equations = Equations()
        self._forward()
        self._backward()

    # ---- the forward graph -------------------------------------------------
    def _layers(self) -> list[_Layer]:
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
            self._between(layer, following.matmul.inputs[0])
        return layers

    def _between(self, layer: _Layer, next_input: Node) -> None:
        """Fill in the batch norm and activation that lead from ``layer`` to the next layer's input."""
        node = next_input
        if node.op == "input":
            raise NotInCourseForm(f"dense layers {layer.number} and {layer.number + 1} both read the input "
                                  f"{node.name}: the model is not one chain of layers")
        if node.op in ACTIVATIONS:
            layer.activation, node = node, node.inputs[0]
        if node is not layer.pre_activation:
            layer.batch_norm = _batch_norm(node, layer.pre_activation)
            if layer.batch_norm is None:
                raise NotInCourseForm(f"between dense layers {layer.number} and {layer.number + 1} there is "
                                      f"'{next_input.op}', not an activation ({', '.join(ACTIVATIONS)}) "
                                      f"or batch norm")

    # ---- forward equations -------------------------------------------------
    def _define(self, node: Node, symbol: Expr) -> None:
        """Write ``symbol = node`` (read through the symbols so far) and make ``node`` that symbol."""
        number = len(self.equations.forward) + 1
        rhs = self._reader().read(node)
        self.equations.forward.append(Equation(number, symbol, rhs))
        self._claim(node, number)
        self.symbols[node] = symbol

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
        self.symbols[first] = Sym(first.name or "x", rf"\mathbf{{{first.name or 'x'}}}")
        for node in self.forward_nodes:
            if node.op == "input" and node is not first:
                self.symbols[node] = Sym("t", r"\mathbf{t}")
            elif node.op == "one_hot":
                self.symbols[node] = Sym("t", r"\mathbf{t}")
        for layer in self.layers:
            l = layer.number
            self.symbols[layer.weight] = Sym("W", r"\mathbf{W}", l)
            if layer.bias is not None:
                self.symbols[layer.bias] = Sym("b", r"\mathbf{b}", l)
            self._define(layer.pre_activation, Sym("a", r"\mathbf{a}", l))
            if layer.batch_norm is not None:
                bn = layer.batch_norm
                self.symbols[bn.gamma] = Sym("γ", r"\boldsymbol{\gamma}", l)
                self.symbols[bn.beta] = Sym("β", r"\boldsymbol{\beta}", l)
                self._define(bn.mean, Sym("μ", r"\boldsymbol{\mu}", l))
                self._define(bn.scale, Sym("σ", r"\boldsymbol{\sigma}", l))
                self._define(bn.normalized, Sym("x̂", r"\hat{\mathbf{x}}", l))
                self._define(bn.output, Sym("â", r"\hat{\mathbf{a}}", l))
            if layer.activation is not None:
                self._define(layer.activation, Sym("z", r"\mathbf{z}", l))
        output = self.layers[-1].pre_activation
        v = Sym("v", r"\mathbf{v}")
        if self._reads_softmax(output):
            self.softmaxes[output] = v
            self.equations.forward.append(Equation(len(self.equations.forward) + 1, v,
                                                   Call("softmax", (self.symbols[output],))))
        else:
            self.equations.forward.append(Equation(len(self.equations.forward) + 1, v, self.symbols[output]))
            self.symbols[output] = v
        self._define(self.loss, Sym("E", "E"))

    def _reads_softmax(self, output: Node) -> bool:
        return any(u.op == "sub" and u.inputs[0] is output and u.inputs[1].op == "max" for u in self.users[output])

    # ---- backward equations ------------------------------------------------
    def _backward(self) -> None:
        for layer in reversed(self.layers):
            delta = self._delta_of(layer)
            l = layer.number
            if layer is self.layers[-1]:
                self._write(Sym("δ", r"\boldsymbol{\delta}", l), delta)
            self._write(_gradient_of(self.symbols[layer.weight]), self.grads[layer.weight.name])
            if layer.bias is not None:
                self._write(_gradient_of(self.symbols[layer.bias]), self.grads[layer.bias.name])
            if layer.number > 1:
                self._back_through(self.layers[l - 2])

    def _back_through(self, layer: _Layer) -> None:
        """δ of ``layer`` from the δ of the layer above: through its activation, then its batch norm."""
        delta = self._delta_of(layer)
        delta_symbol = Sym("δ", r"\boldsymbol{\delta}", layer.number)
        if layer.activation is not None:
            below_activation = delta if layer.batch_norm is None else self._rule_result(layer.activation, delta)
            if below_activation is None:
                raise NotInCourseForm(f"layer {layer.number}: no gradient node of its activation's rule")
            lhs = Sym("δ̂", r"\hat{\boldsymbol{\delta}}", layer.number) if layer.batch_norm else delta_symbol
            self._write_activation(lhs, below_activation, layer)
        if layer.batch_norm is not None:
            bn = layer.batch_norm
            self._write(_gradient_of(self.symbols[bn.gamma]), self.grads[bn.gamma.name])
            self._write(_gradient_of(self.symbols[bn.beta]), self.grads[bn.beta.name])
        if layer.activation is None or layer.batch_norm is not None:
            self._write(delta_symbol, delta)

    def _write_activation(self, lhs: Sym, node: Node, layer: _Layer) -> None:
        """lhs = f′(·) ⊙ (what came through the layer above), split as the activation's rule built it."""
        activation = layer.activation
        assert activation is not None
        upstream = self._upstream(node, activation)
        derivative = Call(f"{activation.op}′", (self.symbols[activation.inputs[0]],))
        fprime = Reader({**self.symbols, upstream: ONE}, self.softmaxes).read(node)
        rhs = Had((derivative, self._reader().read(upstream)))
        self._append(lhs, rhs, node, where=(derivative, fprime))

    def _write(self, lhs: Sym, node: Node) -> None:
        self._append(lhs, self._reader().read(node), node)

    def _append(self, lhs: Sym, rhs: Expr, node: Node, where: Optional[tuple[Expr, Expr]] = None) -> None:
        """Add ``lhs = rhs``, computed by ``node``; a δ becomes the symbol of its node from now on."""
        number = len(self.equations.forward) + len(self.equations.backward) + 1
        sources = self._sources(node)
        came_from = tuple(sorted({self.defined_by[f] for f, _ in sources if f in self.defined_by}))
        rules = tuple(sorted({rule for _, rule in sources}))
        self.equations.backward.append(Equation(number, lhs, rhs, came_from, rules, where))
        if lhs.text.startswith("δ"):
            self.symbols[node] = lhs

    def _sources(self, node: Node) -> set[tuple[Node, str]]:
        """The (forward node, rule) pairs that built ``node``, looking through fan-out sums."""
        origin = node.origin
        if origin is None:
            return set()
        if origin.rule != FAN_OUT:
            return {(origin.forward, origin.rule)}
        return set().union(*(self._sources(i) for i in node.inputs if i.origin is not None and i.inputs))

    def _delta_of(self, layer: _Layer) -> Node:
        """δ: the node the weight gradient's rule multiplies by the layer's input (Σₙ zˡ⁻¹ δᵀ)."""
        weight_grad = self.grads.get(layer.weight.name)
        for node in toposort([weight_grad]) if weight_grad is not None else ():
            if node.op == "matmul" and node.origin is not None and node.origin.forward is layer.matmul \
                    and node.inputs[0].op == "transpose" and node.inputs[0].inputs[0] is layer.matmul.inputs[0]:
                return node.inputs[1]
        raise NotInCourseForm(f"the gradient of {layer.weight.name} is not Σₙ z δᵀ of its layer")

    def _rule_result(self, forward: Node, within: Node) -> Optional[Node]:
        """The last node ``forward``'s gradient rule built among ``within``'s operands."""
        made = [n for n in toposort([within]) if n.origin is not None and n.origin.forward is forward]
        return made[-1] if made else None

    def _upstream(self, node: Node, activation: Node) -> Node:
        """The one operand of the activation rule's nodes that the rule did not build: ∂E/∂z."""
        found: set[Node] = set()
        stack = [node]
        while stack:
            current = stack.pop()
            if current.origin is not None and current.origin.forward is activation:
                stack.extend(current.inputs)
            elif current.origin is not None and current.inputs:  # constants are no gradient
                found.add(current)
        if len(found) != 1:
            raise NotInCourseForm(f"the {activation.op} rule's gradient does not read one upstream gradient")
        return found.pop()


def _gradient_of(symbol: Expr) -> Sym:
    return Sym(f"∂E/∂{Printer(tex=False)(symbol)}", rf"\frac{{\partial E}}{{\partial {Printer(tex=True)(symbol)}}}")


def _batch_norm(output: Node, pre_activation: Node) -> Optional[_BatchNorm]:
    """Batch norm's nodes, when ``output`` is γ ⊙ (a − μ)/√(σ² + ε) + β of ``pre_activation`` a."""
    if output.op != "add" or output.inputs[0].op != "mul" or output.inputs[1].op != "param":
        return None
    gamma, normalized = output.inputs[0].inputs
    if gamma.op != "param" or normalized.op != "div":
        return None
    centered, scale = normalized.inputs
    if centered.op != "sub" or centered.inputs[0] is not pre_activation or scale.op != "sqrt":
        return None
    return _BatchNorm(gamma, output.inputs[1], centered.inputs[1], scale, normalized, output)

