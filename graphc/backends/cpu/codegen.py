"""The CPU backend's code: a program lowered to Python source, one line per IR node.

Each line carries the IR statement it came from and the user's source line, so
the generated step reads as the graph and a profile of it points back at the
model.  The source defines ``bind(V, A, B, S, rng)``: given the variable
arrays ``V``, the store's arenas ``A``, the buffers ``B`` preallocated for one
batch size and the symbolic sizes ``S`` of that batch, it makes every view
that does not depend on the fed inputs (a weight's transpose, a gradient's
slice of the packed buffer) once, checking that each really shares its
operand's memory, and returns the step function.  What is left inside the
step is the arithmetic, writing into the places the memory plan chose
(``out=``), and on entry the copy of each fed array a fused C loop reads into
a buffer of its own, with the check of a fused one-hot's labels.  With an
empty plan, every line allocates its result: that is the unplanned reference
path.
"""
from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from graphc.backends.cpu import c_loops
from graphc.lowering import numpy_helpers
from graphc.backends.backend import KernelBuildFailed
from graphc.lowering.numpy_rules import lower, site_arg
from graphc.ir.shapes import resolve
from graphc.ir.node import Node
from graphc.ir.printing import Namer, describe
from graphc.ir.registry import is_view
from graphc.passes.fusion import Group
from graphc.passes.memory import Buffer, Piece, Plan, peel_reshape
from graphc.ir.program import Program

_NEEDS_ARRAYS = frozenset({"cast", "one_hot", "concat", "matmul"})  # ops that take no Python scalar
_RESERVED = {"np", "k", "c", "rng", "bind", "V", "A", "B", "K"}


@dataclass
class Generated:
    source: str
    inputs: list[Node]
    variables: list[Node]
    make_step: Callable[..., Callable[..., tuple]]  # the generated ``bind``
    buffers: list[Buffer]
    kernels: str = ""  # C source of the fused groups, if any

    def bind(self, variables: Any, arenas: Any, symbols: dict[str, int], store: Any) -> Callable[..., tuple]:
        """Allocate the plan's buffers for these sizes and make the step function over them."""
        buffers = [np.empty(resolve(b.shape, symbols), b.dtype) for b in self.buffers]
        return self.make_step(variables, arenas, buffers, symbols, store.rng)


class _Context:
    """What lowering rules ask of the surrounding code: shapes, dtypes, constants."""

    def __init__(self) -> None:
        self.constants: list[np.ndarray] = []

    def shape(self, shape: tuple) -> str:
        dims = ", ".join(str(d) for d in shape)
        return f"({dims},)" if len(shape) == 1 else f"({dims})"

    def dtype(self, name: str) -> str:
        return f"np.{name}"

    def constant(self, node: Node) -> str:
        array = node.attrs["value"].array
        if array.size == 1:
            value = array.reshape(())[()]
            if np.isnan(value):
                text = "np.nan"
            elif np.isinf(value):
                text = "np.inf" if value > 0 else "(-np.inf)"
            else:
                text = str(value) if value >= 0 else f"({value})"
            return text if array.ndim == 0 else f"np.full({array.shape}, {text}, np.{node.dtype})"
        return self.constant_array(node)

    def constant_array(self, node: Node) -> str:
        self.constants.append(node.attrs["value"].array)
        return f"K[{len(self.constants) - 1}]"


def _identifier(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", name)
    if (not base or base[0].isdigit() or keyword.iskeyword(base) or base in _RESERVED
            or re.fullmatch(r"[tbpPD]\d+(_\d+)?|a\d+|pa\d+_\d+|fused\d+", base)):
        base = "v_" + base
    ident, i = base, 1
    while ident in taken:
        i += 1
        ident = f"{base}_{i}"
    taken.add(ident)
    return ident


class _Writer:
    def __init__(self, program: Program, plan: Plan):
        self.program, self.plan = program, plan
        self.ctx = _Context()
        self.ir_name = Namer()
        self.inputs = [n for n in plan.schedule if n.op == "input"]
        self.variables = program.variables()
        self.taken: set[str] = {d for n in self.inputs for d in n.shape if isinstance(d, str)}
        self.names: dict[Node, str] = {}
        self.bind_known: set[Node] = set()
        self.bind_lines: list[str] = []
        self.step_lines: list[str] = []
        for leaf in self.inputs + self.variables:
            self.names[leaf] = _identifier(leaf.name, self.taken)
        self.bind_known.update(self.variables)
        self.group_of = {m: g for g in plan.groups for m in g.members}
        self.kernels: list[str] = []  # C source of each distinct fused loop
        self.kernel_names: dict[str, str] = {}  # a loop's code (no name, no comments) → its function
        self.calls = 0  # fused groups called so far
        self.entry_lines: list[str] = []  # run first in each call: fed arrays the fused loops read, made ready

    def entry(self, line: str) -> None:
        if line not in self.entry_lines:
            self.entry_lines.append(line)

    def ref(self, node: Node) -> str:
        return self.ctx.constant(node) if node.op == "constant" else self.names[node]

    def ref_array(self, node: Node) -> str:
        """Like ``ref``, but a constant is an array: for ops that call array methods on it."""
        return self.ctx.constant_array(node) if node.op == "constant" else self.names[node]

    def place_name(self, place: Any) -> str:
        if isinstance(place, Buffer):
            return f"b{place.index}"
        if isinstance(place, Node):
            return self.names[place]
        base = f"a{place.base}" if isinstance(place.base, int) else f"b{place.base.index}"
        whole = isinstance(place.base, int) and place.start == 0 and len(place.shape) == 1
        if whole:
            return base
        name = f"pa{place.base}_{place.start}" if isinstance(place.base, int) else \
            f"p{place.base.index}_{place.start}"
        if name not in self.taken:
            self.taken.add(name)
            self.bind_lines.append(f"{name} = {base}[{place.start}:{place.stop}]"
                                   f".reshape({self.ctx.shape(place.shape)})")
        return name

    def comment(self, node: Node) -> str:
        return "  ".join(p for p in describe(node, self.ir_name) if p)

    def emit(self, node: Node) -> None:
        if node in self.names or node.op == "constant":
            return
        group = self.group_of.get(node)
        if group is not None:
            if node is group.members[-1]:
                self._call_kernel(group)
            return
        if node in self.plan.arena_views:
            self.names[node] = f"a{self.plan.arena_views[node]}"
            self.bind_known.add(node)
            return
        comment = self.comment(node)
        ref = self.ref_array if is_view(node.op) or node.op in _NEEDS_ARRAYS else self.ref
        args = [ref(i) for i in node.inputs]
        if self.plan.is_view(node):
            self.names[node] = "t" + self.ir_name(node)[1:]
            view = lower(node)(args, node, self.ctx, None)
            if all(i in self.bind_known or i.op == "constant" for i in node.inputs):
                # Made once: check that NumPy really made a view, not a snapshot that would go stale.
                self.bind_known.add(node)
                self.bind_lines.append(f"{self.names[node]} = k.bound_view({view}, {args[0]}, "
                                       f"{self.ir_name(node)!r})  # {comment}")
            else:
                self.step_lines.append(f"{self.names[node]} = {view}  # {comment}")
            return
        place = self.plan.place.get(node)
        if node.op == "concat" and place is not None:
            self._fill_concat(node, place, comment)
            return
        if place is None:
            self.names[node] = "t" + self.ir_name(node)[1:]
            self.step_lines.append(f"{self.names[node]} = {lower(node)(args, node, self.ctx, None)}"
                                   f"  # {comment}")
            return
        self.names[node] = self.place_name(place)
        self.bind_known.add(node)
        self.step_lines.append(f"{lower(node)(args, node, self.ctx, self.names[node])}  # {comment}")

    def _call_kernel(self, group: Group) -> None:
        """One call runs the whole group; its outputs land in their planned places.

        Groups that compile to the same loop (each layer of a deep stack has its own bias
        and activation group) share one C function: the library, and the C compiler's work,
        grow with the kinds of loop, not with the depth of the model."""
        k = self.calls
        self.calls += 1
        name = f"fused{len(self.kernels)}"
        described = {m: self.comment(m) for m in group.members}
        source = c_loops.kernel_source(name, group, described.__getitem__)
        function = self.kernel_names.setdefault(c_loops.loop_code(source), name)
        if function == name:
            self.kernels.append(source)
        for out in group.outputs:
            self.names[out] = self.place_name(self.plan.place[out])
            self.bind_known.add(out)
        operands = ", ".join(self._loop_operand(n) for n in c_loops.pointer_operands(group))
        self.bind_lines.append(f"P{k} = c.pointers([{operands}])")
        self.bind_lines.append(f"D{k} = c.dims({self.ctx.shape(group.shape)})")
        for m in group.members:
            if m.op == "one_hot":  # fed labels, checked before the step changes anything
                labels, depth = self._loop_operand(m.inputs[0]), m.attrs["depth"]
                self.entry(f"if {c_loops.label_check(m.inputs[0].dtype)}({labels}_at, {labels}.size, {depth}) >= 0: "
                           f"k.check_labels({self.names[m.inputs[0]]}, {depth}{site_arg(m)})")
        ir = " ".join(self.ir_name(m) for m in group.members)
        loop = "one loop over rows" if c_loops.runs_by_rows(group) else "one loop"
        self.step_lines.append(f"{function}(P{k}, D{k})  # fused {ir}: {len(group.members)} ops in {loop}")

    def _loop_operand(self, node: Node) -> str:
        """A fused loop's operand; a fed one is copied on entry into a buffer made when the step is
        bound, so that the loop's pointer is fixed and the array contiguous, aligned and in the
        machine's byte order whatever the caller passed (these are labels and targets: small)."""
        if node.op != "input":
            return self.ref(node)
        copy = f"fed_{self.names[node]}"
        if copy not in self.taken:
            self.taken.add(copy)
            self.bind_lines += [f"{copy} = np.empty({self.ctx.shape(node.shape)}, np.{node.dtype})",
                                f"{copy}_at = {copy}.ctypes.data"]
            self.entry(f"np.copyto({copy}, {self.names[node]})  # fed to a fused loop")
        return copy

    def _owned(self, node: Node) -> bool:
        """Does the step own this value's memory (a buffer, a variable, or a view of one)?"""
        return node.is_variable or node in self.plan.place or self.plan.is_view(node) or node.op == "constant"

    def _views_a_variable(self, node: Node) -> bool:
        while self.plan.is_view(node):
            node = node.inputs[0]
        return node.is_variable

    def _fill_concat(self, node: Node, place: Any, comment: str) -> None:
        """Copy in the pieces that were not computed in place; the rest are there already."""
        self.names[node] = self.place_name(place)
        self.bind_known.add(node)  # its buffer is fixed: views of it (a fused loop's operand) are made once
        offset = 0
        for operand in node.inputs:
            size = operand.shape[0]
            value = peel_reshape(operand, self.plan.copies)
            target = self.plan.place.get(value)
            if not (isinstance(target, Piece) and target.base == place and target.start == offset):
                view = self.place_name(Piece(place, offset, offset + size, (size,)))
                self.step_lines.append(f"np.copyto({view}, {self.ref(operand)})  # piece of {comment}")
            offset += size

    def _buffer_check(self) -> str:
        """The first line of ``bind``: a check that it was given the plan's buffers.

        It comes first for CPython's compiler, which gives each name the step reads from ``bind``
        (a cell) an instruction at the start of bind's first block of straight-line code, moving
        the rest of that block each time.  Ended by this branch, that block is a few instructions
        long rather than all of ``bind``: thousands of lines for a deep model, which would compile
        in time growing with the square of its depth."""
        count = len(self.plan.buffers)
        return f"    if len(B) != {count}: raise ValueError(f'bind was given {{len(B)}} buffers; its plan has {count}')"

    def finish(self) -> str:
        # Results are copies: returning the step's own buffers would let the next call
        # overwrite a value the caller kept (a list of losses, a batch of predictions).
        # They are taken before the variables are written, so a returned variable is
        # its value during this step, as in the interpreter.
        results = [self.ref_array(n) + (".copy()" if self._owned(n) else "") for n in self.program.outputs.values()]
        self.step_lines.append(f"results = ({', '.join(results)},)")
        copies = [(var, new) for var, new in self.program.updates.items() if var not in self.plan.in_place_updates]
        sources = {}
        for i, (var, new) in enumerate(copies):
            # A new value that is another variable's memory is read before any variable is written.
            if self._views_a_variable(new):
                sources[var] = f"s{i}"
                self.step_lines.append(f"s{i} = {self.ref(new)}.copy()")
        for var, new in copies:
            self.step_lines.append(f"np.copyto({self.names[var]}, {sources.get(var) or self.ref(new)})  "
                                   f"# {var.name} ← {self.ir_name(new)}")
        self.step_lines.append("return results")
        symbols = sorted({d for n in self.plan.schedule for d in n.shape if isinstance(d, str)})
        head = [f"# {self.program.name}: generated by graphc's NumPy backend from "
                f"{len(self.plan.schedule)} IR nodes", "def bind(V, A, B, S, rng):", self._buffer_check()]
        head += [f"    {symbol} = S[{symbol!r}]" for symbol in symbols]
        if self.variables:
            head.append(f"    {', '.join(self.names[v] for v in self.variables)}, = V")
        head += [f"    a{k} = A[{k}]" for k in range(len(self.program.arenas))]
        head += [f"    b{b.index} = B[{b.index}]" for b in self.plan.buffers]
        lines = head + ["    " + line for line in self.bind_lines]
        lines.append(f"    def {self.program.name}({', '.join(self.names[i] for i in self.inputs)}):")
        lines += ["        " + line for line in self.entry_lines]
        lines += ["        " + line for line in self.step_lines]
        lines.append(f"    return {self.program.name}")
        return "\n".join(lines) + "\n"




def generate(program: Program, plan: Optional[Plan] = None) -> Generated:
    """Source for ``program``, placing values as ``plan`` says (every value fresh without one)."""
    plan = plan or Plan(program.nodes())
    writer = _Writer(program, plan)
    for node in plan.schedule:
        writer.emit(node)
    source = writer.finish()
    namespace: dict[str, Any] = {"np": np, "k": numpy_helpers, "c": c_loops, "K": writer.ctx.constants}
    if writer.kernels:
        functions = c_loops.build("\n\n".join(writer.kernels), [f"fused{i}" for i in range(len(writer.kernels))])
        if functions is None:
            raise KernelBuildFailed(program.name)
        namespace.update(functions)
    exec(compile(source, f"<graphc {program.name}>", "exec"), namespace)
    return Generated(source, writer.inputs, writer.variables, namespace["bind"], plan.buffers,
                     "\n\n".join(writer.kernels))
