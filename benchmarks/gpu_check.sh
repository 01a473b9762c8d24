#!/usr/bin/env bash
# The GPU check, in one run on a machine with a CUDA GPU and CuPy (plus PyTorch and JAX for the
# comparison): the GPU tests, the side-by-side benchmark and one epoch of `graphc train --backend cupy`.
# Every log goes under $OUT (default ./gpu-check); each part has its own time limit, all together
# under 8 minutes.  Run from the repository root:   OUT=/some/dir benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD GRAPHC_CACHE_DIR=${GRAPHC_CACHE_DIR:-/tmp/graphc-gpu-cache} XLA_PYTHON_CLIENT_PREALLOCATE=false
started=$(date +%s)

part() {  # part NAME SECONDS COMMAND...: run one part with a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    local t0=$(date +%s)
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc after $(( $(date +%s) - t0 )) s (log $OUT/$name.log)" | tee -a "$OUT/summary.log"
}

{
    nvidia-smi || true
    python -c "import cupy; print('cupy', cupy.__version__); cupy.show_config()" || true
    python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || true
    python -c "import jax; print('jax', jax.__version__, jax.devices())" || true
} >"$OUT/environment.log" 2>&1
: >"$OUT/summary.log"

part tests 150 python -m pytest -q -p no:cacheprovider tests/test_cuda_gpu.py tests/test_cuda_emulator.py \
    tests/test_cuda_runtime.py tests/test_cuda_compile.py tests/test_backends.py

part benchmark 210 python benchmarks/gpu_mlp.py --steps 50 --repeats 7 --out "$OUT"

# One epoch of real training when Fashion-MNIST is at hand: Debian's package, or a copy in
# data/fashion-mnist that travels with the working tree to a machine without the package.
DATA=""
for dir in /usr/share/datasets/fashion-mnist data/fashion-mnist; do
    [ -d "$dir" ] && DATA=$dir && break
done
if [ -n "$DATA" ]; then
    part train 90 python -m graphc.cli train examples/mlp.py --backend cupy --epochs 1 --data "$DATA" \
        --out "$OUT/run"
else
    echo "train: skipped, no Fashion-MNIST found (install dataset-fashion-mnist or copy it to data/fashion-mnist)" \
        | tee -a "$OUT/summary.log"
fi
echo "total: $(( $(date +%s) - started )) s" | tee -a "$OUT/summary.log"
