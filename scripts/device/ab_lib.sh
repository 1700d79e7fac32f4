# Sourced ON THE GPU MACHINE by the A/B scripts of this folder (attn_mma_ab.sh,
# attn_tune_ab.sh, attn_quick_ab.sh, gemm_tune_ab.sh, merged_check.sh,
# graph_buckets_ab.sh, fused_ab.sh, real_model_check.sh, grpc_floor.sh): the prologue
# they share, after their own `cd "$(dirname "$0")/../.."` to the repository root, with
# the script's short name:
#   source scripts/device/ab_lib.sh attn_mma
# Sets, each unless already set: OUT (./device-out), B (BUILD_DIR, else build-gpu), RAW
# (/tmp/NAME_raw, emptied; a RAW set before is only created), START (now, for step
# and left); exports PYTHONUNBUFFERED=1 (Python's output in the log as it happens).
# Functions:
#   step TEXT        a step's header: TEXT, the UTC time, seconds since START
#   left SECONDS     true while fewer than SECONDS have passed since START (a 10-minute
#                    call runs its optional steps only while time is left)
#   pack             $RAW as $OUT/raw.tgz (what comes back from the call)
#   ab_build         build_and_test.sh with SKIP_TESTS=1 into $B, its log $RAW/build.log;
#                    on failure the errors and the log's end, pack, exit 1; then sources
#                    env.sh (the carried Debian libraries' paths for what runs next)
#   ab_machine       card, driver, CPU, commit (EMBEDSERVE_GIT_COMMIT), torch and the date,
#                    printed and kept in $RAW/machine.txt
#   embed TAG ENV FILTER REPS [LABEL]
#                    BM_Embed (bench/model/model_bench, CUDA) under the environment ENV
#                    ("VAR=value ..." as env takes it; empty: the defaults) for the
#                    benchmarks FILTER matches, REPS repetitions in one process; JSON and
#                    log as $RAW/embed_TAG.*; prints each median (fused_ab_summary.py),
#                    labelled LABEL (default: ENV, or "defaults")
#   ab_kernel_tests  fused_kernels_test, its log $RAW/fused_kernels_test.log; prints its
#                    exit code and the result and failure lines
#   ab_backend_cuda_tests [TAG]
#                    bert_backend_test's CUDA cases (2 minutes at most), its log
#                    $RAW/bert_backend_cuda[_TAG].log; prints its exit code and results
#   ab_synthetic_model
#                    sets SYNTH_MODEL to the synthetic minilm-l6 folder (seed 42; the
#                    shapes of all-MiniLM-L6-v2), written first if it is not there
# shellcheck shell=bash
OUT=${OUT:-$(pwd)/device-out}
mkdir -p "$OUT"
B=${B:-${BUILD_DIR:-build-gpu}}
if [ -z "${RAW:-}" ]; then
  RAW=/tmp/${1:-ab}_raw
  rm -rf "$RAW"
fi
mkdir -p "$RAW"
START=${START:-$(date +%s)}
export PYTHONUNBUFFERED=1

step() { echo "=== $* ($(date -u +%T), +$(( $(date +%s) - START )) s)"; }
left() { [ $(( $(date +%s) - START )) -lt "$1" ]; }
pack() { tar -czf "$OUT/raw.tgz" -C "$RAW" .; }

ab_build() {
  if ! SKIP_TESTS=1 BUILD_DIR=$B scripts/device/build_and_test.sh >"$RAW/build.log" 2>&1; then
    grep -E "error" "$RAW/build.log" | head -30
    tail -30 "$RAW/build.log"
    pack
    exit 1
  fi
  # shellcheck source=env.sh
  source scripts/device/env.sh || exit 1
}

ab_machine() {
  { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores"
    echo "commit ${EMBEDSERVE_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
    python3 -c 'import torch; print("torch", torch.__version__)'
    date -u; } | tee "$RAW/machine.txt"
}

embed() {
  local tag=$1 env_set=$2 filter=$3 reps=$4 label=${5:-${2:-defaults}}
  # shellcheck disable=SC2086
  env $env_set EMBEDSERVE_BENCH_DEVICE=cuda "$B/bench/model/model_bench" \
    --benchmark_filter="$filter" --benchmark_repetitions="$reps" \
    --benchmark_report_aggregates_only=true --benchmark_counters_tabular=true \
    --benchmark_out="$RAW/embed_$tag.json" --benchmark_out_format=json >"$RAW/embed_$tag.log" 2>&1
  python3 scripts/device/fused_ab_summary.py embed "$RAW/embed_$tag.json" "$tag" "$label"
}

ab_kernel_tests() {
  "$B/tests/model/fused_kernels_test" --gtest_color=no >"$RAW/fused_kernels_test.log" 2>&1
  echo "fused_kernels_test exit $?"
  grep -E "^\[ +(OK|FAILED|SKIPPED) +\]|^\[  PASSED|Failure|Expected|Which is" \
    "$RAW/fused_kernels_test.log" | head -30
}

ab_backend_cuda_tests() {
  local log=$RAW/bert_backend_cuda${1:+_$1}.log
  timeout 120 "$B/tests/model/bert_backend_test" --gtest_color=no --gtest_filter='*Cuda*' \
    >"$log" 2>&1
  echo "bert_backend_test *Cuda* exit $?"
  grep -E "^\[ +(OK|FAILED|SKIPPED) +\]" "$log"
}

ab_synthetic_model() {
  SYNTH_MODEL=models/minilm-l6-synthetic
  [ -f $SYNTH_MODEL/model.safetensors ] ||
    "$B/tools/make_model/embedserve-make-model" --out $SYNTH_MODEL --preset minilm-l6 --seed 42 \
      >/dev/null
}
