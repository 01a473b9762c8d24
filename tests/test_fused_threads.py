"""Long fused loops on two threads (graphc/backends/c_threads.py).

The split must not change a single bit of any result, must really use the
helper where two CPUs are allowed, must leave short loops and column sums
alone, and must survive what users do with processes and threads: a fork
after the helper started, several Python threads calling at once, and
``GRAPHC_THREADS=1``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import graphc as gc
from graphc.backends import c_kernels, c_threads

pytestmark = [pytest.mark.skipif(c_kernels.compiler() is None, reason="no C compiler (or GRAPHC_KERNELS=numpy)"),
              pytest.mark.usefixtures("c_kernels_must_build")]
TWO_CPUS = len(os.sched_getaffinity(0)) >= 2

# A train step whose Adam update (235k parameters) and first activation ([512, 256]) are long loops.
TRAIN = textwrap.dedent("""
    import hashlib, os, sys
    import numpy as np
    import graphc as gc
    x = gc.input("x", (None, 784)); y = gc.input("y", (None,), dtype="int32")
    net = gc.nn.Sequential(gc.nn.Dense(256), gc.nn.relu, gc.nn.Dense(128), gc.nn.relu, gc.nn.Dense(10))
    step = gc.compile(gc.softmax_cross_entropy(net(x), y), optimizer=gc.optim.Adam(1e-3))
    rng = np.random.default_rng(0)
    digest = hashlib.sha256()
    for _ in range(int(sys.argv[1])):
        xb = rng.standard_normal((512, 784)).astype(np.float32)
        yb = rng.integers(0, 10, 512).astype(np.int32)
        digest.update(np.asarray(step(x=xb, y=yb)).tobytes())
    for name in sorted(step.state.values):
        digest.update(step.state.values[name].tobytes())
    helped = step.generated.make_step.__globals__["graphc_chunks_helped"]()
    print(digest.hexdigest(), helped)
""")


def _train(steps: int, **env: str) -> tuple[str, int]:
    environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", **env}  # GEMMs alike in both runs
    out = subprocess.run([sys.executable, "-c", TRAIN, str(steps)], capture_output=True, text=True,
                         env=environment, timeout=300, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not TWO_CPUS, reason="one CPU allowed: loops are never split")
def test_split_loops_give_the_same_bits_as_one_thread_and_the_helper_works() -> None:
    split_digest, helped = _train(30)
    serial_digest, serial_helped = _train(30, GRAPHC_THREADS="1")
    assert split_digest == serial_digest
    assert serial_helped == 0
    assert helped > 0, "the helper thread never ran a chunk in 30 steps of two long loops each"


def test_short_loops_and_column_sums_are_never_split() -> None:
    x = gc.input("x", (None, 8))
    W = gc.param("W", (8, 300))
    h = gc.relu(x @ W) * 2.0
    step = gc.compile({"h": h, "bias_grad": gc.sum(h, axis=0)})
    kernels = step.show("kernels")
    assert "split_rows" not in kernels  # the only loop has a column sum: rows are added in order
    step.state.values["W"] = np.ones((8, 300), np.float32)
    step(x=np.ones((1000, 8), np.float32))  # 300 000 elements, but one loop with a column sum
    assert step.generated.make_step.__globals__[c_threads.HELPED]() == 0
    small = gc.compile(gc.relu(x @ W) * 2.0)
    assert "split_rows" in small.show("kernels")  # may split, but 100 rows are too few to bother
    small(x=np.ones((100, 8), np.float32))
    assert small.generated.make_step.__globals__[c_threads.HELPED]() == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_runs_split_loops_without_the_parents_helper() -> None:
    script = TRAIN.replace("print(digest.hexdigest(), helped)", textwrap.dedent("""
        xb = rng.standard_normal((512, 784)).astype(np.float32); yb = rng.integers(0, 10, 512).astype(np.int32)
        pid = os.fork()
        loss = float(step(x=xb, y=yb))  # parent and child: the same step from the same state
        if pid == 0:
            os.write(1, f"child {loss!r}\\n".encode()); os._exit(0)
        os.waitpid(pid, 0)
        print("parent", repr(loss))
    """))
    lines = subprocess.run([sys.executable, "-c", script, "3"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, check=True).stdout.splitlines()
    values = dict(line.split() for line in lines)
    assert values["child"] == values["parent"]


def test_python_threads_calling_split_loops_at_once_get_their_own_results() -> None:
    """Functions of inputs alone run concurrently; one library's helper serves one loop at a time."""
    x = gc.input("x", (None, 512))
    fn = gc.compile(gc.tanh(x * 1.5) * 2.0 + x)
    inputs = [np.random.default_rng(k).standard_normal((400, 512)).astype(np.float32) for k in range(4)]
    want = [fn(x=v) for v in inputs]
    results: dict[int, list] = {k: [] for k in range(4)}

    def work(k: int) -> None:
        for _ in range(25):
            results[k].append(fn(x=inputs[k]))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        for got in results[k]:
            np.testing.assert_array_equal(got, want[k])
