#!/usr/bin/env bash
# Builds the CUDA binaries on this machine (no GPU needed: ../shared/tools/cuda-build-env.sh gives
# a toolkit from PyPI wheels) and stages in gpu/ (ignored by git) what a GPU machine without cargo
# needs to run them: `ablate`, the training benchmarks `train_flow_bench` and `lm_bench`, dfdx's
# NVRTC headers, and the two build paths dfdx bakes into the binaries (../shared/notes/cuda.md).
# Carry gpu/ to the GPU machine and run scripts/gpu-check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(../shared/tools/cuda-build-env.sh)"
# A fixed target dir: dfdx bakes its build's OUT_DIR into the binary, and gpu-check.sh recreates it.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/cudatarget}
cargo build --release -p ablate-cli --features cuda
cargo build --release -p ablate-models --features cuda --example train_flow_bench --example lm_bench
rm -rf gpu
mkdir -p gpu/cuh
for b in ablate examples/train_flow_bench examples/lm_bench; do
  strip -o "gpu/$(basename "$b")" "$CARGO_TARGET_DIR/release/$b"
done
# Every dfdx OUT_DIR named in a staged binary: the headers go there on the GPU machine.
outs=""
for d in "$CARGO_TARGET_DIR"/release/build/dfdx-*/out; do
  if ls "$d"/*.cuh >/dev/null 2>&1 && grep -qaF "$d" gpu/ablate gpu/train_flow_bench gpu/lm_bench; then
    cp "$d"/*.cuh gpu/cuh/
    outs="$outs $d"
  fi
done
[ -n "$outs" ] || { echo "no dfdx OUT_DIR with headers is named in the binaries" >&2; exit 1; }
printf 'DFDX_OUT="%s"\nCUDA_INCLUDE="%s"\n' "${outs# }" "$CUDA_PATH/include" > gpu/paths.env
du -sh gpu
