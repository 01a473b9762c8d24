"""A check of a memory plan, written apart from the planner: replay the step on a model of memory.

The planner decides where values live with rules about shapes and liveness;
this module asks none of them.  It gives every memory the step touches (each
buffer, arena, variable and fed input) an array of element addresses, builds
each value's addresses with NumPy's own view operations on them (a transpose
is a transposed array of addresses, a broadcast a broadcast one), and replays
the schedule, recording in each element which write last stored it.  Then:

* every read must find, at every element it reads, the value it expects: a
  value overwritten before its last reader, or a variable updated before a
  read of its old value, is caught here;
* in one loop (a fused group, or a single op), an element one iteration writes
  may be read by no other iteration.  Loops store an iteration's results after
  reading its operands, and a CUDA kernel runs its iterations at once, so a
  write over an operand is safe only where it is read at the index written.
  An elementwise loop's iteration is an element of its shape; a loop over
  rows (:mod:`graphc.backends.row_groups`) reads and writes row r in iteration r,
  and reads a [C] operand along the columns of every row; a column sum is
  zeroed before its loop starts, so nothing the loop reads may live there;
  ops that are not elementwise read everything before they write anything
  (a ``where`` run alone writes its 'else' operand first);
* a view made once when the step is bound must be a view: NumPy copies a
  reshape it cannot express with strides, and such a copy goes stale;
* at the end, each output holds its value, and each variable updated in place
  holds its new value.

Symbolic sizes take the value ``SYMBOL_SIZE``.  ``GRAPHC_VERIFY_PLAN=1`` runs
the check on every compile (the test suite sets it); a failure raises
:class:`PlanError`, which names the op, the memory and both values.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Hashable, Optional, Union

import numpy as np

from graphc.errors import GraphcError
from graphc.ir.graph import toposort
from graphc.ir.node import Node
from graphc.ir.registry import ELEMENTWISE, LEAF, has_no_buffer, is_literal
from graphc.ir.printing import Namer, describe
from graphc.passes.fusion import Group
from graphc.passes.memory import Buffer, Plan
from graphc.ir.program import Program

SYMBOL_SIZE = 3        # big enough that rows, columns and batches are more than one element
MAX_ELEMENTS = 2 ** 25  # the largest step replayed (counted over every value it computes or reads)
UNWRITTEN = 0          # the token of memory no write has reached
PROLOGUE = -1          # the iteration of what a loop does before its first (zeroing a column sum)
BEFORE, AFTER = -2, -3  # reads and writes of an op that reads all its operands before it writes


class PlanError(GraphcError):
    """A memory plan that would give a wrong answer: a bug of graphc's, never of the model."""


def requested() -> bool:
    return os.environ.get("GRAPHC_VERIFY_PLAN", "") not in ("", "0")


def verify(program: Program, plan: Plan, size: int = SYMBOL_SIZE) -> bool:
    """Raise :class:`PlanError` if running ``program`` as ``plan`` says could read a wrong value.

    The replay keeps a few integers per element of the step's memory, so a plan of more than
    ``MAX_ELEMENTS`` elements in all is not replayed: the result is False (True once checked)."""
    elements = sum(math.prod(d if isinstance(d, int) else size for d in n.shape) for n in plan.schedule)
    if elements > MAX_ELEMENTS:
        return False
    _Replay(program, plan, size).run()
    return True


@dataclass(frozen=True)
class _Located:
    memory: Hashable
    addresses: np.ndarray  # one address per element of the value, in the value's shape


@dataclass(frozen=True)
class _Access:
    node: Node             # the value read, or written
    memory: Hashable
    addresses: np.ndarray  # the elements touched
    tokens: np.ndarray     # what each should hold (a read), or will hold (a write)
    iteration: np.ndarray  # the loop iteration that touches each


def is_elementwise(node: Node) -> bool:
    return node.kind in ELEMENTWISE or node.op == "cast"


def _kept_nowhere(node: Node) -> bool:
    """A constant or a size: a value the step's code holds, in memory no step writes."""
    return is_literal(node.op) or has_no_buffer(node.op)


def is_column_sum(node: Node) -> bool:
    return node.op == "sum" and tuple(node.attrs["axes"]) == (0,) and node.inputs[0].ndim >= 2


def is_row_reduction(node: Node) -> bool:
    return node.op in ("sum", "max") and tuple(node.attrs["axes"]) == (1,) and node.inputs[0].ndim == 2


def runs_by_rows(group: Group) -> bool:
    """A loop over rows: members (column sums aside) of several shapes, or not elementwise."""
    members = [m for m in group.members if not is_column_sum(m)]
    return any(not is_elementwise(m) or m.shape != members[0].shape for m in members)


def _memory_name(key: Hashable) -> str:
    kind, which = key  # type: ignore[misc]
    return {"buffer": f"buffer b{which}", "arena": f"arena {which}", "var": f"variable {which}",
            "input": f"the fed {which}", "fresh": "a fresh array"}[kind]


def _sorted_writes(writes: list[_Access]) -> tuple[np.ndarray, np.ndarray]:
    """The addresses ``writes`` store to, sorted, and the iteration storing each."""
    addresses = np.concatenate([w.addresses.ravel() for w in writes])
    iterations = np.concatenate([w.iteration.ravel() for w in writes])
    order = np.argsort(addresses)
    return addresses[order], iterations[order]


def _read_elsewhere(written: tuple[np.ndarray, np.ndarray], read: _Access) -> bool:
    """Is an element ``read`` reads written (``written``: see :func:`_sorted_writes`) by another
    iteration than the one reading it?"""
    addresses, iterations = written
    if not addresses.size:
        return False
    wanted = read.addresses.ravel()
    at = np.minimum(np.searchsorted(addresses, wanted), addresses.size - 1)
    return bool(((addresses[at] == wanted) & (iterations[at] != read.iteration.ravel())).any())


class _Replay:
    def __init__(self, program: Program, plan: Plan, size: int):
        self.program, self.plan, self.size = program, plan, size
        self.base: dict[Hashable, np.ndarray] = {}     # each memory's addresses, 0..n-1
        self.owner: dict[Hashable, np.ndarray] = {}    # each memory's elements: the token last stored there
        self.content: dict[Node, np.ndarray] = {}      # each value's elements: the tokens that make it up
        self.writers: list[Union[str, Node]] = ["nothing"]  # each token: what wrote it (described if a check fails)
        self.located: dict[Node, Optional[_Located]] = {}
        self.group_of = {m: g for g in plan.groups for m in g.members}
        self.internal = {m for g in plan.groups for m in set(g.members) - set(g.outputs)}
        self.name = Namer()
        for node in toposort(program.roots):  # names as show("step") prints them
            self.name(node)
        self.arena_slot: dict[Node, tuple[int, int]] = {}
        for k, group in enumerate(program.arenas):
            offset = 0
            for var in group:
                self.arena_slot[var] = (k, offset)
                offset += self.count(var)
            self.memory(("arena", k), offset, self.new_token(f"arena {k} as the step found it"))
        for var in program.variables():
            if var not in self.arena_slot:
                self.memory(("var", var.name), self.count(var), self.new_token(f"{var.name} as the step found it"))
        for node in plan.schedule:
            if node.op == "input":
                self.memory(("input", node.name), self.count(node), self.new_token(f"the fed {node.name}"))

    # ---- the model of memory -------------------------------------------------
    def shape(self, node: Node) -> tuple[int, ...]:
        return self.resolved(node.shape)

    def resolved(self, shape: tuple) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else self.size for d in shape)

    def count(self, node: Node) -> int:
        return math.prod(self.shape(node))

    def memory(self, key: Hashable, size: int, token: int = UNWRITTEN) -> np.ndarray:
        if key not in self.base:
            self.base[key] = np.arange(size, dtype=np.int64)
            self.owner[key] = np.full(size, token, dtype=np.int64)
        return self.base[key]

    def new_token(self, what: Union[str, Node]) -> int:
        self.writers.append(what)
        return len(self.writers) - 1

    def writer(self, token: int) -> str:
        what = self.writers[token]
        return what if isinstance(what, str) else self.describe(what)

    def describe(self, node: Node) -> str:
        return " ".join(part for part in describe(node, self.name) if part).strip()

    def locate(self, node: Node) -> Optional[_Located]:
        """Where ``node``'s value is (None for constants, sizes and values kept in a loop's registers)."""
        if node not in self.located:
            self.located[node] = self._locate(node)
        return self.located[node]

    def _initial(self, node: Node, key: Hashable, addresses: np.ndarray) -> _Located:
        """A leaf's value: what its memory holds before the step writes anything."""
        at = _Located(key, addresses.reshape(self.shape(node)))
        self.content[node] = self.owner[key][at.addresses]
        return at

    def _locate(self, node: Node) -> Optional[_Located]:
        if _kept_nowhere(node) or node in self.internal:
            return None
        if node.op == "input":
            return self._initial(node, ("input", node.name), self.base[("input", node.name)])
        if node in self.arena_slot:
            k, offset = self.arena_slot[node]
            return self._initial(node, ("arena", k), self.base[("arena", k)][offset:offset + self.count(node)])
        if node.is_variable:
            return self._initial(node, ("var", node.name), self.base[("var", node.name)])
        if node in self.plan.arena_views:
            key = ("arena", self.plan.arena_views[node])
            return self._initial(node, key, self.base[key])
        if self.plan.is_view(node):
            return self._view(node)
        place = self.plan.place.get(node)
        if place is None:  # allocated by NumPy where it is computed
            key = ("fresh", node.serial)
            return _Located(key, self.memory(key, self.count(node)).reshape(self.shape(node)))
        if isinstance(place, Node):
            return self.locate(place)
        if isinstance(place, Buffer):
            key, start, stop, size = ("buffer", place.index), 0, self.count(node), math.prod(self.resolved(place.shape))
        elif isinstance(place.base, int):
            key, start, stop = ("arena", place.base), place.start, place.stop
            size = self.base[key].size
        else:
            key, start, stop = ("buffer", place.base.index), place.start, place.stop
            size = math.prod(self.resolved(place.base.shape))
        if stop - start != self.count(node) or stop > size:
            raise PlanError(f"{self.describe(node)} has {self.count(node)} elements but is placed in "
                            f"elements {start}:{stop} of {_memory_name(key)}, which has {size}")
        return _Located(key, self.memory(key, size)[start:stop].reshape(self.shape(node)))

    def viewed(self, node: Node, array: np.ndarray) -> np.ndarray:
        """``array`` (addresses or tokens, in the shape of ``node``'s operand) as the layout op ``node`` sees it."""
        op = node.op
        if op == "reshape":
            return array.reshape(self.shape(node))
        if op == "transpose":
            return array.transpose(node.attrs["perm"])
        if op == "broadcast_to":
            return np.broadcast_to(array, self.shape(node))
        if op == "slice":
            return array[node.attrs["start"]:node.attrs["stop"]]
        return array  # stop_gradient

    def _view(self, node: Node) -> Optional[_Located]:
        source = self.locate(node.inputs[0])
        if source is None:
            return None
        view = self.viewed(node, source.addresses)
        self.content[node] = self.viewed(node, self.content[node.inputs[0]])
        if view.size and not np.may_share_memory(view, self.base[source.memory]):
            # NumPy could not view it: it copied.  Of a fed array, or of such a fresh copy, that is
            # a fresh copy each call; of anything else it is made once, when the step is bound,
            # and goes stale.
            if source.memory[0] not in ("input", "fresh"):
                raise PlanError(f"{self.describe(node)} is planned as a view, but NumPy can only copy it: the "
                                f"copy, made when the step is bound, would keep {_memory_name(source.memory)}'s "
                                f"old values")
            key = ("fresh", node.serial)
            self.memory(key, view.size)
            self.owner[key][:] = self.content[node].ravel()
            return _Located(key, self.base[key].reshape(view.shape))
        return _Located(source.memory, view)

    # ---- replaying the step --------------------------------------------------
    def run(self) -> None:
        for node in self.plan.schedule:
            group = self.group_of.get(node)
            if group is not None:
                if node is group.members[-1]:
                    self.group(group)
            elif node.kind == LEAF or has_no_buffer(node.op) or node in self.plan.arena_views or self.plan.is_view(node):
                self.locate(node)
            elif node.op == "concat":
                self.concat(node)
            else:
                self.lone(node)
        self.end()

    def read(self, operand: Node, reader: Node, shape: Optional[tuple[int, ...]], iteration: object) -> list[_Access]:
        """``reader``'s read of ``operand`` (broadcast to ``shape`` if given) in the given iterations."""
        at = self.locate(operand)
        if at is None:
            if self.constant(operand):
                return []
            raise PlanError(f"{self.describe(reader)} reads {self.name(operand)}, which the plan keeps nowhere")
        addresses, tokens = at.addresses, self.content[operand]
        if shape is not None:
            addresses, tokens = np.broadcast_to(addresses, shape), np.broadcast_to(tokens, shape)
        steps = iteration(addresses.shape) if callable(iteration) else np.broadcast_to(iteration, addresses.shape)
        return [_Access(operand, at.memory, addresses, tokens, steps)]

    def constant(self, node: Node) -> bool:
        """A constant, a size, or a view of one: values no step writes."""
        while self.plan.is_view(node):
            node = node.inputs[0]
        return _kept_nowhere(node)

    def computed(self, node: Node, iteration: np.ndarray) -> list[_Access]:
        """The write of ``node``'s value, made by the op or loop computing it."""
        at = self.locate(node)
        if at is None:
            return []
        token = self.new_token(node)
        tokens = np.full(at.addresses.shape, token, dtype=np.int64)
        return [_Access(node, at.memory, at.addresses, tokens, np.broadcast_to(iteration, at.addresses.shape))]

    def lone(self, node: Node) -> None:
        """One op outside any group: an elementwise op is a loop over its elements (a ``where``
        writes its 'else' operand into the result first); any other reads, then writes."""
        shape = self.shape(node)
        flat = np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
        reads = []
        for k, operand in enumerate(node.inputs):
            # NumPy's where copies 'else' into the result, then 'then' where the condition holds
            # (which reads the same bits when 'then' is 'else').
            if is_elementwise(node) and not (node.op == "where" and k < 2 and operand is not node.inputs[2]):
                reads += self.read(operand, node, shape, flat)
            else:
                reads += self.read(operand, node, None, BEFORE)
        self.execute(node, reads, self.computed(node, flat if is_elementwise(node) else np.full(shape, AFTER)))

    def concat(self, node: Node) -> None:
        """Each piece is copied into place, unless it was computed there (then it is neither read nor
        written): the concatenation holds its pieces' values, element for element."""
        at = self.locate(node)
        reads, writes, contents, start = [], [], [], 0
        for operand in node.inputs:
            count = self.count(operand)
            piece = at.addresses[start:start + count] if at is not None else None
            source = self.locate(operand)
            steps = np.arange(start, start + count, dtype=np.int64)
            if source is None:  # a constant piece
                contents.append(np.full(count, self.new_token(f"a constant piece of {self.name(node)}")))
            else:
                contents.append(self.content[operand].ravel())
            in_place = (source is not None and at is not None and source.memory == at.memory
                        and np.array_equal(source.addresses.ravel(), piece))
            if not in_place:
                reads += self.read(operand, node, None, steps.reshape(self.shape(operand)))
                if at is not None:
                    writes.append(_Access(node, at.memory, piece, contents[-1], steps))
            start += count
        self.execute(node, reads, writes, np.concatenate(contents).reshape(self.shape(node)) if contents else None)

    def group(self, group: Group) -> None:
        """A fused group: a loop over its elements, or over its rows (see the module docstring)."""
        members = set(group.members)
        by_rows = runs_by_rows(group)
        loop = self.shape(next(m for m in group.members if not is_column_sum(m)))

        def iteration(shape: tuple[int, ...]) -> np.ndarray:
            """For each element of a value of ``shape`` the loop reads or writes, the iteration doing it:
            its row in a loop over rows, its position in a loop over elements (of the loop's shape)."""
            if by_rows:
                rows = np.arange(shape[0], dtype=np.int64).reshape((shape[0],) + (1,) * (len(shape) - 1))
                return np.broadcast_to(rows, shape)
            if shape != loop:
                raise PlanError(f"a loop over the elements of {list(loop)} reads or writes a value of shape "
                                f"{list(shape)}")
            return np.arange(math.prod(loop), dtype=np.int64).reshape(loop)

        reads: list[_Access] = []
        for m in group.members:
            fits = self.shape(m)[:1] == loop[:1] if by_rows else self.shape(m) == loop
            if not (fits or is_column_sum(m)):
                raise PlanError(f"{self.describe(m)} does not fit the loop of its group over {list(loop)}")
            whole = is_row_reduction(m) or is_column_sum(m) or m.op == "one_hot"  # reads its operand as it is
            for operand in m.inputs:
                if operand not in members:
                    reads += self.read(operand, m, None if whole else self.shape(m), iteration)
        writes = []
        for out in group.outputs:
            at = self.locate(out)
            writes += self.computed(out, np.full(at.addresses.shape, PROLOGUE) if is_column_sum(out)
                                    else iteration(at.addresses.shape))
        self.execute(group.members[-1], reads, writes)

    def execute(self, node: Node, reads: list[_Access], writes: list[_Access],
                content: Optional[np.ndarray] = None) -> None:
        for r in reads:
            self.check_holds(node, r)
        self.check_iterations(node, reads, writes)
        for w in writes:
            self.owner[w.memory][w.addresses.ravel()] = w.tokens.ravel()
            self.content[w.node] = np.broadcast_to(w.tokens, w.addresses.shape)
        if content is not None:
            self.content[node] = content

    def check_holds(self, reader: Node, r: _Access) -> None:
        found = self.owner[r.memory][r.addresses.ravel()]
        wrong = found != r.tokens.ravel()
        if wrong.any():
            other = self.writer(int(found[np.argmax(wrong)]))
            raise PlanError(f"{self.describe(reader)} reads {self.name(r.node)} from {_memory_name(r.memory)}, "
                            f"but {int(wrong.sum())} of its elements there hold another value by then: {other}")

    def check_iterations(self, node: Node, reads: list[_Access], writes: list[_Access]) -> None:
        """No element one iteration of the loop writes is read by another, nor written twice.

        Only the elements the loop touches are looked at (the written addresses, sorted, are
        searched for the read ones), so a loop costs the size of its values, not of the memory
        they live in: a deep model's packed gradient is written one small slice per loop."""
        written: dict[Hashable, list[_Access]] = {}
        for w in writes:
            addresses = w.addresses.ravel()
            earlier = [a.addresses.ravel() for a in written.get(w.memory, [])]
            if np.unique(addresses).size != addresses.size or any(np.isin(addresses, e).any() for e in earlier):
                writers = ", ".join(self.name(a.node) for a in written.get(w.memory, []) + [w])
                raise PlanError(f"{self.describe(node)}: its loop writes an element of {_memory_name(w.memory)} "
                                f"twice (as {writers})")
            written.setdefault(w.memory, []).append(w)
        by_address = {memory: _sorted_writes(accesses) for memory, accesses in written.items()}
        for r in reads:
            if r.memory in by_address and _read_elsewhere(by_address[r.memory], r):
                writers = ", ".join(self.name(a.node) for a in written[r.memory])
                raise PlanError(f"{self.describe(node)}: its loop overwrites {self.name(r.node)} in "
                                f"{_memory_name(r.memory)} (with {writers}) at elements another iteration still reads")

    def end(self) -> None:
        """Results are taken, then variables not updated in place are copied: the step's last acts."""
        reads = []
        for output in self.program.outputs.values():
            reads += self.read(output, output, None, 0)
        copies = []
        for var, new in self.program.updates.items():
            read = self.read(new, new, None, 0)
            if var in self.plan.in_place_updates:
                target = self.locate(var)
                if not read or read[0].memory != target.memory or not np.array_equal(read[0].addresses,
                                                                                   target.addresses):
                    raise PlanError(f"{var.name} is updated in place, but its new value "
                                    f"{self.describe(new)} is computed elsewhere")
            elif read:
                copies.append((var, new))
            reads += read
        for r in reads:
            self.check_holds(r.node, r)
        for var, new in copies:
            target = self.locate(var)
            self.owner[target.memory][target.addresses.ravel()] = np.broadcast_to(
                self.content[new], target.addresses.shape).ravel()
