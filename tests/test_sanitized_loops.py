"""The fused C loops built with AddressSanitizer and UndefinedBehaviorSanitizer, over the random graphs.

A loop that reads past a local array or a buffer may still give the right
answer (the next value in memory happens to be the right one), so comparing
values cannot see it.  Here the random-graph properties and the row-loop tests
run again in a child process whose loops are built with ``GRAPHC_SANITIZE=1``
(bounds checks included) and whose Python has the address sanitizer loaded
first, as it must be; any report aborts the child.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from graphc.backends.cpu import c_loops

TESTS = Path(__file__).parent


def _asan_runtime() -> str:
    cc = c_loops.compiler()
    if cc is None:
        return ""
    found = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return found if os.path.isabs(found) and os.path.exists(found) else ""


@pytest.mark.skipif(not _asan_runtime(), reason="no C compiler with AddressSanitizer's runtime")
def test_random_graphs_run_clean_under_the_sanitizers(tmp_path: Path) -> None:
    env = {**os.environ, "GRAPHC_SANITIZE": "1", "GRAPHC_CACHE_DIR": str(tmp_path), "GRAPHC_GRAPH_EXAMPLES": "12",
           "LD_PRELOAD": _asan_runtime(), "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    selected = [str(TESTS / "test_random_graphs.py"), str(TESTS / "test_fused_rows.py"),
                str(TESTS / "test_fused_column_sums.py"), "-k", "not numpy and not unplanned and not generator"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *selected],
                            env=env, cwd=TESTS.parent, capture_output=True, text=True, timeout=600)
    report = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    assert "runtime error" not in report and "AddressSanitizer" not in report, report
    assert " passed" in result.stdout and list(tmp_path.glob("kernels/*.so")), report
