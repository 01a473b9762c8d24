"""The optimizer: phases of named rewrite rules, run in order over a program.

    canonicalize → stabilize → canonicalize → specialize

Canonicalization runs again after stabilization because the stable forms open
new simplifications (a one-hot row sum becomes a broadcast of ones, which then
multiplies away).  The report keeps, for each phase, the node count and which
rules fired, and optionally the program text, for ``graphc show --passes``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from graphc.passes import canonicalize, specialize, stabilize
from graphc.passes.rewrite import Phase, apply_phase
from graphc.ir.program import Program

PIPELINE = [("canonicalize", canonicalize.RULES), ("stabilize", stabilize.RULES),
            ("canonicalize", canonicalize.RULES), ("specialize", specialize.RULES)]


@dataclass
class PhaseRecord:
    name: str
    nodes_before: int
    nodes_after: int
    fired: dict[str, int]
    text: str = ""


@dataclass
class PassReport:
    phases: list[PhaseRecord] = field(default_factory=list)

    def summary(self) -> str:
        lines = []
        for p in self.phases:
            fired = ", ".join(f"{k}×{v}" for k, v in sorted(p.fired.items())) or "nothing fired"
            lines.append(f"{p.name:<13} {p.nodes_before:>4} → {p.nodes_after:<4} nodes   {fired}")
        return "\n".join(lines)


def optimize(program: Program, keep_text: bool = False) -> tuple[Program, PassReport]:
    report = PassReport()
    for name, rules in PIPELINE:
        before = len(program.nodes())
        phase = Phase(name, rules)
        program = apply_phase(program, phase)
        report.phases.append(PhaseRecord(name, before, len(program.nodes()), phase.fired,
                                         program.format() if keep_text else ""))
    return program, report
