"""Tests of tools/mutants.py, the mutation sampler the closing measurements of the test suite rely on:
it must make the edits it names, leave every other character of the file alone, and never mutate a
docstring or an annotation."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import mutants  # noqa: E402

SOURCE = '''"""A module docstring, never mutated."""
LIMIT: int = 10


def check(x: int, names: list) -> bool:
    """Whether x is small."""
    if x < LIMIT and x not in names:
        log(f"{x + 1} is small",
            x)
        return x + 1 == 2
    return False
'''


def test_each_operator_makes_the_edit_it_names_and_nothing_else() -> None:
    made = {(m.line, m.what, m.replacement) for m in mutants.mutants(SOURCE)}
    assert (7, "Lt → LtE", "x <= LIMIT") in made
    assert (7, "NotIn → In", "x in names") in made
    assert (7, "And → Or", "x < LIMIT or x not in names") in made
    assert (7, "condition negated", "not (x < LIMIT and x not in names)") in made
    assert (8, "statement dropped", "pass\n") in made  # two lines: both kept, the second empty
    assert (10, "Add → Sub", "x - 1") in made and (10, "1 → 2", "2") in made
    assert (10, "returns None", "return None") in made and (11, "False → True", "True") in made
    assert (2, "10 → 11", "11") in made
    assert not [m for m in mutants.mutants(SOURCE) if m.line in (1, 5, 6)]  # docstrings, annotations
    assert not [m for m in mutants.mutants(SOURCE) if m.what == "Add → Sub" and m.line == 8]  # f-strings


def test_a_mutant_changes_only_its_own_text() -> None:
    for mutant in mutants.mutants(SOURCE):
        mutated = mutants.apply(SOURCE, mutant)
        ast.parse(mutated)
        before, after = SOURCE.splitlines(), mutated.splitlines()
        assert len(before) == len(after)
        changed = [i + 1 for i, (a, b) in enumerate(zip(before, after)) if a != b]
        assert changed[0] == mutant.line and mutant.context == before[mutant.line - 1].strip()
        assert changed[-1] <= mutant.end[0]
