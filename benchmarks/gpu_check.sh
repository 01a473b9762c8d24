#!/usr/bin/env bash
# The GPU check, offline, in stages, in under 4 minutes, on a machine with a CUDA GPU and CuPy (PyTorch
# and JAX for the comparison).  Run from anywhere:   OUT=/some/dir benchmarks/gpu_check.sh [STAGE...]
#
# GPU machines here reach no network and lack some of graphc's packages (graphviz, for one): any that
# does not import is installed from the wheels in $GRAPHC_WHEELS (default gpu-check/wheels, which
# benchmarks/gpu_wheels.sh fills on a machine with a network; gpu-check/ is ignored by git).  Each
# stage (benchmarks/gpu_check.py) runs under its own time limit and writes $OUT/<stage>.json as it
# ends, so a check cut short keeps what it finished; $OUT/summary.log has one line per stage.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check/out}
WHEELS=${GRAPHC_WHEELS:-gpu-check/wheels}
PY=$(command -v python3 || command -v python)
mkdir -p "$OUT"
: >"$OUT/summary.log"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export GRAPHC_CACHE_DIR=${GRAPHC_CACHE_DIR:-/tmp/graphc-gpu-cache} XLA_PYTHON_CLIENT_PREALLOCATE=false

missing=()
for pair in numpy:numpy networkx:networkx hypothesis:hypothesis tqdm:tqdm matplotlib:matplotlib \
            graphviz:graphviz pytest:pytest; do
    "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} from $WHEELS" | tee -a "$OUT/summary.log"
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" --target /tmp/graphc-site "${missing[@]}" \
        && export PYTHONPATH=$PYTHONPATH:/tmp/graphc-site
fi
if ! "$PY" -c "import graphc" 2>"$OUT/import.log"; then  # no table without graphc in it
    echo "graphc does not import on this machine (see $OUT/import.log):" | tee -a "$OUT/summary.log"
    tail -3 "$OUT/import.log" | tee -a "$OUT/summary.log"
    exit 1
fi

declare -A LIMIT=([environment]=30 [nvrtc]=40 [mlp]=60 [noise]=30 [tests]=60 [timing]=120)
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(environment nvrtc mlp noise tests timing)
started=$(date +%s)
failed=0
for stage in "${stages[@]}"; do
    t0=$(date +%s)
    timeout "${LIMIT[$stage]:-60}" "$PY" benchmarks/gpu_check.py "$stage" --out "$OUT" >"$OUT/$stage.log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && failed=1
    echo "$stage: exit $rc after $(( $(date +%s) - t0 )) s (log $OUT/$stage.log, results $OUT/$stage.json)" \
        | tee -a "$OUT/summary.log"
done
echo "total: $(( $(date +%s) - started )) s" | tee -a "$OUT/summary.log"
exit $failed
