"""The GPU check, one stage at a time: each stage writes ``OUT/<stage>.json`` as it ends, so a check
cut short by its time limit keeps every stage it finished.

    python3 benchmarks/gpu_check.py STAGE [--out DIR] [--backend cupy|cuda-emulator] [--batches ...]

Stages (``benchmarks/gpu_check.sh`` runs them in this order, each under its own time limit):

* ``environment``: the card, the driver and CUDA runtime, CuPy, NVRTC, libcublas (found as the
  backend finds it), PyTorch, JAX, and whether graphc imports (it must: no silent skip);
* ``nvrtc``: ``cupy.RawModule`` compiles the units of the example models on this GPU, with the
  options the backend passes; seconds per unit;
* ``mlp``: an MLP with batch norm, tanh and momentum, 20 steps at each batch size, with CUDA graphs
  and without, against the NumPy backend: the largest relative difference of the losses and of
  the parameters, within the float32 gap docs/gpu.md states;
* ``noise``: a model with Gaussian noise, a replayed graph against eager launches (bit for bit),
  and fresh draws every step;
* ``tests``: ``tests/test_cuda_gpu.py`` and the CUDA tests that run without a GPU;
* ``timing``: ``benchmarks/gpu_mlp.py``, graphc against PyTorch (eager, whole step as one CUDA
  graph, ``torch.compile``) and JAX jit, µs per step.

``--backend cuda-emulator`` runs the stages that need no GPU (environment, mlp, noise) on the CPU,
through the emulator: how the test suite checks this script.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import graphc as gc  # noqa: E402  (must import: the check fails here, loudly, if it does not)
from graphc import optim  # noqa: E402
from graphc.testing.models import device_check_mlp  # noqa: E402

FLOAT32_GAP = 2e-3  # the relative difference to allow after 20 float32 steps (docs/gpu.md, "Float semantics")


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception as exc:  # absent, or broken: say which
        return f"unavailable ({type(exc).__name__}: {exc})"


def environment(args: argparse.Namespace) -> dict[str, Any]:
    found: dict[str, Any] = {"python": sys.version.split()[0], "machine": platform.machine(),
                             "graphc": str(Path(gc.__file__).parent), "numpy": np.__version__,
                             "cupy": _version("cupy"), "torch": _version("torch"), "jax": _version("jax")}
    try:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        found["card"] = name.decode() if isinstance(name, bytes) else name
        found["compute_capability"] = f"{props['major']}.{props['minor']}"
        found["driver"] = cupy.cuda.runtime.driverGetVersion()
        found["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        from cupy.cuda import compiler
        found["nvrtc"] = compiler._get_nvrtc_version()
    except Exception as exc:
        found["card"] = f"none ({type(exc).__name__}: {exc})"
    try:
        from graphc.backends.cuda import cublas
        library = cublas._library()
        found["libcublas"] = library._name
        found["libcublas_missing_symbols"] = [s for s in cublas.SYMBOLS if not hasattr(library, s)]
    except Exception as exc:
        found["libcublas"] = f"not found ({exc})"
    return found


def _example_units() -> list[tuple[str, str]]:
    from graphc.train import load_model_file
    from graphc.train.trainer import model_loss, model_output
    units = []
    for name in ("mlp.py", "mlp_bn.py", "explicit_mlp.py"):
        model_file = load_model_file(ROOT / "examples" / name)
        x, y = gc.input("x", (None, 784)), gc.input("y", (None,), "int32")
        loss = model_loss(model_file.loss, model_output(model_file.model, x, training=True), y)
        units.append((name, gc.compile(loss, optim.Adam(1e-3), backend="cupy").show("kernels")))
    return units


def nvrtc(args: argparse.Namespace) -> dict[str, Any]:
    import cupy
    from graphc.backends.cuda.cupy_device import NVRTC_OPTIONS
    seconds = {}
    for name, unit in _example_units():
        started = time.perf_counter()
        cupy.RawModule(code=unit, options=NVRTC_OPTIONS).get_function("graphc_rng_advance")
        seconds[name] = round(time.perf_counter() - started, 3)
    return {"options": list(NVRTC_OPTIONS), "seconds_per_unit": seconds}


def _batches(count: int, batch: int, seed: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, 784)).astype(np.float32), rng.integers(0, 10, batch).astype(np.int32))
            for _ in range(count)]


def _relative(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30)) if b.size else 0.0


def mlp(args: argparse.Namespace) -> dict[str, Any]:
    results = {}
    for graphs in ("1", "0"):
        os.environ["GRAPHC_CUDA_GRAPHS"] = graphs
        for batch in args.batches:
            gc.clear_cache()
            device, cpu = device_check_mlp(args.backend), device_check_mlp("numpy")
            loss_gap = 0.0
            for x, y in _batches(20, batch):
                loss_gap = max(loss_gap, _relative(device(x=x, y=y), cpu(x=x, y=y)))
            state_gap = max(_relative(device.state.values[name], value) for name, value in cpu.state.values.items())
            results[f"batch {batch}, graphs {'on' if graphs == '1' else 'off'}"] = {
                "loss": loss_gap, "parameters": state_gap, "within_gap": max(loss_gap, state_gap) <= FLOAT32_GAP}
    os.environ.pop("GRAPHC_CUDA_GRAPHS", None)
    return {"max_relative_difference": results, "all_within_gap": all(r["within_gap"] for r in results.values())}


def noise(args: argparse.Namespace) -> dict[str, Any]:
    gc.clear_cache()
    replayed = device_check_mlp(args.backend, noise=0.1)
    os.environ["GRAPHC_CUDA_GRAPHS"] = "0"
    gc.clear_cache()
    eager = device_check_mlp(args.backend, noise=0.1)
    os.environ.pop("GRAPHC_CUDA_GRAPHS", None)
    pairs = [(float(replayed(x=x, y=y)), float(eager(x=x, y=y))) for x, y in _batches(8, 64)]
    x, y = _batches(1, 64)[0]
    draws = {float(replayed(x=x, y=y)) for _ in range(3)}  # the same batch: fresh noise each step
    return {"losses": pairs, "replay_equals_eager": all(a == b for a, b in pairs), "fresh_draws": len(draws) == 3}


def tests(args: argparse.Namespace) -> dict[str, Any]:
    selected = ["tests/test_cuda_gpu.py", "tests/test_cuda_emulator.py", "tests/test_cuda_runtime.py",
                "tests/test_backends.py"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selected],
                            cwd=ROOT, capture_output=True, text=True)
    tail = result.stdout.strip().splitlines()[-1:] or [""]
    return {"exit": result.returncode, "summary": tail[0], "output_tail": result.stdout[-4000:]}


def timing(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_mlp
    code = gpu_mlp.main(["--batches", *map(str, args.batches), "--steps", "50", "--repeats", "7", "--out",
                         str(args.out)])
    table = json.loads((args.out / "gpu_mlp.json").read_text()) if code == 0 else {}
    return {"exit": code, **table}


STAGES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "environment": environment, "nvrtc": nvrtc, "mlp": mlp, "noise": noise, "tests": tests, "timing": timing}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check/out")))
    parser.add_argument("--backend", choices=("cupy", "cuda-emulator"), default="cupy")
    parser.add_argument("--batches", type=int, nargs="+", default=[7, 128, 1024, 8192])
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    record: dict[str, Any] = {"stage": args.stage, "backend": args.backend}
    try:
        record.update(STAGES[args.stage](args))
        record["ok"] = record.get("exit", 0) == 0 and all(
            record.get(flag, True) for flag in ("all_within_gap", "replay_equals_eager", "fresh_draws"))
    except Exception as exc:  # recorded, then the stage fails: the next stages still run
        record.update(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-4000:])
    record["seconds"] = round(time.perf_counter() - started, 2)
    (args.out / f"{args.stage}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k not in ("traceback", "output_tail")}, default=str))
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
