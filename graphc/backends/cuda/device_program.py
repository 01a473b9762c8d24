"""The CUDA program as data: device memory regions, and the steps of one train step.

The code generator writes this; the GPU runtime and the CPU emulator both
execute it.  Keeping the program as plain data (kernels, launches, cuBLAS GEMM
calls, copies) is what lets the emulator check the GPU program's semantics on
a machine without a GPU: the emulator interprets exactly the launches, GEMM
flags and copies the GPU would run, only the kernels are compiled for the host.

Sizes may involve the batch's symbolic dimensions; they are :class:`Size`
products, resolved when a step is bound for one batch size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

import numpy as np

from graphc.ir.node import Node
from graphc.ir.shapes import Shape

ITEM_BYTES = {"float32": 4, "float64": 8, "int32": 4, "int64": 8, "bool": 1, "uint64": 8}


@dataclass(frozen=True)
class Size:
    """A product of a constant and symbolic dimensions, such as 256·N."""
    const: int = 1
    symbols: tuple[str, ...] = ()

    @staticmethod
    def of(dims: Sequence[Union[int, str]]) -> "Size":
        const, symbols = 1, []
        for d in dims:
            if isinstance(d, str):
                symbols.append(d)
            else:
                const *= int(d)
        return Size(const, tuple(sorted(symbols)))

    def __mul__(self, other: "Size") -> "Size":
        return Size(self.const * other.const, tuple(sorted(self.symbols + other.symbols)))

    def resolve(self, symbols: Mapping[str, int]) -> int:
        value = self.const
        for s in self.symbols:
            value *= symbols[s]
        return value

    @property
    def static(self) -> bool:
        return not self.symbols

    def c(self) -> str:
        """The size as a C expression over the kernel's symbol parameters."""
        factors = [symbol_param(s) for s in self.symbols] + ([str(self.const)] if self.const != 1 or not self.symbols else [])
        return factors[0] if len(factors) == 1 else "(" + " * ".join(factors) + ")"

    def __str__(self) -> str:
        factors = list(self.symbols) + ([str(self.const)] if self.const != 1 or not self.symbols else [])
        return "·".join(factors)


def symbol_param(symbol: str) -> str:
    """The kernel parameter carrying a symbolic size (symbols need not be C identifiers)."""
    return "s_" + "".join(ch if ch.isalnum() else "_" for ch in symbol)


def row_major_strides(shape: Shape) -> tuple[Size, ...]:
    strides, step = [], Size()
    for d in reversed(shape):
        strides.append(step)
        step = step * Size.of([d])
    return tuple(reversed(strides))


@dataclass(frozen=True)
class Region:
    """One block of device memory.  ``kind`` says who fills it: ``variable`` and ``arena`` hold the
    store's values, ``input`` the fed batch, ``constant`` and ``ones`` are written once at bind, ``rng``
    holds the random generator's step counter, ``buffer`` and ``scratch`` are the step's own."""
    name: str
    size: Size
    dtype: str
    kind: str


@dataclass(frozen=True)
class View:
    """Where an operand's elements are: a region, an element offset, a shape and element strides."""
    region: str
    offset: int
    shape: Shape
    strides: tuple[Size, ...]
    dtype: str

    @property
    def contiguous(self) -> bool:
        return all(s == r for s, r, d in zip(self.strides, row_major_strides(self.shape), self.shape) if d != 1)

    def text(self) -> str:
        where = self.region + (f"+{self.offset}" if self.offset else "")
        shape = ",".join(str(d) for d in self.shape)
        return f"{where}[{shape}]" + ("" if self.contiguous else "(strided)")


@dataclass(frozen=True)
class Symbol:
    """A kernel argument that is a symbolic size."""
    name: str


Argument = Union[View, Symbol, Size]  # a pointer, a symbol's value, or a total element count


@dataclass(frozen=True)
class Launch:
    kernel: str
    threads: Size                 # how many elements the grid-stride loop covers
    args: tuple[Argument, ...]
    nodes: tuple[Node, ...]       # the IR nodes this launch computes
    note: str = ""


@dataclass(frozen=True)
class Gemm:
    """A column-major cuBLAS GEMM: c = op(a) · op(b), m×n, inner size k (row-major products map to it
    with the operands swapped, so transposes become the op flags)."""
    trans_a: bool
    trans_b: bool
    m: Size
    n: Size
    k: Size
    a: View
    lda: Size
    b: View
    ldb: Size
    c: View
    ldc: Size
    dtype: str
    nodes: tuple[Node, ...]
    note: str = ""


@dataclass(frozen=True)
class GemmSizes:
    """A GEMM's sizes for one batch size, as cuBLAS takes them: each leading dimension at least 1
    (cuBLAS refuses 0 even where a matrix has no rows, as in a batch of none)."""
    m: int
    n: int
    k: int
    lda: int
    ldb: int
    ldc: int

    @classmethod
    def of(cls, step: Gemm, symbols: Mapping[str, int]) -> "GemmSizes":
        m, n, k, lda, ldb, ldc = (s.resolve(symbols) for s in (step.m, step.n, step.k, step.lda, step.ldb, step.ldc))
        return cls(m, n, k, max(lda, 1), max(ldb, 1), max(ldc, 1))

    @property
    def empty(self) -> bool:
        """No output element: nothing to compute (an empty inner size still zeroes the output)."""
        return self.m == 0 or self.n == 0


@dataclass(frozen=True)
class Copy:
    """A device-to-device copy of ``count`` contiguous elements."""
    dst: View
    src: View
    count: Size
    nodes: tuple[Node, ...]
    note: str = ""


Step = Union[Launch, Gemm, Copy]


@dataclass
class DeviceProgram:
    name: str
    regions: dict[str, Region]
    steps: list[Step]
    kernels: list[str]                                  # CUDA source of each kernel
    kernel_names: list[str]
    inputs: list[tuple[Node, str]]                      # fed leaf → its region
    variables: list[tuple[Node, View]]                  # every variable and where it lives
    arenas: list[str]                                   # the store's arenas, by region
    outputs: list[tuple[str, View]]                     # what the step returns
    written: list[str] = field(default_factory=list)   # variable regions the step changes
    constants: dict[str, np.ndarray] = field(default_factory=dict)  # region → value written at bind
    ones: dict[str, Size] = field(default_factory=dict)            # region of ones → its length
    rng: str = ""                                       # the counter region, if random ops occur
    labels: list[tuple[str, int, str]] = field(default_factory=list)  # (fed input, depth, user's line) of one_hot
