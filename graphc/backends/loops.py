"""The loops of fused groups, written once for every C-like target: the C loops and the CUDA kernels.

A fused elementwise group is a loop over elements and a group of row values
(see :mod:`graphc.backends.row_groups`) a loop over rows; what a loop computes
(its locals, reductions, one-hot rows, stores and column sums) is the same on
every target, so a fix to NaN or one-hot handling is made here, once (the CUDA
backend's reductions and one-hots outside groups take the same rules:
:func:`accumulation`, :func:`one_hot_value`).  A target
(a :class:`Target`) says only what differs: how an operand is indexed, whether
the outer loop is nested loops over the dimensions (C) or one flat index per
thread inside a grid-stride loop (CUDA), the type of indices and the comment
syntax.  The per-op expressions come from :mod:`graphc.lowering.c_expressions`.
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import Callable, Optional, Sequence

from graphc.lowering.c_expressions import C_TYPES, expression
from graphc.backends import row_groups
from graphc.ir.node import Node
from graphc.ir.shapes import Shape

INDENT = "    "


class At(enum.Enum):
    """Where a loop reads or writes an operand."""
    ELEMENT = "element"  # at the element of an elementwise loop
    ROW = "row"          # at the row of a row loop, outside a loop over its columns
    COLUMN = "column"    # at column c of the row, inside a loop over the columns


class Target(ABC):
    """What one target says about a loop; the generator says the rest."""
    index_type: str   # the C type of loop indices
    flat: bool        # one flat index i per iteration (a thread; the loop itself is the caller's), else nested loops
    numpy_order: bool  # row sums and maxima through the prelude's helpers in NumPy's pairwise order,
    # else accumulated column by column (a float sum in double)
    axes: set[int]    # for a flat target: the loop axes its reads and writes so far index by

    @abstractmethod
    def read(self, node: Node, shape: Shape, at: At) -> str:
        """``node``'s value (an operand that is not a member of the loop) at ``at`` in a loop over ``shape``."""

    @abstractmethod
    def write(self, node: Node, shape: Shape, at: At) -> str:
        """The element of output ``node`` at ``at`` in a loop over ``shape``, to assign to."""

    @abstractmethod
    def pointer(self, node: Node) -> str:
        """The first element of output ``node``, indexable from 0 (a column sum's)."""

    @abstractmethod
    def extent(self, dims: Sequence) -> Optional[str]:
        """The product of ``dims`` as an expression; None when it is 1."""

    @abstractmethod
    def comment(self, node: Node) -> str:
        """The comment naming the IR a member's line computes, leading spaces included."""

    def column_indices(self, columns: int, statement: str) -> str:
        """Declarations ``statement`` needs at the start of each column iteration (none by default)."""
        return ""

    def accumulates(self, node: Node) -> bool:
        """Is member ``node`` a column sum, zeroed before the loop and added to one row at a time?"""
        return False


def function(head: str, body: Sequence[str]) -> str:
    """A kernel function: its signature (qualifiers included) and body."""
    return "\n".join([head + " {", *(INDENT + line for line in body), "}"])


def grid_stride(index_type: str, body: Sequence[str]) -> list[str]:
    """``body`` once for each i in [0, n), spread over the launch's threads."""
    t = index_type
    return [f"const {t} stride = ({t})blockDim.x * gridDim.x;",
            f"for ({t} i = ({t})blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {{",
            *(INDENT + line for line in body), "}"]


def counted(index_type: str, index: str, count: str, body: Sequence[str]) -> list[str]:
    """``body`` once for each ``index`` from 0 to ``count`` - 1."""
    return [f"for ({index_type} {index} = 0; {index} < {count}; {index}++) {{", *(INDENT + line for line in body), "}"]


def store(place: str, value: str) -> str:
    """The statement writing ``value`` to ``place``, an element of an output."""
    return f"{place} = {value};"


def axis_indices(index_type: str, extent: Callable[[Sequence], Optional[str]], shape: Shape, used: set[int],
                 flat: str = "i") -> list[str]:
    """Lines defining ``{flat}{a}`` for each axis a in ``used``, from the flat row-major index
    (``extent`` writes a product of dimensions, None when it is 1)."""
    lines = []
    for a in sorted(used):
        inner = extent(shape[a + 1:])
        divided = flat if inner is None else f"({flat} / {inner})"
        bound = f" % {extent([shape[a]]) or 1}" if a > 0 else ""
        lines.append(f"const {index_type} {flat}{a} = {divided}{bound};")
    return lines


def _nested(target: Target, shape: Shape, body: Sequence[str]) -> list[str]:
    """``body`` in loops over each axis a of ``shape`` with index i{a}, to extent d[a]."""
    lines, indent = [], ""
    for axis in range(len(shape)):
        if axis == len(shape) - 1:
            # Outputs alias inputs only element for element (the memory plan's in-place
            # rule), so iterations are independent: let the compiler vectorize freely.
            lines.append(f"{indent}#pragma GCC ivdep")
        lines.append(f"{indent}for ({target.index_type} i{axis} = 0; i{axis} < d[{axis}]; i{axis}++) {{")
        indent += INDENT
    lines += [indent + b for b in body]
    for _ in shape:
        indent = indent[:-len(INDENT)]
        lines.append(f"{indent}}}")
    return lines


def _zeroed(target: Target, column_sum: Node, size: str) -> str:
    """The loop that zeroes a column sum of ``size`` values before rows are added to it."""
    return f"for ({target.index_type} j = 0; j < {size}; j++) {target.pointer(column_sum)}[j] = 0;"


def _value(node: Node, var: str, operands: Sequence[str], target: Target) -> str:
    return f"const {C_TYPES[node.dtype]} {var} = {expression(node, operands)};{target.comment(node)}"


def elementwise(target: Target, members: Sequence[Node], inputs: Sequence[Node], outputs: Sequence[Node],
                shape: Shape) -> tuple[list[str], list[str]]:
    """An elementwise group over ``shape``: the lines before the loop (zeroing column sums), and the
    loop (for a flat target, the body run at flat index i)."""
    before: list[str] = []
    local = {node: target.read(node, shape, At.ELEMENT) for node in inputs}
    body: list[str] = []
    for j, node in enumerate(members):
        if target.accumulates(node):  # one row added per i0, as NumPy adds them
            before.append(_zeroed(target, node, " * ".join(f"d[{k}]" for k in range(1, len(shape)))))
            body.append(f"{target.write(node, shape, At.ELEMENT)} += {local[node.inputs[0]]};{target.comment(node)}")
            continue
        body.append(_value(node, f"v{j}", [local[i] for i in node.inputs], target))
        local[node] = f"v{j}"
    for node in outputs:
        if not target.accumulates(node):
            body.append(store(target.write(node, shape, At.ELEMENT), local[node]))
    if target.flat:
        return before, axis_indices(target.index_type, target.extent, shape, target.axes) + body
    return before, _nested(target, shape, body)


def accumulator(op: str, dtype: str) -> str:
    """The C type a sum or max of ``dtype`` values accumulates in: float sums in double, integer sums
    in int64, a max in the values' own type."""
    if op == "sum":
        return "double" if dtype in ("float32", "float64") else "int64_t"
    return C_TYPES[dtype]


def combination(op: str, a: str, b: str) -> str:
    """Two partial sums or maxima combined.  In a max NaN wins, as in NumPy (the sum of a NaN and
    anything is NaN)."""
    if op == "sum":
        return f"{a} + {b}"
    return f"({a} != {a} || {b} != {b}) ? ({a} + {b}) : ({b} > {a} ? {b} : {a})"


def accumulation(op: str, dtype: str, acc: str, value: str, index: str) -> tuple[str, str]:
    """A sum or max over a loop with index ``index`` from 0: the accumulator's declaration, and the
    statement that takes in ``value`` (see :func:`accumulator` and :func:`combination`)."""
    wide = accumulator(op, dtype)
    if op == "sum":
        return f"{wide} {acc} = 0;", f"{acc} += ({wide}){value};"
    return f"{wide} {acc} = 0;", f"const {wide} x = {value}; {acc} = ({index} == 0) ? x : {combination(op, acc, 'x')};"


def one_hot_value(dtype: str, label: str, column: str) -> str:
    """Column ``column`` of the one-hot row of ``label``."""
    return f"({C_TYPES[dtype]})({label} == {column})"


def columns(node: Node) -> int:
    """The columns of a row value: C of [R, C], 1 of [R, 1] and [R]."""
    return node.shape[1] if node.ndim == 2 else 1


class _Rows:
    """One row loop being written: wide members ([R, C], a local array of C values) and narrow ones
    ([R, 1] and [R], one local value)."""

    def __init__(self, target: Target):
        self.target = target
        self.wide: dict[Node, str] = {}
        self.narrow: dict[Node, str] = {}
        self.before: list[str] = []
        self.body: list[str] = []

    def each_column(self, count: int, statement: str) -> str:
        t = self.target.index_type
        return f"for ({t} c = 0; c < {count}; c++) {{ {self.target.column_indices(count, statement)}{statement} }}"

    def value(self, node: Node, shape: Shape, at: At) -> str:
        """``node`` as a member over ``shape`` reads it at ``at``.  A wide row of one column (a one-hot
        of one class) is broadcast along the consumer's columns: its only value."""
        if node in self.wide:
            return f"{self.wide[node]}[c]" if columns(node) > 1 and at == At.COLUMN else f"{self.wide[node]}[0]"
        return self.narrow.get(node) or self.target.read(node, shape, at)

    def member(self, j: int, node: Node) -> None:
        t, var, comment = C_TYPES[node.dtype], f"v{j}", self.target.comment(node)
        if self.target.accumulates(node):
            x = node.inputs[0]
            self.before.append(_zeroed(self.target, node, str(columns(x))))
            self.body.append(self.each_column(columns(x), f"{self.target.pointer(node)}[c] += "
                                                          f"{self.value(x, x.shape, At.COLUMN)};") + comment)
        elif row_groups.is_row_reduction(node):
            self.reduction(node, var, comment)
        elif node.op == "one_hot":
            labels = node.inputs[0]
            self.body.append(f"{t} {var}[{columns(node)}];{comment}")
            label = self.value(labels, labels.shape, At.ROW)
            self.body.append(self.each_column(columns(node), f"{var}[c] = {one_hot_value(node.dtype, label, 'c')};"))
            self.wide[node] = var
        elif columns(node) > 1:
            operands = [self.value(i, node.shape, At.COLUMN) for i in node.inputs]
            self.body.append(f"{t} {var}[{columns(node)}];{comment}")
            self.body.append(self.each_column(columns(node), f"{var}[c] = {expression(node, operands)};"))
            self.wide[node] = var
        else:
            self.body.append(_value(node, var, [self.value(i, node.shape, At.ROW) for i in node.inputs],
                                    self.target))
            self.narrow[node] = var

    def reduction(self, node: Node, var: str, comment: str) -> None:
        """A row's sum or max (NaN wins, as in NumPy: the sum of a NaN and anything is NaN)."""
        x, t, n = node.inputs[0], C_TYPES[node.dtype], columns(node.inputs[0])
        value = self.value(x, x.shape, At.COLUMN)
        if self.target.numpy_order:
            if x not in self.wide:  # gather the row the helper reads
                self.body.append(f"{t} {var}_row[{n}];")
                self.body.append(self.each_column(n, f"{var}_row[c] = {value};"))
            row = self.wide.get(x, f"{var}_row")
            suffix = "f" if node.dtype == "float32" else "d"
            self.body.append(f"const {t} {var} = row_{node.op}_{suffix}({row}, {n});{comment}")
        else:
            declare, update = accumulation(node.op, node.dtype, f"{var}_acc", value, "c")
            self.body.append(declare + comment)
            self.body.append(self.each_column(n, update))
            self.body.append(f"const {t} {var} = ({t}){var}_acc;")
        self.narrow[node] = var

    def store(self, node: Node) -> None:
        if node in self.wide:
            place = self.target.write(node, node.shape, At.COLUMN)
            self.body.append(self.each_column(columns(node), store(place, f"{self.wide[node]}[c]")))
        elif not self.target.accumulates(node):
            self.body.append(store(self.target.write(node, node.shape, At.ROW), self.narrow[node]))


def rows(target: Target, members: Sequence[Node], outputs: Sequence[Node]) -> tuple[list[str], list[str]]:
    """A group of row values as a loop over rows r < d[0] (for a flat target, the body run for row i).

    A row's outputs are stored after all its values are computed, so they may overwrite the row's
    operands in place; column sums are zeroed before the loop and add one row per iteration."""
    loop = _Rows(target)
    for j, node in enumerate(members):
        loop.member(j, node)
    for node in outputs:
        loop.store(node)
    if target.flat:
        rows_shape = (members[0].shape[0],)
        return loop.before, axis_indices(target.index_type, target.extent, rows_shape, target.axes) + loop.body
    return loop.before, counted(target.index_type, "r", "d[0]", loop.body)
