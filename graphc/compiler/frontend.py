"""``gc.compile``: from user graph to a callable step.

This module builds the program (for training: gradients, the optimizer's
update, state updates, see :mod:`graphc.compiler.train_step`) and hands it to
:mod:`graphc.compiler.pipeline`, which runs every later stage in order.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

from graphc import backends
from graphc.compiler import pipeline
from graphc.errors import FeedError, GraphcError
from graphc.ir.node import Node
from graphc.optim.base import Optimizer
from graphc.compiler.train_step import training_program
from graphc.ir.program import Program, check_unique_names
from graphc.runtime import numerics
from graphc.compiler.compiled_step import CompiledStep
from graphc.runtime.step import Structure
from graphc.runtime.store import Store

Outputs = Union[Node, Sequence[Node], Mapping[str, Node]]


def _named(outputs: Outputs) -> tuple[dict[str, Node], Structure]:
    if isinstance(outputs, Node):
        return {"out": outputs}, None
    if isinstance(outputs, Mapping):
        return dict(outputs), "dict"
    return {f"out{i}": n for i, n in enumerate(outputs)}, "list"


def compile(outputs: Outputs, optimizer: Optional[Optimizer] = None, *, state: Optional[Store] = None,  # noqa: A001
            backend: str = "numpy", seed: int = 0, name: Optional[str] = None,
            passes: bool = True, ranks: int = 1, reuse: bool = True) -> CompiledStep:
    """Compile ``outputs`` into a function of the graph's inputs.

    With an ``optimizer``, ``outputs`` is the loss (a scalar node, or a dict with a
    ``"loss"`` entry and other outputs to report) and the result is a train step:
    each call computes the loss, the gradients and the update, and writes the new
    parameters, optimizer state and batch-norm statistics into ``state``.
    Without one, it is a pure function of its inputs and the current variables.
    With ``GRAPHC_DEBUG_NANS=1`` every call checks its numbers (see :mod:`graphc.runtime.numerics`).
    Functions compiled with the same ``state`` share parameters.  ``passes=False``
    skips the optimizer and the memory plan: the reference path for tests.
    ``reuse=False`` keeps the optimized program and its fused loops but gives every
    value a buffer of its own and updates no variable in place: its results must
    equal the default's bit for bit, so it tells a memory-plan bug from any other.
    ``ranks`` > 1 compiles a train step for data parallelism over that many
    processes: the gradient is averaged over them by an allreduce before the
    update (see :func:`graphc.compiler.train_step.training_program`).
    """
    target = backends.get(backend)
    named, structure = _named(outputs)
    if optimizer is not None:
        if "loss" not in named and len(named) == 1:
            named = {"loss": next(iter(named.values()))}
        loss = named.pop("loss", None)
        if loss is None:
            raise GraphcError("a train step needs a 'loss' output")
        program = training_program(loss, optimizer, named, name=name or "train_step", ranks=ranks)
        if structure == "list":
            raise GraphcError("pass a train step's extra outputs as a dict, with the loss under 'loss'")
    else:
        program = Program(name or "step", named)
        for op in ("param", "state", "input"):
            check_unique_names(program.leaves(op))
    missing = program.unbound_symbols()
    if missing:
        raise FeedError(f"the size {missing[0]} is not known: no input of the compiled function has a dimension "
                        f"{missing[0]} (a gradient with respect to an input does not read that input); "
                        f"compile it together with an output that reads the input")
    store = state if state is not None else Store(seed)
    step = pipeline.build(program, store, structure, target, passes, reuse)
    return numerics.checked(step) if numerics.requested() else step
