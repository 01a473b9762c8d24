"""What the runtime asks of generated code: the interface every backend's output implements.

The runtime owns it, so the runtime never imports a backend: a backend imports
this module and returns an :class:`Executable`; :class:`~graphc.runtime.step.Step`
binds it to a variable store and calls it.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import numpy as np

from graphc.ir.node import Node

StepFunction = Callable[..., tuple]


class Executable(Protocol):
    """Generated code for one program, not yet bound to variables or a batch size."""

    source: str             # what ``show("source")`` prints: the host-side step
    kernels: str            # the kernel source, if the backend generates any
    inputs: list[Node]      # the fed leaves, in the order the step takes them
    variables: list[Node]   # the variables, in the order ``bind`` takes them

    def bind(self, variables: Sequence[np.ndarray], arenas: Sequence[np.ndarray], symbols: dict[str, int],
             store: Any) -> StepFunction:
        """The step function for one set of symbol sizes.  ``variables`` and ``arenas`` are the
        store's host arrays.  A CPU step writes its updates into them; a device step may keep its
        updates on the device and mark itself ``store.ahead``, and the store fetches them when read."""
        ...
