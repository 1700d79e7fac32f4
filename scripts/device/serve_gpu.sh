#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: the server end to end on the GPU, over gRPC, with the same
# launcher and bench client as on the CPU machine. Builds (build_and_test.sh, tests
# skipped unless RUN_TESTS=1), writes the synthetic minilm-l6 folder, then
# scripts/run_experiment.sh on experiments/minilm_gpu_{fp32,fp16,fp16_nobatching}.yaml
# (Similarity, batch 1..128 x concurrency 1..64, plus embedserve-bench-inprocess at
# batch 32 and 128). The result folders come back as $OUT/gpu_results.tgz; on the dev
# machine: tar -xzf gpu_results.tgz -C results-gpu && /usr/bin/python3 scripts/report.py
# results-gpu --out docs/results/gpu-h100 (see docs/results/gpu-h100/README.md).
# Usage (device call, carry [".device"]):
#   scripts/device/from_snapshot.sh scripts/device/serve_gpu.sh
# Env: BUILD_DIR (build-gpu), EXPERIMENTS (space-separated YAML paths), BENCH_ARGS.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-$(pwd)/device-out}; export OUT
mkdir -p "$OUT"
BUILD_DIR=${BUILD_DIR:-build-gpu}
if [ "${RUN_TESTS:-0}" = 1 ]; then
  scripts/device/build_and_test.sh > "$OUT/build_and_test.log" 2>&1
else
  SKIP_TESTS=1 scripts/device/build_and_test.sh > "$OUT/build_and_test.log" 2>&1
fi
rc=$?
echo "build_and_test: exit $rc"; tail -3 "$OUT/build_and_test.log"
[ "$rc" -eq 0 ] || exit 1
# shellcheck source=env.sh
source scripts/device/env.sh || exit 1
echo "card: $(nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores"
if [ ! -f models/minilm-l6-synthetic/model.safetensors ]; then
  "$BUILD_DIR"/tools/make_model/embedserve-make-model --out models/minilm-l6-synthetic \
    --preset minilm-l6 --seed 42 > "$OUT/make_model.log" 2>&1 || { cat "$OUT/make_model.log"; exit 1; }
fi
EXPERIMENTS=${EXPERIMENTS:-experiments/minilm_gpu_fp32.yaml experiments/minilm_gpu_fp16.yaml experiments/minilm_gpu_fp16_nobatching.yaml}
# shellcheck disable=SC2086
scripts/run_experiment.sh --build-dir "$BUILD_DIR" --results-dir results-gpu \
  --inprocess 32,128 ${BENCH_ARGS:+--bench-args "$BENCH_ARGS"} $EXPERIMENTS \
  > "$OUT/run_experiment.log" 2>&1
rc=$?
echo "run_experiment: exit $rc"
grep -E "^\[|FAIL|rror" "$OUT/run_experiment.log" | grep -v "^\[run\]" | tail -80
tar -czf "$OUT/gpu_results.tgz" -C results-gpu .
exit $rc
