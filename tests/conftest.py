"""Test-suite configuration.

Under CI (``CI`` set), Hypothesis draws from a seed derived from the commit
being tested: a build is reproducible, yet every commit explores new examples.
The seed is printed in the header; ``python -m pytest --hypothesis-seed=SEED``
replays a failing build.  Locally, draws vary from run to run.

Every compile in the suite (subprocesses included) checks its memory plan with
the verifier of :mod:`graphc.passes.plan_check`.
"""
import os
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import settings

os.environ.setdefault("GRAPHC_VERIFY_PLAN", "1")

settings.register_profile("ci", database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def _commit_seed() -> int:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    return int(head[:8], 16) if len(head) >= 8 else 0


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI") and config.getoption("hypothesis_seed", None) is None:
        config.option.hypothesis_seed = str(_commit_seed())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    seed = config.getoption("hypothesis_seed", None)
    if seed:
        terminalreporter.write_line(f"hypothesis seed {seed}: replay with python -m pytest --hypothesis-seed={seed}")


@pytest.fixture
def c_kernels_must_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail where a fused C library does not build: the step would still be right, run as plain
    NumPy after a warning, so a test of values alone would never see a loop the compiler rejects."""
    from graphc.backends.cpu import c_loops

    real = c_loops.build

    def build(source: str, names):  # type: ignore[no-untyped-def]
        functions = real(source, names)
        assert functions is not None or c_loops.compiler() is None, \
            "a fused C library failed to build (see the warning above): the step fell back to NumPy"
        return functions

    monkeypatch.setattr(c_loops, "build", build)


@pytest.fixture
def stop_signals_heard() -> Iterator[None]:
    """The stop signals as an interactive shell gives them, for a test that sends them (to itself or
    to a process it starts): a suite run in the background or under ``nohup`` gets SIGINT or SIGHUP
    ignored, which the trainer rightly leaves ignored."""
    heard = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL, signal.SIGHUP: signal.SIG_DFL}
    ignored = [signum for signum in heard if signal.getsignal(signum) is signal.SIG_IGN]
    for signum in ignored:
        signal.signal(signum, heard[signum])
    try:
        yield
    finally:
        for signum in ignored:
            signal.signal(signum, signal.SIG_IGN)
