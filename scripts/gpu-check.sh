#!/usr/bin/env bash
# On the GPU machine (no cargo, no network), from the repo root, with gpu/ from gpu-stage.sh:
#   scripts/gpu-check.sh bench [SECONDS]     training steps/s of ablate's CUDA path beside PyTorch
#                                            on the GPU (the same models and batches as `just
#                                            bench`), and both on the CPU: $OUT/bench.jsonl
#   scripts/gpu-check.sh run PIPELINE [ARGS] `ablate run PIPELINE --device cuda ARGS`, timed; its
#                                            results in $OUT/results-<name>.tgz
# Compare a run's results with a CPU run's here with scripts/compare_runs.py.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x gpu/ablate ] || { echo "gpu/ablate is missing: run scripts/gpu-stage.sh and carry gpu/" >&2; exit 2; }
command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: this is for the GPU machine" >&2; exit 2; }
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
PY=${ABLATE_BENCH_PYTHON:-python3}
source gpu/paths.env
# The CUDA 13 libraries and headers ship in PyTorch's nvidia wheels.
NV=$($PY -c 'import nvidia, os; print([os.path.join(p, "cu13") for p in nvidia.__path__ if os.path.isdir(os.path.join(p, "cu13", "lib"))][0])')
export LD_LIBRARY_PATH="$NV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$(dirname "$CUDA_INCLUDE")"
ln -sfn "$NV/include" "$CUDA_INCLUDE"
for d in $DFDX_OUT; do mkdir -p "$d" && cp gpu/cuh/*.cuh "$d"/; done

case "${1:-}" in
bench)
  s=${2:-10}
  {
    for w in shared unshared; do
      gpu/train_flow_bench --backend cuda:0 --weights "$w" --runs 3
      gpu/train_flow_bench --backend cpu --weights "$w" --runs 3
    done
    "$PY" scripts/bench_torch.py 1 3 cuda
    "$PY" scripts/bench_torch.py 1 3 cpu
    gpu/lm_bench --backend cuda:0 --seconds "$s"
    "$PY" scripts/bench_torch_lm.py 2 "$s" both cuda
    gpu/lm_bench --backend cpu --threads 2 --seconds "$s"
    "$PY" scripts/bench_torch_lm.py 2 "$s" both cpu
  } | tee "$OUT/bench.jsonl"
  ;;
run)
  pipeline=$2
  shift 2
  name=$(basename "$pipeline" .yaml)
  export ABLATE_CACHE=${ABLATE_CACHE:-/tmp/gpu-cache} ABLATE_RESULTS=/tmp/gpu-results
  start=$(date +%s)
  status=0
  gpu/ablate run "$pipeline" --device cuda "$@" || status=$?
  echo "ablate run $pipeline --device cuda $*: exit $status in $(( $(date +%s) - start )) s" | tee -a "$OUT/runs.txt"
  tar czf "$OUT/results-$name.tgz" -C "$ABLATE_RESULTS" "$name"
  exit $status
  ;;
*)
  sed -n '2,8p' "$0" >&2
  exit 2
  ;;
esac
