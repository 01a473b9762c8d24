"""Inspection by environment variable, at graded levels of detail.

    GRAPHC_DEBUG=1  one line per compile: nodes, time, cache hit or miss
    GRAPHC_DEBUG=2  + what each pass did, and the static cost of the step
    GRAPHC_DEBUG=3  + the optimized program
    GRAPHC_DEBUG=4  + the generated source

Output goes to stderr so it never mixes with a program's own results.
"""
from __future__ import annotations

import os
import sys


def level() -> int:
    try:
        return int(os.environ.get("GRAPHC_DEBUG", "0"))
    except ValueError:
        return 0


def emit(at_level: int, text: str) -> None:
    if level() >= at_level:
        print(text, file=sys.stderr)
