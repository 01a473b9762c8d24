"""What every fuzz test asserts: an input gives a result or graphc's own one-line error, never
another exception, and costs no more memory than a bound."""
from __future__ import annotations

import os
import tracemalloc
from typing import Any, Callable

from hypothesis import HealthCheck, settings

from graphc.errors import GraphcError

# Bounded so the suite stays fast: these run on every CI build, with derandomized draws there.
# GRAPHC_FUZZ_EXAMPLES=2000 runs a longer campaign locally.
FUZZ = settings(max_examples=int(os.environ.get("GRAPHC_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def result_or_own_error(call: Callable[[], Any], memory_limit: int) -> Any:
    """``call()``'s result, or the GraphcError it raised (which must be one line); anything else
    propagates and fails the test, as does a peak of traced allocations above ``memory_limit`` bytes."""
    tracemalloc.start()
    try:
        try:
            outcome = call()
        except GraphcError as exc:
            assert str(exc) and "\n" not in str(exc).split("\n  at ")[0], repr(exc)
            outcome = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= memory_limit, f"peak allocation {peak:,} bytes > {memory_limit:,}"
    return outcome
