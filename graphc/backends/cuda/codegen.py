"""Lower an optimized, planned program to a :class:`DeviceProgram`.

The memory plan is the CPU's: its buffers become regions of one device arena,
the parameter arena stays one flat region the optimizer updates in place, and
a gradient is computed straight into its slice of the packed gradient.  What
the GPU adds is only how each node runs:

* a fused elementwise group (or a lone elementwise op) is one generated kernel;
  operands that are transposed or broadcast views are read through strides, so
  layout ops cost nothing; a group of row values (a softmax and its
  cross-entropy, reductions over the row included) is one kernel with a thread
  per row;
* ``matmul`` is a cuBLAS GEMM, with a transposed operand passed as a flag;
* ``sum`` over the leading or trailing axes of a contiguous array (bias
  gradients, the batch mean) is a GEMM against a vector of ones; other
  reductions are a kernel with a block per output where each output sums many
  elements (or a number that depends on the batch), else one thread per output;
* ``one_hot``, ``normal`` and ``uniform`` are kernels; random numbers come from
  Philox, keyed by the op and counted by a step counter on the device;
* a one-element elementwise value (a step counter, a bias correction, a
  division by N) has no kernel of its own: each kernel that reads it computes
  it inline, as it does ``numel``, and the step's one-element results and new
  values of variables are stored by one scalar kernel at the end.  Where that
  cannot be done (a reader that is not a kernel, or an operand overwritten
  before a reader runs) the value is stored by its own kernel after all: the
  program is lowered again with it stored (:func:`lower`);
* updates the plan could not place in the variable are copies at the end.
"""
from __future__ import annotations

import re
from typing import Callable, Optional, Sequence

import numpy as np

from graphc.lowering.c_expressions import C_TYPES, expression, literal, supports
from graphc.lowering.cuda_rules import CudaRule
from graphc.backends import loops, row_groups
from graphc.backends.cuda.kernels import (BLOCK, INDEX, PRELUDE, RNG_ADVANCE, WARP, KernelText, axis_indices,
                                         block_reduction, offset)
from graphc.backends.cuda.device_program import (Copy, DeviceProgram, Gemm, Launch, Region, Size, View,
                                          row_major_strides)
from graphc.errors import DistributedError
from graphc.ir.node import Node
from graphc.ir.registry import LEAF, PRIMITIVES, is_view, lowering
from graphc.ir.printing import Namer, describe
from graphc.ir.site import at_site
from graphc.passes.fusion import Group
from graphc.parallel.communicator import active
from graphc.passes.memory import Buffer, Piece, Plan
from graphc.ir.program import Program
from graphc.ir.shapes import Shape

VARIABLE_KINDS = ("variable", "arena")
GEMM_SUM_MIN = 64  # reduce by GEMM against ones from this many summed elements on
BLOCK_REDUCE_MIN = WARP  # a block per output from this many reduced elements on (or a symbolic count)
INLINE_MAX = 4000  # characters: a scalar whose inline expression is longer is stored instead


def one_element(node: Node) -> bool:
    """Has ``node`` a static shape of exactly one element?"""
    return all(isinstance(d, int) for d in node.shape) and int(np.prod(node.shape, dtype=np.int64)) == 1


def lowers(op: str) -> bool:
    """Can the CUDA backend lower ``op``?"""
    return PRIMITIVES[op].kind == LEAF or supports(op) or lowering(op, "cuda") is not None


class _Lowering:
    def __init__(self, program: Program, plan: Plan, stored: frozenset = frozenset()):
        self.program, self.plan = program, plan
        self.prefix = re.sub(r"\W", "_", program.name)
        self.regions: dict[str, Region] = {}
        self.steps: list = []
        self.kernels: list[str] = []
        self.kernel_names: list[str] = []
        self.views: dict[Node, View] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.ones: dict[str, Size] = {}
        self.group_of = {m: g for g in plan.groups for m in g.members}
        self.ir_name = Namer()
        self.random_ops = 0
        self.labels: list[tuple[str, int, str]] = []
        self.rng = ""
        self.variables: list[tuple[Node, View]] = []
        self.arenas: list[str] = []
        self.writes: list[set[str]] = []        # the regions each step writes
        self.defined_at: dict[Node, int] = {}   # an inline scalar → the step count where it would have run
        self.needs_memory: set[Node] = set()     # inline scalars found to need a place of their own
        self.inline = self._inline_scalars(stored)
        self._leaves()

    def _inline_scalars(self, stored: frozenset) -> set[Node]:
        """The one-element elementwise values computed where they are read: lone ops and whole fused
        groups of them, except those in ``stored`` and those whose place others read as their own (a
        piece of a packed gradient or of a concat).  A new value the plan put in its variable's place
        is among them: the scalar kernel stores it there at the end, and until then every reader
        computes it from the old value."""
        chosen: set[Node] = set()
        for node in self.plan.schedule:
            group = self.group_of.get(node)
            unit = group.members if group is not None else [node]
            if node is not unit[-1]:
                continue
            if all(supports(m.op) and not is_view(m.op) and one_element(m) and m not in stored
                   and not isinstance(self.plan.place.get(m), Piece)
                   and m not in self.plan.arena_views for m in unit):
                chosen.update(unit)
        return chosen

    # ---- memory -------------------------------------------------------------
    def region(self, name: str, size: Size, dtype: str, kind: str) -> str:
        self.regions.setdefault(name, Region(name, size, dtype, kind))
        return name

    def whole(self, region: str, shape: tuple) -> View:
        r = self.regions[region]
        return View(region, 0, tuple(shape), row_major_strides(shape), r.dtype)

    def _leaves(self) -> None:
        in_arena: dict[Node, View] = {}
        for k, group in enumerate(self.program.arenas):
            name = self.region(f"arena{k}", Size.of([sum(int(np.prod(v.shape)) for v in group)]), group[0].dtype,
                               "arena")
            self.arenas.append(name)
            start = 0
            for var in group:
                in_arena[var] = View(name, start, var.shape, row_major_strides(var.shape), var.dtype)
                start += int(np.prod(var.shape))
        for var in self.program.variables():
            view = in_arena.get(var)
            if view is None:
                view = self.whole(self.region(f"var:{var.name}", Size.of(var.shape), var.dtype, "variable"),
                                  var.shape)
            self.views[var] = view
            self.variables.append((var, view))
        self.inputs = [n for n in self.plan.schedule if n.op == "input"]
        for node in self.inputs:
            self.views[node] = self.whole(self.region(f"in:{node.name}", Size.of(node.shape), node.dtype, "input"),
                                          node.shape)
        for b in self.plan.buffers:
            self.region(f"b{b.index}", Size.of(b.shape), b.dtype, "buffer")

    def scratch(self, node: Node, label: str = "") -> View:
        name = self.region(f"t{self.ir_name(node)[1:]}{label}", Size.of(node.shape), node.dtype, "scratch")
        return self.whole(name, node.shape)

    def view(self, node: Node) -> View:
        """Where ``node``'s value is, materializing it if it has no place of its own.  Asked of an
        inline scalar, the answer is a place no kernel fills: the scalar is marked to be stored."""
        root = self.scalar_root(node)
        if root in self.inline:
            self.needs_memory.add(root)
        if node in self.views:
            return self.views[node]
        view = self._place(node)
        if view is None:
            view = self._derived(node)
        self.views[node] = view
        return view

    def _place(self, node: Node) -> Optional[View]:
        if node in self.plan.arena_views:
            return self.whole(self.arenas[self.plan.arena_views[node]], node.shape)
        place = self.plan.place.get(node)
        if isinstance(place, Buffer):
            return self.whole(f"b{place.index}", node.shape)
        if isinstance(place, Piece):
            region = self.arenas[place.base] if isinstance(place.base, int) else f"b{place.base.index}"
            return View(region, place.start, node.shape, row_major_strides(node.shape), node.dtype)
        if isinstance(place, Node):
            # in the place of an inline scalar: that place is free, the scalar is never stored there
            return self._place(place) if place in self.inline else self.view(place)
        return None

    def _derived(self, node: Node) -> View:
        """A view op's view of its operand; a constant's region; else a region of its own (a value
        the plan did not place: computed there when it is emitted, or here for ``numel``)."""
        op = node.op
        if op == "constant":
            name = f"k{len(self.constants)}"
            self.constants[name] = np.ascontiguousarray(node.attrs["value"].array, dtype=node.dtype)
            return self.whole(self.region(name, Size.of(node.shape), node.dtype, "constant"), node.shape)
        if is_view(op):
            source = self.view(node.inputs[0])
            if op == "stop_gradient":
                return source
            if op == "slice":
                start = node.attrs["start"]
                assert source.strides[0].static
                return View(source.region, source.offset + start * source.strides[0].const, node.shape,
                            source.strides, node.dtype)
            if op == "transpose":
                perm = node.attrs["perm"]
                return View(source.region, source.offset, node.shape, tuple(source.strides[p] for p in perm),
                            node.dtype)
            if op == "broadcast_to":
                lead = len(node.shape) - len(source.shape)
                strides = [Size(0)] * lead + [Size(0) if d == 1 and t != 1 else s for d, t, s in
                                              zip(source.shape, node.shape[lead:], source.strides)]
                return View(source.region, source.offset, node.shape, tuple(strides), node.dtype)
            if op == "reshape":
                if not source.contiguous:
                    source = self.scratch(node.inputs[0], "c")
                    self.fill(source, node.inputs[0], "contiguous copy for a reshape")
                return View(source.region, source.offset, node.shape, row_major_strides(node.shape), node.dtype)
        target = self.scratch(node)
        if op == "numel":
            self.views[node] = target
            self.fill(target, node, "the size as a value")
        return target

    # ---- steps --------------------------------------------------------------
    def comment(self, node: Node) -> str:
        return "  ".join(p for p in describe(node, self.ir_name) if p)

    def new_kernel(self, kind: str) -> KernelText:
        return KernelText(f"{self.prefix}_k{len(self.kernels)}_{kind}")

    def add_kernel(self, text: KernelText, loop: list[str], count: Size, nodes: tuple, note: str,
                   reads_first: bool = False, per_block: Sequence[str] = ()) -> None:
        """Add the launch of a written kernel over ``count`` outputs.  ``reads_first``: each thread reads
        all it reads before it writes, so the kernel's own writes cannot change an operand of a scalar it
        computes inline.  ``per_block``: a block per output, these its declarations (the launch asks for
        a block's worth of threads per output, so the grid has a block per output up to its limit)."""
        written = text.written_regions()
        self._check_inline_reads(text, set() if reads_first else written)
        self.kernels.append(text.source(loop, note, per_block))
        self.kernel_names.append(text.name)
        threads = count * Size(BLOCK) if per_block else count
        self.append(Launch(text.name, threads, text.launch_args(count), nodes, note), written)

    def append(self, step: object, written: set[str]) -> None:
        self.steps.append(step)
        self.writes.append(written)

    def _check_inline_reads(self, text: KernelText, own: set[str]) -> None:
        """Mark to be stored each scalar computed inline in ``text`` that reads a region written since the
        scalar's place in the schedule (by an earlier step or by this kernel): the value it reads there
        may no longer be the one the scalar was computed from.  Regions are compared whole."""
        for scalar, region in text.inline_reads:
            since = self.defined_at.get(scalar)
            if since is None or region in own or any(region in w for w in self.writes[since:]):
                self.needs_memory.add(scalar)

    def scalar_root(self, node: Node) -> Node:
        """The value a view of one element (or a broadcast of one) repeats; else ``node`` itself."""
        while is_view(node.op) and one_element(node.inputs[0]):
            node = node.inputs[0]
        return node

    def computed_inline(self, node: Node) -> bool:
        """Is ``node`` one element a kernel computes without reading a place of its own?"""
        root = self.scalar_root(node)
        return one_element(node) and (root in self.inline or root.op in ("constant", "numel"))

    def inline_value(self, node: Node, text: KernelText) -> str:
        """The C expression of inline scalar ``node``, from its operands (inline in turn, or read)."""
        text.expanding.append(node)
        operands = [self.operand(i, text, node.shape, set(), {}) for i in node.inputs]
        text.expanding.pop()
        value = f"(({C_TYPES[node.dtype]}){expression(node, operands)})"
        if len(value) > INLINE_MAX:
            self.needs_memory.add(node)
        return value

    def operand(self, node: Node, text: KernelText, loop_shape: tuple, axes: set[int],
                local: dict[Node, str], flat: str = "i") -> str:
        """The C expression reading ``node`` inside a kernel over ``loop_shape`` (at flat index ``flat``)."""
        if node in local:
            return local[node]
        if node.op == "constant" and node.attrs["value"].array.size == 1:
            return literal(node.attrs["value"].array.reshape(()).item(), node.dtype)
        if node.op == "numel":
            size = Size.of([node.inputs[0].shape[a] for a in node.attrs["axes"]])
            return f"(({C_TYPES[node.dtype]}){text.size(size)})"
        root = self.scalar_root(node)
        if root in self.inline:
            return self.inline_value(root, text)
        view = self.view(node)
        if text.expanding:  # an operand of an inline scalar: one element, the same for every thread
            text.inline_reads.append((text.expanding[-1], view.region))
            return f"{text.pointer(view, writes=False)}[0]"
        index, used = offset(view, loop_shape, text, flat)
        axes |= used
        return f"{text.pointer(view, writes=False)}[{index}]"

    def elementwise(self, members: list[Node], inputs: list[Node], outputs: list[Node], shape: tuple,
                    kind: str, note: str) -> None:
        text = self.new_kernel(kind)
        _, body = loops.elementwise(_KernelTarget(self, text), members, inputs, outputs, shape)
        self.add_kernel(text, body, Size.of(shape), tuple(members) or tuple(outputs), note)

    def fill(self, target: View, node: Node, note: str) -> None:
        """Write ``node``'s value (read through its view, or computed inline) contiguously into ``target``."""
        text = self.new_kernel("copy")
        axes: set[int] = set()
        value = self.operand(node, text, target.shape, axes, {})
        index, used = offset(target, target.shape, text)
        loop = axis_indices(target.shape, axes | used, text)
        loop.append(loops.store(f"{text.pointer(target, writes=True)}[{index}]", value))
        self.add_kernel(text, loop, Size.of(target.shape), (node,), note)

    def copy(self, target: View, node: Node, note: str) -> None:
        """``target`` ← ``node``: a memory copy when the source is contiguous, else a kernel."""
        if node.op == "constant" and node.attrs["value"].array.size == 1 or node.op == "numel" \
                or self.scalar_root(node) in self.inline:
            self.fill(target, node, note)
            return
        source = self.view(node)
        if source.contiguous:
            if (source.region, source.offset) != (target.region, target.offset):
                self.append(Copy(target, source, Size.of(target.shape), (node,), note), {target.region})
        else:
            self.fill(target, node, note)

    def gemm_operand(self, node: Node) -> tuple[View, bool, Size]:
        """A row-major matrix operand as cuBLAS sees it: the view, whether it is transposed, its ld."""
        view = self.view(node)
        rows, cols = view.shape
        if view.contiguous:
            return view, False, Size.of([cols])
        if view.strides[0] == Size() and view.strides[1] == Size.of([rows]):
            return view, True, Size.of([rows])
        dense = self.scratch(node, "c")
        self.fill(dense, node, "contiguous copy for a GEMM")
        return dense, False, Size.of([cols])

    def gemm(self, a: tuple[View, bool, Size], b: tuple[View, bool, Size], c: View, nodes: tuple, note: str) -> None:
        """Row-major c[M,N] = a[M,K] · b[K,N], as the column-major product cᵀ = bᵀ · aᵀ."""
        (av, at, lda), (bv, bt, ldb) = a, b
        m, k = (Size.of([d]) for d in av.shape)
        n = Size.of([bv.shape[1]])
        self.append(Gemm(bt, at, n, m, k, bv, ldb, av, lda, c, n, c.dtype, nodes, note), {c.region})

    def matmul(self, node: Node) -> None:
        a, b = (self.gemm_operand(i) for i in node.inputs)
        self.gemm(a, b, self.view(node), (node,), self.comment(node))

    def reduce(self, node: Node) -> None:
        """A sum or max: a GEMM against ones where that fits, else a kernel over the outputs, with a block
        per output where each sums many elements (or a batch-sized number of them)."""
        source = node.inputs[0]
        axes = tuple(node.attrs["axes"])
        if node.op == "sum" and self._sum_by_gemm(self.view(source), axes, node):
            return
        text = self.new_kernel(node.op)
        shape = source.shape
        kept = [a for a in range(len(shape)) if a not in axes]
        view = self.view(source)
        kept_shape = tuple(shape[a] for a in kept)
        red_shape = tuple(shape[a] for a in axes)
        outputs, summed = Size.of(kept_shape), Size.of(red_shape)
        kept_indices = axis_indices(kept_shape, set(range(len(kept))), text, "i")
        element_indices = axis_indices(red_shape, set(range(len(axes))), text, "r")
        terms = [f"i{j} * {text.size(view.strides[a])}" for j, a in enumerate(kept)]
        terms += [f"r{j} * {text.size(view.strides[a])}" for j, a in enumerate(axes)]
        element = f"{text.pointer(view, writes=False)}[{' + '.join(terms) or '0'}]"
        out = f"{text.pointer(self.view(node), writes=True)}[i]"
        if summed.static and summed.const < BLOCK_REDUCE_MIN:
            declare, update = loops.accumulation(node.op, node.dtype, "acc", element, "r")
            body = [*kept_indices, declare,
                    *loops.counted(INDEX, "r", text.size(summed), [*element_indices, update]),
                    loops.store(out, f"({C_TYPES[node.dtype]})acc")]
            self.add_kernel(text, body, outputs, (node,), self.comment(node))
            return
        declarations, body = block_reduction(node.op, node.dtype, element, text.size(summed), element_indices, out)
        self.add_kernel(text, [*kept_indices, *body], outputs, (node,), self.comment(node) + "  (a block per output)",
                        per_block=declarations)

    def _sum_by_gemm(self, x: View, axes: tuple, node: Node) -> bool:
        """A sum over leading or trailing axes of a contiguous float array, as a GEMM against ones."""
        ndim = len(x.shape)
        if node.dtype not in ("float32", "float64") or not x.contiguous or not axes:
            return False
        summed = Size.of([x.shape[a] for a in axes])
        kept = Size.of([x.shape[a] for a in range(ndim) if a not in axes])
        if summed.static and summed.const < GEMM_SUM_MIN:
            return False
        leading = axes == tuple(range(len(axes)))
        trailing = axes == tuple(range(ndim - len(axes), ndim))
        if not (leading or trailing):
            return False
        name = self.region(f"ones:{node.dtype}:{summed}", summed, node.dtype, "ones")
        self.ones[name] = summed
        summed_shape = tuple(x.shape[a] for a in axes)
        ones = View(name, 0, summed_shape, row_major_strides(summed_shape), node.dtype)
        out, one, note = self.view(node), Size(), self.comment(node) + "  (a GEMM against ones)"
        if leading:  # out[1, kept] = ones[1, summed] · x[summed, kept]
            gemm = Gemm(False, False, kept, one, summed, x, kept, ones, summed, out, kept, node.dtype, (node,), note)
        else:        # out[kept, 1] = x[kept, summed] · ones[summed, 1]
            gemm = Gemm(False, False, one, kept, summed, ones, one, x, summed, out, one, node.dtype, (node,), note)
        self.append(gemm, {out.region})
        return True

    def check_labels(self, node: Node) -> None:
        """Fed labels are checked on the host before they are copied in, as the NumPy backend does;
        a label out of range would otherwise give a zero row, silently."""
        labels = node.inputs[0]
        if labels.op == "input":
            self.labels.append((labels.name, node.attrs["depth"], at_site(node.site) if node.site else ""))

    def one_hot(self, node: Node) -> None:
        self.check_labels(node)
        text = self.new_kernel("one_hot")
        labels = self.view(node.inputs[0])
        depth = node.attrs["depth"]
        index, used = offset(labels, labels.shape, text, "l")
        loop = [f"const long long l = i / {depth};", f"const long long j = i % {depth};"]
        loop += axis_indices(labels.shape, used, text, "l")
        label = f"{text.pointer(labels, writes=False)}[{index}]"
        loop.append(loops.store(f"{text.pointer(self.view(node), writes=True)}[i]",
                                loops.one_hot_value(node.dtype, label, 'j')))
        self.add_kernel(text, loop, Size.of(node.shape), (node,), self.comment(node))

    def random(self, node: Node) -> None:
        if not self.rng:
            self.rng = self.region("rng", Size(), "uint64", "rng")
        key = self.random_ops
        self.random_ops += 1
        text = self.new_kernel(node.op)
        counter = text.pointer(self.whole(self.rng, ()), writes=False)
        out = text.pointer(self.view(node), writes=True)
        double = node.dtype == "float64"
        loop = [f"uint32_t c[4] = {{(uint32_t)i, (uint32_t)((unsigned long long)i >> 32), "
                f"(uint32_t){counter}[0], (uint32_t)({counter}[0] >> 32)}};",
                f"graphc_philox(c, {key}u, 0x5eedu);"]
        if double:
            unit = "* 1.1102230246251565e-16"
            loop += [f"const double u1 = ((double)((((uint64_t)c[0]) << 21) ^ (c[1] >> 11)) + 1.0) {unit};",
                     f"const double u2 = (double)((((uint64_t)c[2]) << 21) ^ (c[3] >> 11)) {unit};"]
            log, sqrt, cos, two_pi, t = "log", "sqrt", "cos", "6.283185307179586", "double"
        else:
            loop += ["const float u1 = ((float)(c[0] >> 8) + 1.0f) * 5.9604645e-08f;",
                     "const float u2 = (float)(c[1] >> 8) * 5.9604645e-08f;"]
            log, sqrt, cos, two_pi, t = "logf", "sqrtf", "cosf", "6.2831855f", "float"
        value = "u2" if node.op == "uniform" else f"({t})({sqrt}(-2 * {log}(u1)) * {cos}({two_pi} * u2))"
        loop.append(loops.store(f"{out}[i]", value))
        self.add_kernel(text, loop, Size.of(node.shape), (node,), self.comment(node))

    def concat(self, node: Node) -> None:
        if node in self.plan.arena_views:
            return
        target = self.view(node)
        start = 0
        for operand in node.inputs:
            size = int(operand.shape[0])
            piece = View(target.region, target.offset + start, (size,), (Size(),), node.dtype)
            value = operand.inputs[0] if operand.op == "reshape" else operand
            placed = self.plan.place.get(value)
            computed_there = (isinstance(placed, Piece) and isinstance(placed.base, Buffer)
                              and f"b{placed.base.index}" == target.region and placed.start == start)
            if not computed_there:
                self.copy(piece, operand, f"piece of {self.comment(node)}")
            start += size

    def allreduce(self, node: Node) -> None:
        """In one process the mean or sum over ranks is the value itself: a copy.  Over several
        ranks it is to be an NCCL call inside the captured step (docs/distributed.md), not built yet."""
        ranks = active().size
        if ranks > 1:
            raise DistributedError(f"the CUDA backend cannot yet lower an allreduce over {ranks} ranks (it is to "
                                   f"call NCCL); train on several ranks with --backend numpy")
        self.copy(self.view(node), node.inputs[0], self.comment(node))

    # ---- the whole step --------------------------------------------------------
    def emit(self, node: Node) -> None:
        group = self.group_of.get(node)
        if node in self.inline:  # computed by its readers: its operands are ready from this step on
            for member in (group.members if group is not None and node is group.members[-1] else [node]):
                self.defined_at[member] = len(self.steps)
            return
        if group is not None:
            if node is group.members[-1]:
                self.group(group)
            return
        op = node.op
        if is_view(op) and node in self.plan.place:  # a layout op the plan gave a buffer of its own
            self.placed_view(node)
        elif supports(op):
            self.elementwise([node], list(dict.fromkeys(node.inputs)), [node], node.shape, op, self.comment(node))
        elif node.kind != LEAF:
            rule = lowering(op, "cuda")
            if rule is None:
                raise NotImplementedError(f"the CUDA backend has no lowering for {op}")
            code = LOWERINGS[rule]
            if code is not None:
                code(self, node)

    def placed_view(self, node: Node) -> None:
        """Copy the view into its buffer (a reshape of a strided value in one kernel, in the source's shape)."""
        place, source = self._place(node), node.inputs[0]
        if node.op == "reshape" and not self.view(source).contiguous:
            shaped = View(place.region, place.offset, source.shape, row_major_strides(source.shape), node.dtype)
            self.fill(shaped, source, self.comment(node))
        else:
            self.views[node] = self._derived(node)
            self.copy(place, node, self.comment(node))
        self.views[node] = place

    def group(self, group: Group) -> None:
        ir = " ".join(self.ir_name(m) for m in group.members)
        note = f"fused {ir}: {len(group.members)} ops in one kernel"
        if row_groups.is_row_group(group.members):
            self.rows(group, note + ", a thread per row")
        else:
            self.elementwise(group.members, group.inputs, group.outputs, group.shape, "fused", note)

    def rows(self, group: Group, note: str) -> None:
        """A group of row values as one kernel, a thread per row (see :mod:`graphc.backends.row_groups`)."""
        for node in group.members:
            if node.op == "one_hot":
                self.check_labels(node)
        text = self.new_kernel("rows")
        _, body = loops.rows(_KernelTarget(self, text), group.members, group.outputs)
        self.add_kernel(text, body, Size.of([group.members[0].shape[0]]), tuple(group.members), note)

    def scalar_kernel(self, stores: list[tuple[View, Node]]) -> None:
        """The step's one-element results and new values of variables, in one thread that computes
        every value before it stores any: updates that read each other's variables see the old values,
        and no snapshot is needed."""
        text = self.new_kernel("scalars")
        values = [self.operand(node, text, target.shape, set(), {}) for target, node in stores]
        body = [f"const {C_TYPES[target.dtype]} s{k} = {value};" for k, ((target, _), value)
                in enumerate(zip(stores, values))]
        body += [loops.store(f"{text.pointer(target, writes=True)}[0]", f"s{k}") for k, (target, _)
                 in enumerate(stores)]
        names = ", ".join(self.ir_name(node) for _, node in stores)
        self.add_kernel(text, body, Size(), tuple(node for _, node in stores),
                        f"the step's scalars {names}, computed inline", reads_first=True)

    def finish(self) -> DeviceProgram:
        outputs, scalars = [], []
        for name, node in self.program.outputs.items():
            if self.computed_inline(node):
                view = self.scratch(node, "out")
                scalars.append((view, node))
                outputs.append((name, view))
                continue
            view = None if node.op in ("numel",) or node.op == "constant" else self.view(node)
            if view is None or not view.contiguous or self.regions[view.region].kind in VARIABLE_KINDS:
                view = self.scratch(node, "out")
                self.copy(view, node, f"result {name}")
            outputs.append((name, view))
        pending = []
        for var, new in self.program.updates.items():
            if self.computed_inline(new):
                scalars.append((self.views[var], new))
                continue
            if var in self.plan.in_place_updates:
                continue
            source = self.view(new) if new.op not in ("numel", "constant") else None
            if source is not None and self.regions[source.region].kind in VARIABLE_KINDS:
                snapshot = self.scratch(new, "old")  # read every old value before writing any
                self.copy(snapshot, new, f"{var.name}'s new value, before variables change")
                self.views[new] = snapshot
            pending.append((var, new))
        if scalars:
            self.scalar_kernel(scalars)
        for var, new in pending:
            self.copy(self.views[var], new, f"{var.name} ← {self.ir_name(new)}")
        written = sorted({self.views[v].region for v in self.program.updates})
        if self.rng:
            self.append(Launch(RNG_ADVANCE, Size(), (self.whole(self.rng, ()),), (), "next random step"), {self.rng})
        return DeviceProgram(self.program.name, self.regions, self.steps, self.kernels, self.kernel_names,
                             [(n, f"in:{n.name}") for n in self.inputs], self.variables, self.arenas, outputs,
                             written, self.constants, self.ones, self.rng, self.labels)


# The code of each CUDA rule an op names where it is defined (graphc.primitives); a view and numel
# need none of their own, nor do leaves, and elementwise ops use their C expression.
LOWERINGS: dict[CudaRule, Optional[Callable[[_Lowering, Node], None]]] = {
    CudaRule.VIEW: None, CudaRule.INLINE: None, CudaRule.MATMUL: _Lowering.matmul, CudaRule.REDUCE: _Lowering.reduce,
    CudaRule.ONE_HOT: _Lowering.one_hot, CudaRule.RANDOM: _Lowering.random, CudaRule.CONCAT: _Lowering.concat,
    CudaRule.ALLREDUCE: _Lowering.allreduce,
}


class _KernelTarget(loops.Target):
    """A kernel's loop body at flat index i (one thread each; the grid-stride loop is the kernel's).
    Operands are views, read through their strides.  Inside a loop over the columns c of a row,
    f0 and f1 are the row and column and f the flat index of the row value's element."""
    index_type = INDEX
    flat = True
    numpy_order = False

    def __init__(self, lowering: _Lowering, text: KernelText):
        self.lowering, self.text = lowering, text
        self.axes: set[int] = set()

    def read(self, node: Node, shape: Shape, at: loops.At) -> str:
        axes = set() if at == loops.At.COLUMN else self.axes  # a column's indices are declared per column
        return self.lowering.operand(node, self.text, shape, axes, {}, "f" if at == loops.At.COLUMN else "i")

    def write(self, node: Node, shape: Shape, at: loops.At) -> str:
        out = self.lowering.view(node)
        index, used = offset(out, shape, self.text, "f" if at == loops.At.COLUMN else "i")
        if at != loops.At.COLUMN:
            self.axes |= used
        return f"{self.text.pointer(out, writes=True)}[{index}]"

    def pointer(self, node: Node) -> str:
        return self.text.pointer(self.lowering.view(node), writes=True)

    def extent(self, dims: Sequence) -> Optional[str]:
        return self.text.extent(dims)

    def comment(self, node: Node) -> str:
        return f"  // {self.lowering.comment(node)}"

    def column_indices(self, columns: int, statement: str) -> str:
        names = [f"{n} = {v}" for n, v in (("f0", "i"), ("f1", "c"), ("f", f"i * {columns} + c"))
                 if re.search(rf"\b{n}\b", statement)]
        return f"const {INDEX} {', '.join(names)}; " if names else ""


def lower(program: Program, plan: Plan) -> DeviceProgram:
    """Lower with every one-element elementwise value inline; where some of them turn out to need a
    place of their own, lower again with those (and their fused groups) stored.  Each round stores
    more, so this ends."""
    stored: frozenset = frozenset()
    while True:
        lowering = _Lowering(program, plan, stored)
        for node in plan.schedule:
            lowering.emit(node)
        device = lowering.finish()
        if not lowering.needs_memory:
            return device
        more = set(lowering.needs_memory)
        for node in lowering.needs_memory:
            group = lowering.group_of.get(node)
            more.update(group.members if group is not None else ())
        stored = stored | more


def translation_unit(device: DeviceProgram) -> str:
    """The complete CUDA source of a program, compilable as printed."""
    return PRELUDE + "\n" + "\n\n".join(device.kernels) + "\n"


