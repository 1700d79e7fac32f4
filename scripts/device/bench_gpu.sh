#!/usr/bin/env bash
# Runs ON THE GPU MACHINE after build_and_test.sh: the issue-3 speed figure and its
# baseline in one run on one card. (1) bench/model's BM_Embed (Backend::Embed from host
# token ids to host vectors, closed loop) for the filter below on cuda; (2) Hugging Face's
# eager BertModel at the same shape (scripts/device/hf_bert_bench.py). Logs to $OUT.
# Usage: scripts/device/bench_gpu.sh
# Env: BUILD_DIR (build-gpu), FILTER (default the target: fp16, batch 1,024 x 16 tokens),
#      REPS (repetitions, default 5; the median is reported), SKIP_HF=1.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/device/env.sh || exit 1
OUT=${OUT:-$ES_ROOT/device-out}
mkdir -p "$OUT"
BUILD_DIR=${BUILD_DIR:-build-gpu}
FILTER=${FILTER:-BM_Embed/fp16/batch:1024/tokens:16/}
REPS=${REPS:-5}
tag=${BENCH_TAG:-bench}
echo "card: $(nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader)"
EMBEDSERVE_BENCH_DEVICE=cuda "$BUILD_DIR/bench/model/model_bench" \
  --benchmark_filter="$FILTER" --benchmark_repetitions="$REPS" \
  --benchmark_report_aggregates_only=true --benchmark_counters_tabular=true \
  --benchmark_out="$OUT/$tag.json" --benchmark_out_format=json 2>&1 | tee "$OUT/$tag.log" |
  grep -E "median|Benchmark|error|ERROR"
if [ "${SKIP_HF:-0}" != 1 ]; then
  python3 scripts/device/hf_bert_bench.py --batch 1024 --seq 16 2>&1 | tee "$OUT/hf_$tag.log"
fi
