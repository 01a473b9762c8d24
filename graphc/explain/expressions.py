"""Per-example math read off graph nodes, printed as Unicode or LaTeX.

The graph is batch-major (a row per example: ``h @ W``); the course writes one
example as a column vector.  Reading a node turns the first into the second:
``matmul(h, W)`` is ``Wᵀh``, ``matmul(δ, transpose(W))`` is ``W δ``,
``matmul(transpose(h), δ)`` is ``Σₙ h δᵀ``, a sum over axis 0 is ``Σₙ``, and
elementwise products are ``⊙``.  Reshapes and broadcasts only move values
between those two layouts, so they read as their operand.  Sums and scalings
are collected into linear combinations with coefficients ``c/Nᵏ`` (N the batch
size), which is what makes ``x + x`` read ``2x`` and ``(1/N)t·(−1) + (1/N)v``
read ``(1/N)(v − t)``.  A node with no reading here prints as its op applied
to its operands, so nothing is ever hidden.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Mapping, Optional, Union

from graphc.ir.node import Node

# ------------------------------------------------------------------ expressions


@dataclass(frozen=True)
class Sym:
    """A named quantity: ``text`` in Unicode, ``tex`` in LaTeX, with an optional layer superscript."""

    text: str
    tex: str
    layer: Optional[int] = None


@dataclass(frozen=True)
class Num:
    value: Fraction


@dataclass(frozen=True)
class Coef:
    """A coefficient value·Nᵏ (N: the batch size; k is ``per_n``, usually 0 or −1)."""

    value: Fraction
    per_n: int = 0

    def __mul__(self, other: "Coef") -> "Coef":
        return Coef(self.value * other.value, self.per_n + other.per_n)

    def inverse(self) -> "Coef":
        return Coef(1 / self.value, -self.per_n)


@dataclass(frozen=True)
class Lin:
    """Σ cᵢ·eᵢ, terms in reading order."""

    terms: tuple[tuple[Coef, "Expr"], ...]


@dataclass(frozen=True)
class Had:
    """An elementwise product a ⊙ b ⊙ ..."""

    factors: tuple["Expr", ...]


@dataclass(frozen=True)
class MatVec:
    """W e (or Wᵀ e) for one example e."""

    matrix: "Expr"
    transposed: bool
    vector: "Expr"


@dataclass(frozen=True)
class Outer:
    """u vᵀ."""

    left: "Expr"
    right: "Expr"


@dataclass(frozen=True)
class Total:
    """Σₙ e (over the batch) or Σₖ e (over an example's features)."""

    index: str
    body: "Expr"


@dataclass(frozen=True)
class Call:
    """f(args): an elementwise function, or an op with no reading of its own."""

    name: str
    args: tuple["Expr", ...]


@dataclass(frozen=True)
class Quotient:
    numerator: "Expr"
    denominator: "Expr"


@dataclass(frozen=True)
class Square:
    body: "Expr"


@dataclass(frozen=True)
class Power:
    """body^exponent, for exponents other than 2 (batch norm's (σ² + ϵ)^(−3/2))."""

    body: "Expr"
    exponent: Fraction


@dataclass(frozen=True)
class Norm:
    """‖e‖²: the sum of the squares of every element (a weight-decay term)."""

    body: "Expr"


@dataclass(frozen=True)
class Indicator:
    """𝟙[left relation right]."""

    left: "Expr"
    relation: str
    right: "Expr"


Expr = Union[Sym, Num, Lin, Had, MatVec, Outer, Total, Call, Quotient, Square, Power, Norm, Indicator]
ONE = Num(Fraction(1))

# ------------------------------------------------------------------ reading nodes

_LAYOUT_OPS = ("reshape", "broadcast_to", "stop_gradient", "cast")
_RELATIONS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}


class Reader:
    """Reads nodes as expressions; ``symbols`` names the nodes that print as a symbol."""

    def __init__(self, symbols: Mapping[Node, Expr], softmaxes: Mapping[Node, Expr] = {}):
        self.symbols = dict(symbols)
        self.softmaxes = dict(softmaxes)  # logits → the symbol of their softmax (the course's v)

    def softmax_of(self, logits: Node) -> Expr:
        return self.softmaxes.get(logits) or Call("softmax", (self.read(logits),))

    def read(self, node: Node) -> Expr:
        if node in self.symbols:
            return self.symbols[node]
        coef = self.coefficient(node)
        if coef is not None:
            return _number_or_lin(coef)
        logits = log_softmax_input(node)
        if logits is not None:
            return Call("log", (self.softmax_of(logits),))
        if node.op in ("add", "sub", "neg", "mul", "div"):
            terms = self.linear(node)
            if terms is not None:
                return _simplify(terms)
        reading = _READINGS.get(node.op)
        if reading is not None:
            found = reading(self, node)
            if found is not None:
                return found
        return Call(node.op, tuple(self.read(i) for i in node.inputs))

    def coefficient(self, node: Node) -> Optional[Coef]:
        """The node as a constant c/Nᵏ, if it is one."""
        if node in self.symbols:
            return None
        if node.op == "constant" and node.attrs["value"].array.size == 1:
            return Coef(Fraction(float(node.attrs["value"].array.reshape(()))).limit_denominator(10**6))
        if node.op == "numel" and node.attrs.get("axes") == (0,):
            return Coef(Fraction(1), 1)
        if node.op in _LAYOUT_OPS:
            return self.coefficient(node.inputs[0])
        if node.op in ("mul", "div"):
            a, b = (self.coefficient(i) for i in node.inputs)
            if a is not None and b is not None:
                return a * (b if node.op == "mul" else b.inverse())
        return None

    def linear(self, node: Node) -> Optional[list[tuple[Coef, Expr]]]:
        """The node as Σ cᵢ·eᵢ, when its top is a sum, difference or scaling."""
        if node in self.symbols:
            return None
        if node.op in ("add", "sub"):
            a, b = (self.terms(i) for i in node.inputs)
            return a + (b if node.op == "add" else _scaled(b, Coef(Fraction(-1))))
        if node.op == "neg":
            return _scaled(self.terms(node.inputs[0]), Coef(Fraction(-1)))
        if node.op in ("mul", "div"):
            left, right = node.inputs
            scale = self.coefficient(right)
            if scale is not None:
                return _scaled(self.terms(left), scale if node.op == "mul" else scale.inverse())
            if node.op == "div":
                return self._quotient(left, right)
            scale = self.coefficient(left)
            if scale is not None and node.op == "mul":
                return _scaled(self.terms(right), scale)
            for share, exps in ((left, right), (right, left)):
                logits = softmax_input(share, exps)
                if logits is not None:  # (c / Σₖ e) ⊙ e with e = exp(a − max a): c·softmax(a)
                    return [(self.coefficient(share.inputs[0]), self.softmax_of(logits))]
        return None

    def _quotient(self, numerator: Node, denominator: Node) -> Optional[list[tuple[Coef, Expr]]]:
        """c·e / (d·f) as (c/d)·(e/f), when numerator and denominator are single scaled terms."""
        top, bottom = self.terms(numerator), self.terms(denominator)
        if len(top) != 1 or len(bottom) != 1 or bottom[0][1] == ONE:
            return None
        (c, e), (d, f) = top[0], bottom[0]
        if c == Coef(Fraction(1)) and d == Coef(Fraction(1)):
            return None
        return [(c * d.inverse(), Quotient(e, f))]

    def terms(self, node: Node) -> list[tuple[Coef, Expr]]:
        coef = self.coefficient(node)
        if coef is not None:
            return [(coef, ONE)]
        found = self.linear(node)
        if found is not None:
            return found
        expr = self.read(node)
        return list(expr.terms) if isinstance(expr, Lin) else [(Coef(Fraction(1)), expr)]


def _shifted_exp_input(exps: Node) -> Optional[Node]:
    """a, when ``exps`` is exp(a − m): the exponentials softmax and log-softmax are built from."""
    if exps.op == "exp" and exps.inputs[0].op == "sub":
        return exps.inputs[0].inputs[0]
    return None


def _is_row_total(total: Node, exps: Node) -> bool:
    return total.op == "sum" and total.inputs[0] is exps and total.attrs["keepdims"] \
        and total.attrs["axes"] in ((exps.ndim - 1,), (-1,))


def softmax_input(share: Node, exps: Node) -> Optional[Node]:
    """a, when ``share`` is c / Σₖ exps and ``exps`` is exp(a − m) (c a constant)."""
    if share.op != "div" or not _is_row_total(share.inputs[1], exps):
        return None
    return _shifted_exp_input(exps)


def log_softmax_input(node: Node) -> Optional[Node]:
    """a, when ``node`` is a − (log Σₖ exp(a − m) + m): log-softmax as the stabilizer writes it."""
    if node.op != "sub" or node.inputs[1].op != "add":
        return None
    a, (log_total, shift) = node.inputs[0], node.inputs[1].inputs
    if log_total.op != "log" or log_total.inputs[0].op != "sum":
        return None
    exps = log_total.inputs[0].inputs[0]
    if not _is_row_total(log_total.inputs[0], exps) or _shifted_exp_input(exps) is not a \
            or exps.inputs[0].inputs[1] is not shift:
        return None
    return a


def _scaled(terms: list[tuple[Coef, Expr]], by: Coef) -> list[tuple[Coef, Expr]]:
    return [(c * by, e) for c, e in terms]


def _number_or_lin(coef: Coef) -> Expr:
    return Num(coef.value) if coef.per_n == 0 else Lin(((coef, ONE),))


def _simplify(terms: list[tuple[Coef, Expr]]) -> Expr:
    """Merge equal terms (x + x = 2x), drop zeros; a single unscaled term is itself."""
    merged: dict[tuple[Expr, int], Fraction] = {}
    for coef, expr in terms:
        merged[(expr, coef.per_n)] = merged.get((expr, coef.per_n), Fraction(0)) + coef.value
    kept = tuple((Coef(v, n), e) for (e, n), v in merged.items() if v != 0)
    if len(kept) == 1 and kept[0][0] == Coef(Fraction(1)):
        return kept[0][1]
    return Lin(kept) if kept else Num(Fraction(0))


def _mul(reader: Reader, node: Node) -> Expr:
    """a ⊙ b, with the factors' scalar coefficients gathered in front: (c a) ⊙ b = c (a ⊙ b)."""
    a, b = node.inputs
    if a is b:
        return Square(reader.read(a))
    scale, factors = Coef(Fraction(1)), []
    for factor in (reader.read(a), reader.read(b)):
        if isinstance(factor, Lin) and len(factor.terms) == 1:
            (coef, factor), = factor.terms
            scale = scale * coef
        factors.append(factor)
    product = _product(*factors)
    return product if scale == Coef(Fraction(1)) else Lin(((scale, product),))


def _product(*factors: Expr) -> Expr:
    flat: list[Expr] = []
    for factor in factors:
        flat.extend(factor.factors if isinstance(factor, Had) else (factor,))
    kept = tuple(f for f in flat if f != ONE)
    return kept[0] if len(kept) == 1 else Had(kept) if kept else ONE


def _div(reader: Reader, node: Node) -> Expr:
    return Quotient(reader.read(node.inputs[0]), reader.read(node.inputs[1]))


def _matmul(reader: Reader, node: Node) -> Expr:
    left, right = node.inputs
    if left.op == "transpose" and left.ndim == 2:
        return Total("n", Outer(reader.read(left.inputs[0]), reader.read(right)))
    if right.op == "transpose" and right.ndim == 2:
        return MatVec(reader.read(right.inputs[0]), False, reader.read(left))
    return MatVec(reader.read(right), True, reader.read(left))


def _sum(reader: Reader, node: Node) -> Optional[Expr]:
    x = node.inputs[0]
    axes = node.attrs["axes"]
    if x.op == "mul" and x.inputs[0] is x.inputs[1] and tuple(axes) == tuple(range(x.ndim)) and x.ndim >= 2:
        return Norm(reader.read(x.inputs[0]))  # Σ of every squared element of a matrix: ‖W‖²
    if axes == (0,) or (x.ndim == 1 and axes in ((0,), (-1,))):
        index = "n"
    elif x.ndim == 2 and axes in ((1,), (-1,)) and not node.attrs["keepdims"]:
        index = "k"
    else:
        return None
    body = reader.read(x)
    if isinstance(body, Lin) and len(body.terms) == 1:  # Σ (c e) = c Σ e
        (coef, inner), = body.terms
        return Lin(((coef, Total(index, inner)),))
    return Total(index, body)


def _where(reader: Reader, node: Node) -> Optional[Expr]:
    condition, then, otherwise = node.inputs
    if reader.coefficient(otherwise) == Coef(Fraction(0)):
        return _product(reader.read(condition), reader.read(then))
    return None


def _compare(reader: Reader, node: Node) -> Expr:
    return Indicator(reader.read(node.inputs[0]), _RELATIONS[node.op], reader.read(node.inputs[1]))


def _layout(reader: Reader, node: Node) -> Expr:
    return reader.read(node.inputs[0])


_READINGS: dict[str, Callable[[Reader, Node], Optional[Expr]]] = {
    "mul": _mul, "div": _div, "matmul": _matmul, "sum": _sum, "where": _where,
    **{op: _compare for op in _RELATIONS}, **{op: _layout for op in _LAYOUT_OPS},
}


# ------------------------------------------------------------------ printing

_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
_TEX_FUNCTIONS = {"tanh": r"\tanh", "exp": r"\exp", "log": r"\log", "sqrt": r"\sqrt"}
# Binding strength: a child binding less tightly than its context is parenthesized.
_SUM, _PRODUCT, _APPLY, _ATOM = 1, 2, 3, 4


class Printer:
    """Unicode (``tex=False``) or LaTeX (``tex=True``) text of expressions."""

    def __init__(self, tex: bool):
        self.tex = tex

    def __call__(self, expr: Expr) -> str:
        return self.text(expr)[0]

    def wrapped(self, expr: Expr, context: int) -> str:
        text, strength = self.text(expr)
        if strength >= context:
            return text
        return rf"\left({text}\right)" if self.tex else f"({text})"

    def text(self, expr: Expr) -> tuple[str, int]:
        """The expression's text and how tightly it binds."""
        if isinstance(expr, Sym):
            return self.symbol(expr), _ATOM
        if isinstance(expr, Num):
            return self.number(expr.value), _ATOM if expr.value >= 0 else _SUM
        if isinstance(expr, Lin):
            (coef, body), *rest = expr.terms
            # c/Nᵏ alone prints in parentheses already: "(1/N)"
            alone = not rest and body == ONE and coef.value > 0 and coef.per_n < 0
            return self.linear(expr), _ATOM if alone else _SUM
        if isinstance(expr, Had):
            joint = r" \odot " if self.tex else " ⊙ "
            return joint.join(self.wrapped(f, _APPLY) for f in expr.factors), _PRODUCT
        if isinstance(expr, MatVec):
            matrix = self.transposed(expr.matrix) if expr.transposed else self.wrapped(expr.matrix, _ATOM)
            return f"{matrix} {self.wrapped(expr.vector, _APPLY)}", _APPLY
        if isinstance(expr, Outer):
            return f"{self.wrapped(expr.left, _ATOM)} {self.transposed(expr.right)}", _APPLY
        if isinstance(expr, Total):
            sign = rf"\sum_{{{expr.index}}} " if self.tex else "Σ" + {"n": "ₙ", "k": "ₖ"}[expr.index] + " "
            return sign + self.wrapped(expr.body, _PRODUCT), _PRODUCT
        if isinstance(expr, Call):
            return self.call(expr), _ATOM
        if isinstance(expr, Quotient):
            if self.tex:
                return rf"\frac{{{self(expr.numerator)}}}{{{self(expr.denominator)}}}", _ATOM
            return f"{self.wrapped(expr.numerator, _APPLY)} / {self.wrapped(expr.denominator, _ATOM)}", _PRODUCT
        if isinstance(expr, Square):
            # z⁽¹⁾² would read oddly: a layer's symbol is parenthesized first.
            layered = isinstance(expr.body, Sym) and expr.body.layer is not None
            return self.wrapped(expr.body, _ATOM + layered) + ("^2" if self.tex else "²"), _ATOM
        if isinstance(expr, Power):
            exponent = self.number(expr.exponent)
            if self.tex:
                return rf"{self.wrapped(expr.body, _ATOM + 1)}^{{{exponent}}}", _ATOM
            return f"{self.wrapped(expr.body, _ATOM + 1)}^({exponent.replace('-', '−')})", _ATOM
        if isinstance(expr, Norm):
            inner = self(expr.body)
            return (rf"\lVert {inner} \rVert^2" if self.tex else f"‖{inner}‖²"), _ATOM
        if isinstance(expr, Indicator):
            inside = f"{self(expr.left)} {self.relation(expr.relation)} {self(expr.right)}"
            return (rf"\mathbb{{1}}[{inside}]" if self.tex else f"𝟙[{inside}]"), _ATOM
        raise TypeError(f"not an expression: {expr!r}")

    def symbol(self, sym: Sym) -> str:
        """A layer's symbol carries its number as a superscript in parentheses, a⁽²⁾, which
        cannot be read as a power (σ²⁽¹⁾ is layer 1's variance)."""
        if sym.layer is None:
            return sym.tex if self.tex else sym.text
        if self.tex:
            return f"{sym.tex}^{{({sym.layer})}}"
        return sym.text + "⁽" + str(sym.layer).translate(_SUPERSCRIPTS) + "⁾"

    def number(self, value: Fraction) -> str:
        if value.denominator == 1:
            return str(value.numerator)
        if self.tex:
            return rf"\frac{{{value.numerator}}}{{{value.denominator}}}"
        return f"{value.numerator}/{value.denominator}" if value.denominator < 1000 else f"{float(value):g}"

    def coefficient(self, coef: Coef) -> str:
        """A positive coefficient as written before a term ('' for 1)."""
        value = coef.value
        if coef.per_n == 0:
            return "" if value == 1 else self.number(value)
        power = "" if coef.per_n == -1 else (f"^{{{-coef.per_n}}}" if self.tex else
                                             str(-coef.per_n).translate(_SUPERSCRIPTS))
        if self.tex:
            if coef.per_n < 0:
                below = "" if value.denominator == 1 else str(value.denominator)
                return rf"\frac{{{value.numerator}}}{{{below}N{power}}}"
            top = self.number(value)
            return f"{top}N^{{{coef.per_n}}}"
        if coef.per_n < 0:
            below = "" if value.denominator == 1 else str(value.denominator)
            return f"({value.numerator}/{below}N{power})" if below else f"({value.numerator}/N{power})"
        return f"{self.number(value)}N{str(coef.per_n).translate(_SUPERSCRIPTS)}"

    def linear(self, lin: Lin) -> str:
        terms = sorted(lin.terms, key=lambda t: t[0].value < 0)  # a positive term first
        magnitudes = {(abs(c.value), c.per_n) for c, _ in terms}
        if len(terms) > 1 and len(magnitudes) == 1:
            (value, per_n), = magnitudes
            common = Coef(value, per_n)
            if common != Coef(Fraction(1)):
                unit = Lin(tuple((Coef(c.value / value), e) for c, e in terms))
                inner = self.linear(unit)
                parens = (rf"\left({inner}\right)" if self.tex else f"({inner})")
                return self.coefficient(common) + parens
        parts = []
        for i, (coef, expr) in enumerate(terms):
            sign = "-" if coef.value < 0 else "+"
            if self.tex is False and sign == "-":
                sign = "−"
            magnitude = Coef(abs(coef.value), coef.per_n)
            factor = self.coefficient(magnitude)
            body = ("" if factor else self.number(Fraction(1))) if expr == ONE else self.wrapped(expr, _PRODUCT)
            term = f"{factor}{' ' if factor and body else ''}{body}"
            parts.append(term if i == 0 and sign == "+" else f"{sign} {term}" if i else f"{sign}{term}")
        return " ".join(parts)

    def call(self, call: Call) -> str:
        args = ", ".join(self(a) for a in call.args)
        if self.tex:
            base, prime = (call.name[:-1], "'") if call.name.endswith("′") else (call.name, "")
            name = _TEX_FUNCTIONS.get(base, rf"\operatorname{{{base}}}") + prime
            return rf"{name}\left({args}\right)" if call.name != "sqrt" else rf"\sqrt{{{args}}}"
        return f"{'√' if call.name == 'sqrt' else call.name}({args})"

    def transposed(self, expr: Expr) -> str:
        """eᵀ; in LaTeX a layer's symbol takes the mark into its superscript (W^{1\top})."""
        if not self.tex:
            return self.wrapped(expr, _ATOM) + "ᵀ"
        if isinstance(expr, Sym) and expr.layer is not None:
            return f"{expr.tex}^{{({expr.layer})\\top}}"
        return self.wrapped(expr, _ATOM) + r"^\top"

    def relation(self, relation: str) -> str:
        return {"≥": r"\geq", "≤": r"\leq"}.get(relation, relation) if self.tex else relation
