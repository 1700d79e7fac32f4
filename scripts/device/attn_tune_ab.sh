#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14): the packed attention kernel and the tuned GEMMs
# against the path before them, one build, switched per process:
#   BASE: EMBEDSERVE_FUSED_KERNELS=ln,gelu_lt EMBEDSERVE_GEMM_TUNE=0 (main before this work)
#   ATTN: EMBEDSERVE_FUSED_KERNELS=ln,gelu_lt,attn EMBEDSERVE_GEMM_TUNE=0
#   NEW:  nothing set: the defaults (ln,gelu_lt,attn and the tuned GEMMs)
# In order, each step only while time is left in a 10-minute call:
#   1. build (build_and_test.sh, SKIP_TESTS=1)
#   2. fused_kernels_test (the attention kernel against softmax(q k^T) v in fp64)
#   3. BM_Embed fp16 1,024 x 16: BASE / ATTN / NEW, twice, median of $REPS each
#   4. forward_profile BASE / ATTN / NEW: Kineto traces split by profile_split.py
#   5. served Similarity batch 32 at c64 and c16 (reqpath_ab.sh): BASE / NEW, twice
#   6. bert_backend_test's CUDA cases with NEW (graphs against eager, attention paths, CPU)
#   7. BM_Embed at other shapes and precisions: BASE / NEW (median of 3)
#   8. graph_buckets_bench fp16: BASE / NEW (graph replay against eager per bucket)
# Device call: as gemm_tune_ab.sh (the commit as src.tgz, carried with .device/debs,
# unpacked to /tmp/es), then scripts/device/attn_tune_ab.sh. Env: REPS (5), DURATION (4).
# Logs to $OUT: run.log (the caller tees), profile_*.txt, raw.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=ab_lib.sh
source scripts/device/ab_lib.sh attn_tune
REPS=${REPS:-5}
DURATION=${DURATION:-4}
BASE_ENV=(EMBEDSERVE_FUSED_KERNELS=ln,gelu_lt EMBEDSERVE_GEMM_TUNE=0)
ATTN_ENV=(EMBEDSERVE_FUSED_KERNELS=ln,gelu_lt,attn EMBEDSERVE_GEMM_TUNE=0)
arm_env() {  # arm_env ARM: the environment assignments of BASE, ATTN or NEW
  case $1 in BASE) echo "${BASE_ENV[@]}" ;; ATTN) echo "${ATTN_ENV[@]}" ;; *) echo "" ;; esac
}

step "1. build"
ab_build
ab_machine

step "2. fused_kernels_test"
ab_kernel_tests

T1024='BM_Embed/fp16/batch:1024/tokens:16/'
step "3. BM_Embed fp16 1,024 x 16: BASE / ATTN / NEW, twice (median of $REPS each)"
for round in 1 2; do
  for arm in BASE ATTN NEW; do embed "${arm,,}$round" "$(arm_env $arm)" "$T1024" "$REPS" $arm; done
done
grep -hE "model .* loaded" "$RAW/embed_new1.log" | head -1
pack

step "4. forward_profile BASE / ATTN / NEW (Kineto, 30 calls each)"
for arm in BASE ATTN NEW; do
  tag=${arm,,}
  # shellcheck disable=SC2046
  env $(arm_env $arm) "$B/bench/model/forward_profile" --precision=fp16 --batch=1024 \
    --tokens=16 --iters=30 --trace="$RAW/trace_$tag.json" >"$RAW/forward_profile_$tag.log" 2>&1
  echo "forward_profile $tag exit $?"
  grep -E "unprofiled" "$RAW/forward_profile_$tag.log"
  python3 scripts/device/profile_split.py "$RAW/trace_$tag.json" "$arm" | tee "$OUT/profile_$tag.txt"
done
grep -E "gemm [0-9]+ x" "$RAW/forward_profile_new.log" | sed 's/^.*\] //' >"$RAW/tuning.txt"
gzip -f "$RAW"/trace_*.json
pack

if left 330; then
  step "5. served A/B (DURATION $DURATION s per point)"
  P=32/64/1+32/16/1
  base=$(arm_env BASE | tr ' ' ':')
  mkdir -p "$RAW/served"
  ROUNDS="BASE1:8:1024:$P:$base NEW1:8:1024:$P BASE2:8:1024:$P:$base NEW2:8:1024:$P" \
    DURATION=$DURATION BUILD_DIR=$B OUT="$RAW/served" scripts/device/reqpath_ab.sh 2>&1 |
    grep -vE "^\[bench\] waiting|^\[cpu\]"
  pack
fi

if left 440; then
  step "6. bert_backend_test CUDA cases, defaults (NEW)"
  ab_backend_cuda_tests new
fi

if left 460; then
  step "7. other shapes: BASE / NEW (median of 3)"
  OTHER='BM_Embed/(fp16|bf16)/batch:(1|32|128)/tokens:(16|128)/|BM_Embed/(bf16|fp32)/batch:1024/tokens:16/'
  embed other_base "$(arm_env BASE)" "$OTHER" 3 BASE
  embed other_new "" "$OTHER" 3 NEW
  pack
fi

if left 540; then
  step "8. graph_buckets_bench fp16: BASE / NEW"
  ab_synthetic_model
  model=$SYNTH_MODEL
  for arm in BASE NEW; do
    # shellcheck disable=SC2046
    env $(arm_env $arm) EMBEDSERVE_BENCH_MODEL=$model "$B/bench/model/graph_buckets_bench" fp16 5 \
      2>"$RAW/graph_buckets_$arm.err" | tee "$RAW/graph_buckets_$arm.txt" | tail -14
  done
fi
step "done"
pack
