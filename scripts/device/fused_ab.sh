#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14, the fused CUDA kernels): builds and tests as
# build_and_test.sh does, then in the same run
#   1. fused_kernels_test verbosely (the kernels against ATen);
#   2. fused_kernels_bench: per-op GPU time, ATen's way and the fused way, at MiniLM-L6's
#      shapes (16,384 tokens);
#   3. bench/model BM_Embed (the whole Backend::Embed) A/B/A/B: EMBEDSERVE_FUSED_KERNELS=0
#      (the ATen-op path) against the default, alternating, then each variant once.
# Logs and JSON to $OUT (fused_ab.log last prints a summary table).
# Device call: carry [".device/debs"], command scripts/device/fused_ab.sh
# Env: BUILD_DIR (build-gpu), REPS (BM_Embed repetitions, 5), SKIP_BUILD=1, SKIP_CTEST=1.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/device-out}; export OUT
mkdir -p "$OUT"
B=${BUILD_DIR:-build-gpu}
REPS=${REPS:-5}
step() { echo "=== $* ($(date -u +%T))"; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  step "build + ctest (build_and_test.sh)"
  SKIP_TESTS=${SKIP_CTEST:-0} BUILD_DIR=$B scripts/device/build_and_test.sh 2>&1 | tail -45
fi
# shellcheck source=env.sh
source scripts/device/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader

step "fused_kernels_test"
"$B/tests/model/fused_kernels_test" --gtest_color=no >"$OUT/fused_kernels_test.log" 2>&1
echo "fused_kernels_test exit $?"
grep -E "^\[ +(OK|FAILED|SKIPPED) +\]|Failure|Expected|Which is" "$OUT/fused_kernels_test.log" | head -30

step "fused_kernels_bench (per op, 16,384 x 384 / 1,536)"
"$B/bench/model/fused_kernels_bench" --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true --benchmark_out="$OUT/fused_kernels_bench.json" \
  --benchmark_out_format=json >"$OUT/fused_kernels_bench.log" 2>&1
grep -E "_median" "$OUT/fused_kernels_bench.log" | awk '{printf "%-34s %10s %s\n", $1, $2, $3}'

embed() {  # embed TAG FUSED FILTER
  local tag=$1 fused=$2 filter=$3
  EMBEDSERVE_FUSED_KERNELS=$fused EMBEDSERVE_BENCH_DEVICE=cuda "$B/bench/model/model_bench" \
    --benchmark_filter="$filter" --benchmark_repetitions="$REPS" \
    --benchmark_report_aggregates_only=true --benchmark_counters_tabular=true \
    --benchmark_out="$OUT/embed_$tag.json" --benchmark_out_format=json >"$OUT/embed_$tag.log" 2>&1
  python3 - "$OUT/embed_$tag.json" "$tag" "$fused" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for b in d["benchmarks"]:
    if b.get("aggregate_name") != "median":
        continue
    print(f"{sys.argv[2]:<14} FUSED={sys.argv[3]:<12} {b['run_name']:<40} "
          f"{b['real_time']:8.3f} ms  {b['sentences/s']:>11,.0f} sentences/s  [{b.get('label', '')}]")
EOF
}
T1024='BM_Embed/fp16/batch:1024/tokens:16/'
step "BM_Embed fp16 1,024 x 16: off / on / off / on (median of $REPS each)"
embed off1 0 "$T1024"
embed on1 1 "$T1024"
embed off2 0 "$T1024"
embed on2 1 "$T1024"
step "variants, fp16 1,024 x 16"
embed ln ln "$T1024"
embed ln_gelu ln,gelu "$T1024"
embed ln_gelult ln,gelu_lt "$T1024"
embed gelult gelu_lt "$T1024"
step "other shapes and precisions: off / on"
OTHER='BM_Embed/(fp16|bf16)/batch:(1|32|128)/tokens:(16|128)/|BM_Embed/(bf16|fp32)/batch:1024/tokens:16/'
embed other_off 0 "$OTHER"
embed other_on 1 "$OTHER"
step "done"
