#!/usr/bin/env bash
# Fetch, on a machine with a network, the wheels benchmarks/gpu_check.sh installs on a GPU machine that
# has no network and lacks them: graphc's own dependencies, for that machine's Python (3.12 by default)
# on x86-64 Linux.  They land in gpu-check/wheels (ignored by git); name the folder in the device run's
# carried paths.   Usage: benchmarks/gpu_wheels.sh [PYTHON_VERSION]
set -eu
cd "$(dirname "$0")/.."
VERSION=${1:-3.12}
DEST=gpu-check/wheels
mkdir -p "$DEST"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$tag")
done
python3 -m pip download -q --only-binary=:all: --python-version "$VERSION" --implementation cp \
    "${platforms[@]}" -d "$DEST" graphviz networkx hypothesis tqdm sortedcontainers attrs
ls "$DEST"
