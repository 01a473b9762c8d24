"""Memory checked before anything is allocated.

A model with a mistyped layer width (``Dense(1_000_000)`` after a
million-wide input) would otherwise start allocating gigabytes and end in a
``MemoryError`` traceback, or in the kernel's out-of-memory killer.  The sizes
of every variable and of the memory plan's buffers are known from shapes alone
once a step is compiled, so they are added up and compared with the memory the
operating system says is available, and a run that cannot fit is refused in
one line that names the largest variable.  The count leaves out NumPy's
temporaries and the data set itself, so it is a floor, not an exact figure.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from graphc.errors import GraphcError
from graphc.ir.node import Node
from graphc.ir.shapes import fmt, is_static
from graphc.passes.cost import estimate
from graphc.runtime.step import Step


class MemoryCheckError(GraphcError, MemoryError):
    """A model whose variables and buffers need more memory than the machine has available."""


@dataclass(frozen=True)
class MemoryNeed:
    variable_bytes: int
    buffer_bytes: int
    largest: Optional[Node]  # the largest parameter (else variable): what a user most likely mistyped

    @property
    def total(self) -> int:
        return self.variable_bytes + self.buffer_bytes


def need(steps: Sequence[tuple[Step, int]]) -> MemoryNeed:
    """The bytes of every variable the steps use (each counted once, by name) and of each
    step's planned buffers at its batch size (the steps run one at a time, so the larger counts)."""
    variables: dict[str, Node] = {}
    for step, _ in steps:
        for var in step.program.variables():
            if is_static(var.shape):
                variables.setdefault(var.name, var)
    sizes = {var: _bytes(var) for var in variables.values()}
    # Optimizer state mirrors the parameters (Adam's moments are one arena as large as all of
    # them), so the parameter the user declared is the one worth naming.
    largest = max(sizes, key=lambda var: (var.op == "param", sizes[var]), default=None)
    buffers = max((estimate(step.plan, batch).buffer_bytes for step, batch in steps), default=0)
    return MemoryNeed(sum(sizes.values()), buffers, largest)


def _bytes(var: Node) -> int:
    return math.prod(int(d) for d in var.shape) * np.dtype(var.dtype).itemsize


def available_bytes() -> Optional[int]:
    """What the operating system could give this process now (Linux's MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_fits(steps: Sequence[tuple[Step, int]]) -> MemoryNeed:
    """Raise :class:`MemoryCheckError` when the steps cannot fit in available memory."""
    needed = need(steps)
    available = available_bytes()
    if available is not None and needed.total > available:
        largest = needed.largest
        culprit = (f"; the largest is {largest.op} '{largest.name}' "
                   f"{largest.dtype}{fmt(largest.shape)} ({_human(_bytes(largest))})" if largest is not None else "")
        raise MemoryCheckError(
            f"the model needs {_human(needed.total)} ({_human(needed.variable_bytes)} of variables, "
            f"{_human(needed.buffer_bytes)} of buffers) but only {_human(available)} of memory is available"
            f"{culprit}; make the layers or the batch smaller")
    return needed


def _human(count: float) -> str:
    units = ("B", "KB", "MB", "GB", "TB")
    power = min(int(math.log10(max(count, 1)) // 3), len(units) - 1)
    return f"{count / 1000 ** power:.1f} {units[power]}"
