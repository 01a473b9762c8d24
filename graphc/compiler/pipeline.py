"""Every stage from a program to a step that runs, in order, the same for every backend:

    rewrite phases → fusion (the backend's policy) → memory plan → plan check
                   → code generation (the backend) → binding (the runtime)

A backend takes part twice: it says which nodes fuse (:meth:`Backend.fusable`,
:meth:`Backend.joins`) and it generates code; everything else is here.  Binding
to a batch's sizes happens at a step's first call with new shapes
(:meth:`graphc.runtime.step.Step._bind`).  ``graphc show --passes`` prints what
each stage made (:func:`stages_text`), and ``GRAPHC_DEBUG`` reports it per compile.
"""
from __future__ import annotations

import time
from typing import Optional

from graphc import debug
from graphc.backends.backend import Backend, KernelBuildFailed
from graphc.compiler import step_cache
from graphc.compiler.compiled_step import CompiledStep
from graphc.ir.node import Node
from graphc.ir.printing import Namer
from graphc.ir.program import Program
from graphc.ir.shapes import fmt as format_shape
from graphc.passes import PassReport, optimize, plan_check
from graphc.passes.cost import estimate
from graphc.passes.fusion import fuse
from graphc.passes.memory import Buffer, Piece, Plan, plan_memory
from graphc.runtime.step import Structure
from graphc.runtime.store import Store


def rewrite(program: Program, passes: bool, keep_text: bool = False) -> tuple[Program, Optional[PassReport]]:
    """Stage 1: the rewrite phases (canonicalize, stabilize, canonicalize, specialize)."""
    return optimize(program, keep_text) if passes else (program, None)


def place(program: Program, backend: Backend, passes: bool, fused: bool = True, reuse: bool = True) -> Plan:
    """Stages 2 and 3: fusion under the backend's policy, then the memory plan (``reuse``: see
    :func:`graphc.passes.memory.plan_memory`).  Without passes, every node in program order,
    each in a buffer of its own: the reference path."""
    if not passes:
        return Plan(program.nodes())
    schedule, groups = (fuse(program, program.nodes(), backend.fusable, backend.joins)
                        if fused and backend.fuses() else (program.nodes(), []))
    return plan_memory(program, schedule, groups, reuse)


def check(program: Program, plan: Plan) -> None:
    """Stage 4, when asked for (``GRAPHC_VERIFY_PLAN=1``): replay the plan element by element."""
    if plan_check.requested() and not plan_check.verify(program, plan):
        debug.emit(1, f"graphc: the memory plan of {program.name} is too large to replay; not checked")


def build(program: Program, store: Store, structure: Structure, backend: Backend, passes: bool = True,
          reuse: bool = True) -> CompiledStep:
    """Every stage, with generated code kept by the structure of the rewritten program: an equal
    program compiled again (another function sharing a model) reuses it."""
    started = time.perf_counter()
    optimized, report = rewrite(program, passes)
    key = step_cache.structural_key(optimized, backend.cache_tag(passes) + ("" if reuse else "-no-reuse"))
    cached = step_cache.lookup(key)
    if cached is None:
        plan = place(optimized, backend, passes, reuse=reuse)
        try:
            generated = backend.generate(optimized, plan)
        except KernelBuildFailed:
            plan = place(optimized, backend, passes, fused=False, reuse=reuse)
            generated = backend.generate(optimized, plan)
        check(optimized, plan)
        step_cache.store(key, (generated, plan))
    else:
        generated, plan = cached
    step = CompiledStep(optimized, generated, store, structure, source_program=program, plan=plan,
                        cache_hit=cached is not None)
    _report(program, report, step, time.perf_counter() - started)
    return step


def _report(program: Program, report: Optional[PassReport], step: CompiledStep, seconds: float) -> None:
    """What ``GRAPHC_DEBUG`` asks to see of this compile; each text is built only when shown."""
    debug.emit(1, lambda: f"graphc: compiled {program.name}: {len(program.nodes())} → {len(step.program.nodes())} "
                          f"nodes, {len(step.plan.buffers)} buffers, {seconds * 1e3:.1f} ms, "
                          f"cache {'hit' if step.cache_hit else 'miss'}")
    if report is not None:
        debug.emit(2, report.summary)
    debug.emit(2, lambda: "cost " + estimate(step.plan).format())
    debug.emit(3, step.program.format)
    debug.emit(4, lambda: step.source)


def stages_text(step: CompiledStep, batches: tuple[int, ...] = (64, 128, 512)) -> str:
    """What each stage made of ``step``'s program, in order: the program after each rewrite
    phase, the fused loops with their members, the buffers, the generated code's size and the
    estimated cost.  The rewrites are run again with their texts kept: the same rules on the
    same program give the same phases."""
    before = step.source_program
    _, report = rewrite(before, True, keep_text=True)
    out = [f"==== before optimization: {len(before.nodes())} nodes ====", before.format()]
    for phase in report.phases if report is not None else ():
        fired = ", ".join(f"{rule}×{count}" for rule, count in sorted(phase.fired.items())) or "nothing fired"
        out += ["", f"==== after {phase.name}: {phase.nodes_before} → {phase.nodes_after} nodes ({fired}) ====",
                phase.text]
    plan = step.plan
    out += ["", f"==== fusion: {len(plan.groups)} fused loops ===="]
    names = _value_names(step.program)
    for i, group in enumerate(plan.groups):
        members = ", ".join(f"{names[m]} = {m.op}" for m in group.members)
        out.append(f"loop {i} over {format_shape(group.shape)}: {members}")
    out += ["", f"==== memory plan: {len(plan.buffers)} buffers, "
                f"{len(plan.in_place_updates)} variables updated in place ===="]
    tenants: dict[int, list[str]] = {}
    for node, where in plan.place.items():
        buffer = where.base if isinstance(where, Piece) else where
        if isinstance(buffer, Buffer):
            tenants.setdefault(buffer.index, []).append(names[node])
    for buffer in plan.buffers:
        out.append(f"buffer {buffer.index}: {buffer.dtype}{format_shape(buffer.shape)} holds "
                   + ", ".join(tenants.get(buffer.index, ["nothing"])))
    source, kernels = step.source, step.generated.kernels
    out += ["", f"==== code generation: {len(source.splitlines())} lines of step source, "
                f"{len(kernels.splitlines()) if kernels else 0} lines of kernels ===="]
    out += [f"cost {estimate(plan, batch).format()}" for batch in batches]
    return "\n".join(out) + "\n"


def _value_names(program: Program) -> dict[Node, str]:
    """The name the printed program (``show step``) gives each node: they are named in order."""
    name = Namer()
    return {node: name(node) for node in program.nodes()}
