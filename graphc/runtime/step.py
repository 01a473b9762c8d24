"""Running a compiled function: generated code bound to a variable store.

The call path is the per-step overhead users pay, so it is short: look up the
function bound for this batch's shapes (validating the feeds only when the
shapes are new), call it, and shape the result.

Threads: a compiled function may be called from several threads at once.  Each
thread binds its own buffers, so functions of their inputs alone run
concurrently; calls of functions that read or write variables take the store's
lock and so run one at a time, in some order, as if called one after another.
"""
from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import Any, Callable, Optional, Union

import numpy as np

from graphc.errors import FeedError
from graphc.feeds import bind_symbols
from graphc.interpreter import evaluate
from graphc.ir.shapes import symbols_of
from graphc.passes.memory import Plan
from graphc.ir.program import Program
from graphc.runtime.executable import Executable
from graphc.runtime.store import Store

Structure = Union[None, list, str]  # a single output, a list of outputs, or a dict ("dict")


class Step:
    """Generated code bound to a store, called with the user's feeds.  What a user holds is the
    :class:`~graphc.compiler.compiled_step.CompiledStep` built on it, which adds the views."""

    def __init__(self, program: Program, generated: Executable, store: Store, structure: Structure,
                 source_program: Program, plan: Optional[Plan] = None, cache_hit: bool = False):
        self.program = program
        self.source_program = source_program
        self.generated = generated
        self.state = store
        self.cache_hit = cache_hit
        self._structure = structure
        self.plan = plan if plan is not None else Plan(program.nodes())
        # The generated step takes the inputs it reads.  An input the rewrites stopped reading
        # (a sum of one-hot rows is 1) may still be the only one that tells a size like N:
        # it is then fed too, for its shape alone.
        sized = {d for n in generated.inputs for d in n.shape if isinstance(d, str)}
        read = set(generated.inputs)  # by identity: == on nodes builds an equality node
        self.inputs = generated.inputs + [n for n in source_program.leaves("input")
                                          if n not in read and set(symbols_of(n.shape)) - sized]
        self._input_names = [n.name for n in self.inputs]
        self._read = len(generated.inputs)
        self._local = threading.local()  # per thread: the functions bound to its buffers, by feed shapes
        self._lock = store.lock if generated.variables else nullcontext()

    # ---- running -------------------------------------------------------------
    def __call__(self, *args: Any, **feeds: Any) -> Any:
        """Run on inputs given by name (or positionally, in ``self.inputs`` order).

        Named feeds may hold more arrays than the function reads (a whole batch
        given to an inference function that only needs ``x``): those are ignored.
        """
        args = self._ordered(args, feeds)
        with self._lock:
            self._catch_up()
            values = self._function(args)(*args[:self._read])  # the rest were fed for their sizes
            if self.program.updates:
                self.state.generation += 1
            return self._shape_result(values)

    def launch(self, *args: Any, **feeds: Any) -> None:
        """Start a step without waiting for it or fetching its results.

        On a GPU this leaves out the copy of the outputs (the loss) to the host,
        so steps queue on the device without the host waiting for each.  The
        variables stay on the device after an ordinary call too: the store
        fetches them when they are read.  On the CPU it is an ordinary call
        whose results are dropped.
        """
        args = self._ordered(args, feeds)
        with self._lock:
            self._catch_up()
            fn = self._function(args)
            getattr(fn, "launch", fn)(*args[:self._read])
            if self.program.updates:
                self.state.generation += 1

    def _catch_up(self) -> None:
        """Another compiled function's device holds newer variable values (it was launched without
        fetching them): bring them into the store first.  This function's own steps know that."""
        ahead = self.state.ahead
        if ahead is not None and getattr(ahead, "owner", None) is not self.generated:
            self.state.catch_up()

    def _ordered(self, args: tuple, feeds: dict[str, Any]) -> tuple:
        if not feeds:
            return args
        try:
            return tuple(feeds[name] for name in self._input_names)
        except KeyError as exc:
            raise FeedError(f"{self.program.name}: no value given for input '{exc.args[0]}'; "
                            f"it takes {', '.join(self._input_names)}") from None

    def _function(self, args: tuple) -> Callable[..., tuple]:
        """The step function this thread bound for these inputs' shapes (binding it if new)."""
        try:
            key = tuple((a.shape, a.dtype) for a in args)
        except AttributeError:
            key = None
        local = self._local
        bound = local.bound if getattr(local, "version", -1) == self.state.version else None
        fn = bound.get(key) if bound is not None else None  # type: ignore[arg-type]
        return fn if fn is not None else self._bind(args, key)

    run = __call__

    def _bind(self, args: tuple, key: Optional[tuple]) -> Callable[..., tuple]:
        if len(args) != len(self._input_names):
            raise FeedError(f"{self.program.name} takes inputs {', '.join(self._input_names)}; got {len(args)} values")
        symbols = bind_symbols(self.inputs, args)
        local = self._local
        if getattr(local, "version", -1) != self.state.version:
            local.bound = {}
        arenas, variables = self.materialize()
        fn = self.generated.bind(variables, arenas, symbols, self.state)
        local.version = self.state.version
        if key is not None:
            local.bound[key] = fn
        return fn

    def materialize(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Create every variable this function uses (packing parameter arenas), as the first
        step would; returns the arenas and the variables in the generated code's order."""
        arenas = [self.state.pack(group) for group in self.program.arenas]
        # Cached code may come from an equal program built earlier: match variables by name.
        by_name = {v.name: v for v in self.program.variables()}
        return arenas, [self.state.ensure(by_name[v.name]) for v in self.generated.variables]

    def _shape_result(self, values: tuple) -> Any:
        if self._structure is None:
            return values[0]
        if self._structure == "dict":
            return dict(zip(self.program.outputs, values))
        return list(values)

    def reference(self, **feeds: Any) -> Any:
        """The same computation by the reference interpreter on the unoptimized program,
        without touching the store: the oracle for tests."""
        prog = self.source_program
        self.state.catch_up()
        variables = {v.name: self.state.ensure(v).copy() for v in prog.variables()}
        roots = prog.roots
        values = evaluate(roots, feeds, variables, rng=np.random.default_rng(0))
        outputs = values[:len(prog.outputs)]
        updates = dict(zip((v.name for v in prog.updates), values[len(prog.outputs):]))
        return self._shape_result(tuple(outputs)), updates
