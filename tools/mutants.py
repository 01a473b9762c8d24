"""Mutation sampling: do the tests of a module fail when its code is made wrong?

Each mutant is one small edit of the module's source — a comparison flipped,
``and`` for ``or``, a condition negated, a number off by one, a constant
``True`` made ``False``, an arithmetic operator swapped, a statement dropped,
a returned value replaced by ``None`` — made in a copy of the repository, and
the given tests are run against it.  A mutant the tests let pass is a
*survivor*: either a missing test, or an edit that cannot change behaviour (an
equivalent mutant), which only a reader can tell apart; the report lists the
survivors with their line for that reading.

    python tools/mutants.py graphc/train/run_folder.py --tests tests/test_run_folder.py --sample 40 --json out.json
    python tools/mutants.py graphc/train/run_folder.py --tests tests/test_run_folder.py --survivors-of out.json

Edits replace only the source text of the node they change, so the rest of
the file, its line numbers included, stays as it was.  Docstrings, type
annotations and f-strings (the text of messages) are not mutated: a wrong
word in an error message is not the kind of fault these tests are for.
``--survivors-of`` reruns the survivors of an earlier run, found again by
their line's text, after tests were added.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator, Optional

ROOT = Path(__file__).resolve().parent.parent

_SWAPPED_COMPARISONS: dict[type, type] = {
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
_SWAPPED_OPERATORS: dict[type, type] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
    ast.Mod: ast.Mult, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr, ast.Pow: ast.Mult,
}


@dataclass(frozen=True)
class Mutant:
    line: int
    what: str  # the edit, in words
    start: tuple[int, int]  # (line, column) of the replaced source, lines from 1
    end: tuple[int, int]
    replacement: str
    context: str  # the mutated line as it was, which finds the mutant again after lines move


@dataclass
class Outcome:
    mutant: Mutant
    killed: bool
    seconds: float
    failure: str  # the first failing test, or why the run ended


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            found.add(id(body[0]))
    return found


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """Nodes of type annotations, and of f-strings (messages; their nodes' positions are approximate)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            found.update(id(n) for n in ast.walk(node))
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations.append(node.returns)
            args = node.args
            annotations += [a.annotation for a in args.args + args.kwonlyargs + args.posonlyargs]
            annotations += [args.vararg.annotation if args.vararg else None,
                            args.kwarg.annotation if args.kwarg else None]
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for annotation in filter(None, annotations):
            found.update(id(n) for n in ast.walk(annotation))
    return found


def _edit(node: ast.AST, what: str, replacement: ast.AST | str) -> Mutant:
    text = replacement if isinstance(replacement, str) else ast.unparse(replacement)
    text += "\n" * (node.end_lineno - node.lineno - text.count("\n"))  # later lines keep their numbers
    return Mutant(node.lineno, what, (node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset),
                  text, "")


def _copy_with(node: ast.AST, **changes: object) -> ast.AST:
    clone = type(node)(**{name: getattr(node, name) for name in node._fields})
    for name, value in changes.items():
        setattr(clone, name, value)
    return clone


def mutants(source: str) -> Iterator[Mutant]:
    """Every mutant of ``source`` the operators above make."""
    lines = source.splitlines()
    for mutant in _mutants(ast.parse(source)):
        yield replace(mutant, context=lines[mutant.line - 1].strip())


def _mutants(tree: ast.AST) -> Iterator[Mutant]:
    skipped = _docstrings(tree) | _annotation_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skipped or not hasattr(node, "lineno"):
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                swapped = _SWAPPED_COMPARISONS.get(type(op))
                if swapped:
                    ops = list(node.ops)
                    ops[i] = swapped()
                    yield _edit(node, f"{type(op).__name__} → {swapped.__name__}", _copy_with(node, ops=ops))
        elif isinstance(node, ast.BoolOp):
            other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            yield _edit(node, f"{type(node.op).__name__} → {type(other).__name__}", _copy_with(node, op=other))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield _edit(node, "not dropped", node.operand)
        elif isinstance(node, ast.BinOp) and type(node.op) in _SWAPPED_OPERATORS:
            swapped = _SWAPPED_OPERATORS[type(node.op)]
            yield _edit(node, f"{type(node.op).__name__} → {swapped.__name__}", _copy_with(node, op=swapped()))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
            yield _edit(node, f"{node.value!r} → {node.value + 1!r}", ast.Constant(node.value + 1))
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            yield _edit(node, f"{node.value} → {not node.value}", ast.Constant(not node.value))
        elif isinstance(node, (ast.If, ast.While)):
            test = node.test
            yield _edit(test, "condition negated", ast.UnaryOp(ast.Not(), test))
        if isinstance(node, ast.Return) and node.value is not None \
                and not (isinstance(node.value, ast.Constant) and node.value.value is None):
            yield _edit(node, "returns None", "return None")
        if isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign, ast.Raise, ast.Delete)) and id(node) not in skipped:
            yield _edit(node, "statement dropped", "pass")


def apply(source: str, mutant: Mutant) -> str:
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line.encode()))
    data = source.encode()
    start = offsets[mutant.start[0] - 1] + mutant.start[1]
    end = offsets[mutant.end[0] - 1] + mutant.end[1]
    return (data[:start] + mutant.replacement.encode() + data[end:]).decode()


def run_tests(copy: Path, tests: list[str], timeout: float, verbose: bool = False) -> tuple[bool, str]:
    """Whether the tests fail in ``copy`` (the mutant is killed), and the first failure (with
    ``verbose``, the whole report)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
    try:
        result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return True, f"timed out after {timeout:.0f} s"
    lines = result.stdout.strip().splitlines()
    failed = next((line for line in lines if line.startswith(("FAILED", "ERROR"))), lines[-1] if lines else "")
    return result.returncode != 0, (result.stdout + result.stderr if verbose else failed)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", help="the source file to mutate, relative to the repository")
    parser.add_argument("--tests", nargs="+", required=True, help="the test files (or node ids) to run")
    parser.add_argument("--sample", type=int, default=0, help="mutants drawn at random (0: every one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lines", help="only mutants on these lines, as FIRST-LAST")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a test run may take")
    parser.add_argument("--json", help="write the outcomes here")
    parser.add_argument("--survivors-of", help="run only the survivors recorded in this --json file of an "
                                               "earlier run (after adding tests, or with more test files)")
    args = parser.parse_args(argv)

    source = (ROOT / args.module).read_text()
    every = list(mutants(source))
    if args.lines:
        first, last = map(int, args.lines.split("-"))
        every = [m for m in every if first <= m.line <= last]
    if args.survivors_of:
        earlier = json.loads(Path(args.survivors_of).read_text())
        wanted = {(o["mutant"]["context"], o["mutant"]["what"], o["mutant"]["replacement"])
                  for o in earlier if not o["killed"]}
        every = [m for m in every if (m.context, m.what, m.replacement) in wanted]
        gone = wanted - {(m.context, m.what, m.replacement) for m in every}
        if gone:
            print(f"{len(gone)} of the earlier survivors are gone with the lines they were on", file=sys.stderr)
    chosen = sorted(random.Random(args.seed).sample(every, min(args.sample, len(every))) if args.sample else every,
                    key=lambda m: (m.line, m.start))
    print(f"{args.module}: {len(every)} mutants, running {len(chosen)}", flush=True)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="mutants-") as folder:
        copy = Path(folder) / "repo"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".runs"))
        target = copy / args.module
        broken, failure = run_tests(copy, args.tests, args.timeout, verbose=True)
        if broken:
            print(f"the tests fail without a mutant: {failure}", file=sys.stderr)
            return 1
        for number, mutant in enumerate(chosen, 1):
            mutated = apply(source, mutant)
            try:
                ast.parse(mutated)
            except SyntaxError:
                continue
            target.write_text(mutated)
            started = time.perf_counter()
            killed, failure = run_tests(copy, args.tests, args.timeout)
            outcomes.append(Outcome(mutant, killed, time.perf_counter() - started, failure))
            mark = "killed  " if killed else "SURVIVED"
            print(f"[{number}/{len(chosen)}] {mark} line {mutant.line}: {mutant.what}: "
                  f"{mutant.replacement[:60]!r}  ({outcomes[-1].seconds:.0f} s) {failure[:100]}", flush=True)
        target.write_text(source)
    killed = sum(o.killed for o in outcomes)
    print(f"{args.module}: {killed} of {len(outcomes)} mutants killed ({100 * killed / max(len(outcomes), 1):.0f} %)")
    for outcome in outcomes:
        if not outcome.killed:
            print(f"  survivor: line {outcome.mutant.line}: {outcome.mutant.what}: {outcome.mutant.replacement[:80]!r}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
