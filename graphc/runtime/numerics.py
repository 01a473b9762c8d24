"""The numerics check: which node first produced a NaN or an infinity, and which line built it.

A compiled step fuses and reuses buffers, so by the time a loss reads NaN the
value that went bad first is long overwritten.  With ``GRAPHC_DEBUG_NANS=1``
(like JAX's ``jax_debug_nans``) every compiled function, and with
``graphc train --check-numerics`` the trainer's, checks after each call that
its feeds, its outputs and the variables it wrote are finite.  When one is not,
the call is undone (the variables get their values from before it back) and
replayed in the reference interpreter on the unoptimized program, which stops
at the first node, in topological order, whose value is not finite and names
it with its gradient provenance and the user's source line.

The check copies every variable before each call and so costs about a step's
memory traffic again: it is a debugging mode, off by default.  The replay
draws its own random numbers, so a non-finite value that only some noise
draws produce may not reappear there; the message says so when that happens.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np

from graphc.errors import FeedError, GraphcError
from graphc.interpreter import evaluate
from graphc.ir.graph import toposort
from graphc.ir.node import Node
from graphc.ir.printing import Namer, describe
from graphc.ir.site import Site
from graphc.ir.program import Program
from graphc.runtime.step import Step

ENV_VAR = "GRAPHC_DEBUG_NANS"


class NonFiniteError(GraphcError, FloatingPointError):
    """A value that became NaN or infinite, with the node that first produced it when it is found."""


def requested() -> bool:
    """Whether ``GRAPHC_DEBUG_NANS`` asks every compiled function to check its numbers."""
    return os.environ.get(ENV_VAR, "").strip() not in ("", "0")


def checked(step: Any) -> "CheckedStep":
    """``step`` with the numerics check (a step already checked is returned as it is)."""
    return step if isinstance(step, CheckedStep) else CheckedStep(step)


class CheckedStep:
    """A compiled function that refuses non-finite feeds and, when a call makes a value non-finite,
    undoes the call and raises :class:`NonFiniteError` naming the first bad node.

    Everything else (``show``, ``source``, ``state``...) is the wrapped step's.
    """

    def __init__(self, step: Step):
        self.step = step

    def __getattr__(self, name: str) -> Any:
        return getattr(self.step, name)

    def __call__(self, *args: Any, **feeds: Any) -> Any:
        # The replay runs the unoptimized program, which may read inputs the optimized code
        # no longer does: keep every input of the source program the caller gave.
        names = {n.name for n in self.step.source_program.leaves("input")}
        given = dict(zip([n.name for n in self.step.inputs], args)) if args else {k: v for k, v in feeds.items() if k in names}
        for name, value in given.items():
            if not _finite(value):
                raise NonFiniteError(f"{self.step.program.name}: input '{name}' holds NaN or infinity; "
                                     f"clean the data before feeding it")
        store = self.step.state
        before = {v.name: store.ensure(v).copy() for v in self.step.source_program.variables()}
        rng_before = store.rng.bit_generator.state
        result = self.step(*args, **feeds)
        bad = _first_bad(list(self.step.program.outputs), result,
                         {v.name: store.values[v.name] for v in self.step.program.updates})
        if bad is None:
            return result
        store.load(before)
        store.rng.bit_generator.state = rng_before
        found = locate(self.step.source_program, given, before)
        undone = " (its variable updates were undone)" if self.step.program.updates else ""
        raise NonFiniteError(f"{self.step.program.name}: {bad} is not finite after the call{undone}; "
                             + (found or "the reference interpreter's replay stayed finite (it draws other "
                                         "random numbers), so the cause is in the optimized code or a random draw"))

    run = __call__


def _finite(value: Any) -> bool:
    array = np.asarray(value)
    return array.dtype.kind not in "fc" or bool(np.isfinite(array).all())


def _first_bad(names: list[str], result: Any, written: Mapping[str, np.ndarray]) -> Optional[str]:
    values = result.values() if isinstance(result, dict) else result if isinstance(result, list) else [result]
    for name, value in zip(names, values):
        if not _finite(value):
            return f"output {name!r}"
    for name, value in written.items():
        if not _finite(value):
            return f"variable '{name}'"
    return None


class _Found(Exception):
    def __init__(self, node: Node, value: np.ndarray):
        self.node, self.value = node, value


def locate(program: Program, feeds: Mapping[str, Any], variables: Mapping[str, np.ndarray]) -> Optional[str]:
    """Replay ``program`` in the interpreter; describe the first node whose value is not finite."""
    def stop_at_non_finite(node: Node, value: np.ndarray) -> None:
        if not _finite(value):
            raise _Found(node, value)

    try:
        with np.errstate(all="ignore"):
            evaluate(program.roots, feeds, variables, rng=np.random.default_rng(0), watch=stop_at_non_finite)
    except _Found as found:
        return _describe(program, found.node, found.value)
    except FeedError:  # called positionally without an input only the unoptimized program reads
        return None
    return None


def _describe(program: Program, node: Node, value: np.ndarray) -> str:
    name = Namer()
    for other in toposort(program.roots):  # number nodes as `graphc show` does for this program
        name(other)
    statement, note, _ = describe(node, name)
    kinds = ", ".join(kind for kind, mask in (("NaN", np.isnan(value)), ("inf", np.isinf(value))) if mask.any())
    text = f"the first non-finite value ({kinds}) is made by {' '.join(statement.split())}"
    forward = node.origin.forward if node.origin is not None else node
    if node.origin is not None:
        text += f", made by the gradient rule of {name(forward)} ({forward.op}, {note})"
    built, site = _nearest_site(forward)
    if site is not None:
        via = "" if built is forward else f" (it reads {name(built)}, built"
        text += f"\n  at {site}: {site.code}" if not via else f"{via} at {site}: {site.code})"
    return text


def _nearest_site(node: Node) -> tuple[Node, Optional[Site]]:
    """The node's own source line or, for a node graphc built (inside a loss, say), the line of
    the nearest value it reads that the user built."""
    queue, seen = [node], {node}
    while queue:
        current = queue.pop(0)
        if current.site is not None:
            return current, current.site
        for operand in current.inputs:
            if operand not in seen:
                seen.add(operand)
                queue.append(operand)
    return node, None
