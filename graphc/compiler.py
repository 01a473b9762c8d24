"""``gc.compile``: from user graph to a callable step.

The pipeline is: build the program (for training: gradients, the optimizer's
update, state updates), optimize it, plan its memory, generate source, bind it
to a store.  Each stage is its own module; this one only wires them.
"""
from __future__ import annotations

import time
from typing import Mapping, Optional, Sequence, Union

from graphc import backends, cache, debug
from graphc.backends.base import Backend, KernelBuildFailed
from graphc.errors import FeedError, GraphcError
from graphc.ir.node import Node
from graphc.optim.base import Optimizer
from graphc.passes import PassReport, optimize
from graphc.passes.cost import estimate
from graphc.passes import plan_check
from graphc.passes.memory import Plan
from graphc.program import Program, check_unique_names, training_program
from graphc.runtime import numerics
from graphc.runtime.step import CompiledStep, Structure
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
    update (see :func:`graphc.program.training_program`).
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
    step = _lower(program, store, structure, passes, target, reuse)
    return numerics.checked(step) if numerics.requested() else step


def _lower(program: Program, store: Store, structure: Structure, passes: bool, backend: Backend,
           reuse: bool = True) -> CompiledStep:
    started = time.perf_counter()
    optimized, report = optimize(program) if passes else (program, None)
    key = cache.structural_key(optimized, backend.cache_tag(passes) + ("" if reuse else "-no-reuse"))
    cached = cache.lookup(key)
    cache_hit = cached is not None
    if cached is None:
        plan = backend.plan(optimized, passes, reuse=reuse)
        try:
            generated = backend.generate(optimized, plan)
        except KernelBuildFailed:
            plan = backend.plan(optimized, passes, fused=False, reuse=reuse)
            generated = backend.generate(optimized, plan)
        if plan_check.requested() and not plan_check.verify(optimized, plan):
            debug.emit(1, f"graphc: the memory plan of {program.name} is too large to replay; not checked")
        cached = (generated, plan)
        cache.store(key, cached)
    generated, plan = cached
    step = CompiledStep(optimized, generated, store, structure, source_program=program, plan=plan,
                        cache_hit=cache_hit)
    _report(program, optimized, plan, report, step, time.perf_counter() - started)
    return step


def _report(program: Program, optimized: Program, plan: Plan, report: Optional[PassReport],
            step: CompiledStep, seconds: float) -> None:
    """What ``GRAPHC_DEBUG`` asks to see of this compile; each text is built only when shown."""
    debug.emit(1, lambda: f"graphc: compiled {program.name}: {len(program.nodes())} → {len(optimized.nodes())} "
                          f"nodes, {len(plan.buffers)} buffers, {seconds * 1e3:.1f} ms, "
                          f"cache {'hit' if step.cache_hit else 'miss'}")
    if report is not None:
        debug.emit(2, report.summary)
    debug.emit(2, lambda: "cost " + estimate(plan).format())
    debug.emit(3, optimized.format)
    debug.emit(4, lambda: step.source)
