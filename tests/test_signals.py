"""Stop signals and kills delivered from outside, to a real `graphc train` process, as a scheduler,
`docker stop` or an out-of-memory killer would: the run is saved or resumable, never lost."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graphc.train import checkpoint

from support import tiny_fashion_mnist

pytestmark = pytest.mark.usefixtures("stop_signals_heard")  # they send stop signals

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny_run(tmp_path: Path) -> tuple[list[str], Path]:
    data = tiny_fashion_mnist(tmp_path)
    (tmp_path / "small_model.py").write_text("from graphc import nn\nmodel = nn.Dense(10)\n")
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "graphc.cli", "train", str(tmp_path / "small_model.py"), "--data", str(data),
            "--batch-size", "1", "--optimizer", "sgd", "--lr", "1e-4", "--out", str(out)]
    return argv, out


def start_and_wait_for_a_checkpoint(argv: list[str], out: Path) -> subprocess.Popen:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.npz").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint within two minutes"
        time.sleep(0.05)
    return process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_from_outside_saves_and_exits_128_plus_its_number(tiny_run: tuple[list[str], Path],
                                                                        signum: int) -> None:
    argv, out = tiny_run
    process = start_and_wait_for_a_checkpoint(argv + ["--epochs", "100000"], out)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum
    assert f"graphc: {signal.Signals(signum).name}: stopped" in err and "--resume" in err
    assert "Traceback" not in err


def test_after_kill_9_the_run_resumes_from_its_last_checkpoint(tiny_run: tuple[list[str], Path]) -> None:
    argv, out = tiny_run
    process = start_and_wait_for_a_checkpoint(argv + ["--epochs", "100000"], out)
    process.kill()
    process.communicate(timeout=60)
    done = checkpoint.load(out / "checkpoint.npz").extra["progress"]["epoch"]
    finished = subprocess.run(argv + ["--epochs", str(done + 1), "--resume"], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert [row["epoch"] for row in json.loads((out / "history.json").read_text())] == list(range(1, done + 2))
