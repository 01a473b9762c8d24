"""Inspection by environment variable, at graded levels of detail.

    GRAPHC_DEBUG=1  one line per compile: nodes, time, cache hit or miss
    GRAPHC_DEBUG=2  + what each pass did, and the static cost of the step
    GRAPHC_DEBUG=3  + the optimized program
    GRAPHC_DEBUG=4  + the generated source

Output goes to stderr so it never mixes with a program's own results.  Text
that costs as much as the program to build (its listing, the generated source)
is passed as a function and built only at a level that shows it: a compile
with debugging off spends nothing on it.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Union

Text = Union[str, Callable[[], str]]


def level() -> int:
    try:
        return int(os.environ.get("GRAPHC_DEBUG", "0"))
    except ValueError:
        return 0


def emit(at_level: int, text: Text) -> None:
    """Print ``text`` (or what the function ``text`` returns) if the level asks for this much detail."""
    if level() >= at_level:
        print(text if isinstance(text, str) else text(), file=sys.stderr)
