"""Memory planning: decide where every value of the step lives.

After planning, the steady-state step allocates nothing:

* computed values go into buffers preallocated once per batch size, from a pool
  keyed by (shape, dtype); a buffer returns to the pool when the last reader of
  every value stored in it has run (liveness over the schedule), and an
  elementwise op may write over an operand that dies at that op (in place);
* layout ops (reshape, transpose, broadcast, slice) are views and take no buffer;
  views of buffers and variables are made once, when the step is bound.  The
  exception is a reshape of a strided value (a transpose, a broadcast): NumPy
  cannot view that without copying, and a copy made at bind time would be a
  stale snapshot, so such a reshape is a planned copy into a buffer, made at
  its place in every step (:func:`materialized_layouts`);
* the optimizer's packed parameter vector θ is the store's arena itself, the new
  θ is written straight into it, and each parameter is a view of it;
* the packed gradient vector is one buffer, and each parameter's gradient is
  computed directly into its slice, so the concatenation costs nothing;
* other variable updates (optimizer moments, running statistics) are written
  in place when every read of the old value comes first, else copied at the end.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

from graphc.ir.node import Node
from graphc.ir.registry import ELEMENTWISE, REDUCE, has_no_buffer, is_fed, is_leaf, is_strided, is_view
from graphc.ir.shapes import Shape
from graphc.passes.fusion import Group
from graphc.ir.program import Program


@dataclass(frozen=True)
class Buffer:
    index: int
    shape: Shape
    dtype: str


@dataclass(frozen=True)
class Piece:
    """A slice of a buffer or arena, viewed with a shape: where a packed value lives."""
    base: Union[Buffer, int]  # a buffer, or the index of a store arena
    start: int
    stop: int
    shape: Shape


Place = Union[Buffer, Piece, Node]  # a buffer, a slice of one, or a variable written in place


def materialized_layouts(schedule: Sequence[Node]) -> frozenset[Node]:
    """The reshapes that must copy: those of a value whose memory is strided.

    A value is dense (a buffer, a variable, a constant, a contiguous view of
    one), strided (a transpose or broadcast of a dense value, or a view of
    that), or fed (a view of a step input, made afresh by NumPy in every call,
    where a copy NumPy makes is a fresh copy, hence correct).  The rule is
    conservative: a transpose that happens to be contiguous still counts as
    strided, which costs a copy, never a stale value.
    """
    layout: dict[Node, str] = {}
    copies = set()
    for node in schedule:
        operand = layout.get(node.inputs[0], "dense") if node.inputs else "dense"
        if is_fed(node.op):
            layout[node] = "fed"
        elif is_strided(node.op):
            layout[node] = "fed" if operand == "fed" else "strided"
        elif node.op == "reshape" and operand == "strided":
            copies.add(node)
            layout[node] = "dense"
        elif is_view(node.op):
            layout[node] = operand
    return frozenset(copies)


@dataclass
class Plan:
    schedule: list[Node]
    place: dict[Node, Place] = field(default_factory=dict)
    arena_views: dict[Node, int] = field(default_factory=dict)   # packed θ nodes → arena index
    in_place_updates: set[Node] = field(default_factory=set)     # variables needing no copy
    buffers: list[Buffer] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)                # fused elementwise groups
    filled_concats: set[Node] = field(default_factory=set)       # concats whose pieces are all placed
    copies: frozenset[Node] = frozenset()                          # layout ops that copy (see above)

    def __post_init__(self) -> None:
        self.copies = materialized_layouts(self.schedule)

    def is_view(self, node: Node) -> bool:
        """Does ``node`` share its operand's memory (rather than have a place of its own)?"""
        return is_view(node.op) and node not in self.copies


def peel_reshape(node: Node, copies: frozenset[Node] = frozenset()) -> Node:
    """The value a packed piece holds: a reshape that is a view stores nothing of its own."""
    return node.inputs[0] if node.op == "reshape" and node not in copies else node


def peel_order_views(node: Node, plan: "Plan") -> Node:
    """The value ``node`` views without moving an element: through reshapes and stop-gradients that
    are views (a contiguous value regrouped keeps each element at its flat position)."""
    while node.op in ("reshape", "stop_gradient") and plan.is_view(node):
        node = node.inputs[0]
    return node


def reads_where_it_writes(reader: Node, operand: Node, written: Node) -> bool:
    """Does ``reader``, run in one loop with the node ``written``, read ``operand`` only at the
    index where that loop iteration stores ``written`` (so that ``written`` may overwrite it)?

    Loops (a fused group, or one op) store an iteration's results after reading its operands, and
    a CUDA kernel runs its iterations at once, so an operand may be overwritten only where the
    iteration that writes an element is the only one that reads it.  With ``operand`` of
    ``written``'s shape, that holds for an elementwise reader of that shape too (element for
    element, or row for row in a loop over rows), for a reduction over a row (a loop over rows
    reads row r in iteration r), and for a column sum (it reads the element its iteration
    computes).  It does not for a reader that broadcasts ``operand`` (a [C] value read along the
    columns of every row, even where R == C, or any of its elements read by every iteration).
    """
    if operand.shape != written.shape:
        return False
    if reader.op in ("sum", "max"):
        axes = tuple(reader.attrs["axes"])
        return (operand.ndim == 2 and axes == (1,)) or (reader.op == "sum" and axes == (0,) and operand.ndim >= 2)
    return (reader.kind in ELEMENTWISE or reader.op == "cast") and reader.shape == operand.shape


def _arena_index(node: Node, program: Program) -> Optional[int]:
    """Is ``node`` the concatenation of an arena's variables, in arena order?"""
    if node.op != "concat":
        return None
    members = [peel_reshape(i) for i in node.inputs]
    for k, group in enumerate(program.arenas):
        if len(group) == len(members) and all(a is b for a, b in zip(group, members)):
            return k
    return None


def _arena_update_source(program: Program, k: int) -> Optional[Node]:
    """The new θ, if every variable of arena k is updated to its own slice of it."""
    group = program.arenas[k]
    sources, offset = set(), 0
    for var in group:
        new = program.updates.get(var)
        if new is None:
            return None
        piece = peel_reshape(new)
        size = 1
        for d in var.shape:
            size *= int(d)
        if len(group) == 1:
            sources.add(piece)
        elif piece.op != "slice" or (piece.attrs["start"], piece.attrs["stop"]) != (offset, offset + size):
            return None
        else:
            sources.add(piece.inputs[0])
        offset += size
    return sources.pop() if len(sources) == 1 else None


class _Planner:
    def __init__(self, program: Program, schedule: list[Node], groups: list[Group], reuse: bool):
        self.program = program
        self.reuse = reuse
        self.plan = Plan(schedule, groups=groups)
        self.pos = {n: i for i, n in enumerate(self.plan.schedule)}
        self.group_of = {m: g for g in groups for m in g.members}
        for g in groups:  # a group runs at once, where its last member was
            for m in g.members:
                self.pos[m] = self.pos[g.members[-1]]
        self.internal = {m for g in groups for m in set(g.members) - set(g.outputs)}
        self.end = len(self.plan.schedule)
        self.root: dict[Node, object] = {}
        self.occupants: dict[object, list[Node]] = {}  # each root → the values given its memory
        self.outputs = set(program.outputs.values())
        self.arena_roots = [("arena", k) for k in range(len(program.arenas))]  # compared by identity
        # Who reads each value (not a view), through views: asking who reads a memory costs its
        # readers, not a walk over the schedule (a deep model asks it of every variable).
        self.readers: dict[Node, list[Node]] = {}
        for node in self.plan.schedule:
            if not self.plan.is_view(node):
                for value in dict.fromkeys(self.viewed(i) for i in node.inputs):
                    self.readers.setdefault(value, []).append(node)
        self.copied_from: dict[Node, list[tuple[Node, Node]]] = {}  # a value → the updates (var, new) of its views
        for var, new in program.updates.items():
            self.copied_from.setdefault(self.viewed(new), []).append((var, new))

    # ---- storage roots: what memory each value really occupies -------------
    def viewed(self, node: Node) -> Node:
        """The value (not a view) whose memory ``node`` shows, following views to what they view."""
        while self.plan.is_view(node):
            node = node.inputs[0]
        return node

    def root_of(self, node: Node) -> object:
        """The memory a value occupies, following views to what they view."""
        value = self.viewed(node)
        return self.root.get(value, value)

    def occupy(self, value: Node, root: object) -> None:
        """Give ``value`` (not a view) the memory ``root``."""
        self.root[value] = root
        self.occupants.setdefault(root, []).append(value)

    def occupying(self, root: object) -> list[Node]:
        """The values (not views) whose memory is ``root``: a value is its own until given another."""
        values = [v for v in self.occupants.get(root, ()) if self.root[v] is root]
        if isinstance(root, Node) and root not in self.root:
            values.append(root)
        return values

    def value_last_reads(self) -> dict[Node, int]:
        """For each value, the position of its last reader, reading through views.

        Values the program returns count as read after the step, and values that
        are copied into a variable at the end as read at the end; both are seeded
        first, so that a view being returned keeps the buffer it views alive."""
        last: dict[Node, int] = {out: self.end + 1 for out in self.outputs}
        for var, new in self.program.updates.items():
            if var not in self.plan.in_place_updates:
                last[new] = max(last.get(new, -1), self.end)
        for node in reversed(self.plan.schedule):
            when = last.get(node, -1) if self.plan.is_view(node) else self.pos[node]
            for operand in node.inputs:
                last[operand] = max(last.get(operand, -1), when)
        return last

    def run(self) -> Plan:
        self._arenas()
        self._packed_gradients()
        self._variable_updates()
        self._pool()
        return self.plan

    def _arenas(self) -> None:
        for k, group in enumerate(self.program.arenas):
            for var in group:
                self.occupy(var, self.arena_roots[k])
        for node in self.plan.schedule:
            k = _arena_index(node, self.program)
            if k is not None:
                self.plan.arena_views[node] = k
                self.occupy(node, self.arena_roots[k])
        for k, group in enumerate(self.program.arenas):
            new_theta = _arena_update_source(self.program, k)
            if new_theta is None or not self._can_overwrite(self.arena_roots[k], new_theta):
                continue
            self.plan.place[new_theta] = Piece(k, 0, new_theta.shape[0], new_theta.shape)
            self.occupy(new_theta, self.arena_roots[k])
            self.plan.in_place_updates.update(group)

    def _can_overwrite(self, root: object, writer: Node) -> bool:
        """May ``writer`` store its result over ``root``? Only if no later node reads ``root``,
        and ``writer`` itself reads it elementwise, position for position."""
        if (not self.reuse or self.plan.is_view(writer) or is_leaf(writer.op) or writer in self.outputs
                or self._read_at_end(root, writer)):
            return False
        writers = set(self.group_of[writer].members) if writer in self.group_of else {writer}
        holders = self._holders(root)
        for node in dict.fromkeys(r for value in self.occupying(root) for r in self.readers.get(value, ())):
            read = [i for i in node.inputs if self.root_of(i) is root]
            if node in writers:
                if not all(peel_order_views(i, self.plan) in holders and reads_where_it_writes(node, i, writer)
                           for i in read):
                    return False
            elif self.pos[node] > self.pos[writer]:
                return False
        return True

    def _holders(self, root: object) -> set[Node]:
        """The values that occupy all of ``root`` from its first element, in its own order: reading
        one of them at an index reads the root at that index.  A variable is its own; an arena is
        held by its packed θ (and by its variable, when it has only one)."""
        if isinstance(root, Node):
            return {root}
        held = {n for n, k in self.plan.arena_views.items() if self.arena_roots[k] is root}
        for k, group in enumerate(self.program.arenas):
            if self.arena_roots[k] is root and len(group) == 1:
                held.add(group[0])
        return held

    def _read_at_end(self, root: object, writer: Node) -> bool:
        """Is ``root`` read after the schedule: returned, or copied into another variable?"""
        if any(self.root_of(out) is root for out in self.outputs):
            return True
        return any(new is not writer and var not in self.plan.in_place_updates
                   for value in self.occupying(root) for var, new in self.copied_from.get(value, ()))

    def _packed_gradients(self) -> None:
        for node in self.plan.schedule:
            if node.op != "concat" or node in self.plan.arena_views:
                continue
            buffer = self._new_buffer(node.shape, node.dtype)
            self.plan.place[node] = buffer
            self.occupy(node, buffer)
            offset, all_placed = 0, True
            for operand in node.inputs:
                value = peel_reshape(operand, self.plan.copies)
                size = operand.shape[0]
                if self._placeable(value):
                    self.plan.place[value] = Piece(buffer, offset, offset + size, value.shape)
                    self.occupy(value, buffer)
                else:
                    all_placed = False
                offset += size
            if all_placed:
                self.plan.filled_concats.add(node)

    def _placeable(self, value: Node) -> bool:
        return (not self.plan.is_view(value) and not (has_no_buffer(value.op) or is_leaf(value.op))
                and value not in self.internal
                and value not in self.plan.place and value not in self.outputs)

    def _variable_updates(self) -> None:
        for var, new in self.program.updates.items():
            if var in self.plan.in_place_updates or new in self.plan.place:
                continue
            if new.shape == var.shape and new.dtype == var.dtype and self._can_overwrite(self.root_of(var), new):
                self.plan.place[new] = var
                self.occupy(new, self.root_of(var))
                self.plan.in_place_updates.add(var)

    def _new_buffer(self, shape: Shape, dtype: str) -> Buffer:
        buffer = Buffer(len(self.plan.buffers), shape, dtype)
        self.plan.buffers.append(buffer)
        return buffer

    def _pool(self) -> None:
        value_last = self.value_last_reads()
        until = _InUse()
        free: dict[tuple, list[Buffer]] = {}
        for node in self.plan.schedule:
            here = self.pos[node]
            for buffer in until.released_before(here):
                free.setdefault((buffer.shape, buffer.dtype), []).append(buffer)
            if (self.plan.is_view(node) or has_no_buffer(node.op) or is_leaf(node.op) or node in self.plan.place
                    or node in self.internal):
                continue
            buffer = self._dying_operand(node, until, here) if self.reuse else None
            if buffer is None:
                pool = free.get((node.shape, node.dtype)) if self.reuse else None
                buffer = pool.pop() if pool else self._new_buffer(node.shape, node.dtype)
            self.plan.place[node] = buffer
            self.occupy(node, buffer)
            until.keep(buffer, value_last.get(node, here))

    def _dying_operand(self, node: Node, until: "_InUse", here: int) -> Optional[Buffer]:
        """An operand's buffer whose last use is this elementwise op: overwrite it in place."""
        group = self.group_of.get(node)
        if (node.kind not in ELEMENTWISE and group is None) or node.kind == REDUCE:
            return None  # a fused column sum is zeroed before its loop reads the group's inputs
        # A lone where overwrites only its 'else' operand: NumPy copies the 'then' values over it
        # through the mask, with no temporary (overwriting 'then' would need the negated mask).
        read = group.inputs if group is not None else node.inputs
        readers = group.members if group is not None else [node]
        for operand in read[2:] if group is None and node.op == "where" else read:
            r = self.root_of(operand)
            if (isinstance(r, Buffer) and self.plan.place.get(operand) is r and until.get(r) == here
                    and r.shape == node.shape and r.dtype == node.dtype
                    and all(self.root_of(o) is not r or o is operand for o in read)
                    and all(reads_where_it_writes(m, operand, node) for m in readers
                            if any(i is operand for i in m.inputs))):
                return r
        return None


class _InUse:
    """The buffers in use, each until the position of the last read of what it holds.

    Buffers come back, once their time is over, in the order they came into use: a heap
    ordered by time finds them without looking at every buffer in use at every position
    (a deep model keeps thousands alive, its forward values, until the backward pass)."""

    def __init__(self) -> None:
        self.until: dict[Buffer, int] = {}
        self.since: dict[Buffer, int] = {}  # when each came into use, counted in buffers
        self.heap: list[tuple[int, int, Buffer]] = []  # (until, since, buffer), stale entries included
        self.count = 0

    def get(self, buffer: Buffer) -> Optional[int]:
        return self.until.get(buffer)

    def keep(self, buffer: Buffer, until: int) -> None:
        """Keep ``buffer`` in use until ``until`` at least."""
        if buffer not in self.until:
            self.since[buffer], self.count = self.count, self.count + 1
        elif self.until[buffer] >= until:
            return
        self.until[buffer] = until
        heapq.heappush(self.heap, (until, self.since[buffer], buffer))

    def released_before(self, here: int) -> list[Buffer]:
        """The buffers whose last read comes before ``here``, no longer in use, oldest first."""
        over: list[Buffer] = []
        while self.heap and self.heap[0][0] < here:
            until, since, buffer = heapq.heappop(self.heap)
            if self.until.get(buffer) == until and self.since[buffer] == since:
                del self.until[buffer]
                over.append(buffer)
        return sorted(over, key=self.since.__getitem__)


def plan_memory(program: Program, schedule: Optional[list[Node]] = None, groups: Sequence[Group] = (),
                reuse: bool = True) -> Plan:
    """Place every value of ``program`` run in ``schedule`` with fused ``groups``.

    ``reuse=False`` gives every computed value a buffer of its own and updates no variable in
    place: the same loops and calls as the planned step, writing elsewhere, so that its results
    must be bit-identical to the planned step's (the check of the plan's reuse in the tests)."""
    return _Planner(program, schedule or program.nodes(), list(groups), reuse).run()
