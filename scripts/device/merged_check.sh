#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14): the merged tree checked in one call: the build, the
# CUDA tests, BM_Embed fp16 1,024 x 16 with the packed attention kernel and the tuned
# GEMMs (NEW, the defaults) against neither (BASE), graph_buckets_bench in BASE / ATTN
# (kernel without tuned GEMMs) / NEW to place the eager mixed-length rows that
# attn_tune_ab.sh saw slower, and served Similarity (batch 32 at c64/c16, batch 1 at c1
# and c256) BASE / NEW.
# Device call (the working tree travels): carry [".device/debs"], command
#   OUT=$OUT scripts/device/merged_check.sh 2>&1 | tee $OUT/run.log
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=ab_lib.sh
source scripts/device/ab_lib.sh merged_check
arm_env() {
  case $1 in
    BASE) echo "EMBEDSERVE_FUSED_KERNELS=ln,gelu_lt EMBEDSERVE_GEMM_TUNE=0" ;;
    ATTN) echo "EMBEDSERVE_FUSED_KERNELS=ln,gelu_lt,attn EMBEDSERVE_GEMM_TUNE=0" ;;
    *) echo "" ;;
  esac
}

step "1. build"
ab_build
ab_machine

step "2. CUDA tests"
ab_kernel_tests
ab_backend_cuda_tests

step "3. BM_Embed fp16 1,024 x 16: BASE / NEW, twice (median of 5)"
T='BM_Embed/fp16/batch:1024/tokens:16/'
for round in 1 2; do
  for arm in BASE NEW; do embed "${arm,,}$round" "$(arm_env $arm)" "$T" 5 $arm; done
done
pack

step "4. graph_buckets_bench fp16: BASE / ATTN / NEW"
ab_synthetic_model
model=$SYNTH_MODEL
for arm in BASE ATTN NEW; do
  echo "--- $arm"
  # shellcheck disable=SC2046
  env $(arm_env $arm) EMBEDSERVE_BENCH_MODEL=$model "$B/bench/model/graph_buckets_bench" fp16 5 \
    2>"$RAW/graph_buckets_$arm.err" >"$RAW/graph_buckets_$arm.txt"
  grep -iE "mixed|eager" "$RAW/graph_buckets_$arm.txt" | head -30
done
cp "$RAW"/graph_buckets_*.txt "$OUT/" 2>/dev/null
pack

step "5. served BASE / NEW (4 s per point)"
base=$(arm_env BASE | tr ' ' ':')
P=32/64/1+32/16/1+1/1/1+1/256/16
mkdir -p "$RAW/served"
ROUNDS="BASE1:8:1024:$P:$base NEW1:8:1024:$P" DURATION=4 BUILD_DIR=$B OUT="$RAW/served" \
  scripts/device/reqpath_ab.sh 2>&1 | grep -vE "^\[bench\] waiting|^\[cpu\]"
step "done"
pack
