#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14): the packed attention kernel's tensor-core form (NEW,
# the defaults) against its SIMT form (BASE: EMBEDSERVE_FUSED_KERNELS=ln,gelu_lt,attn_simt,
# the kernel main ran before; everything else at the defaults), one build, switched per
# process. In order, the optional steps only while time is left in a 10-minute call:
#   1. the build (ab_build) in the background, meanwhile packed_attention_bench built by
#      nvcc alone and run: both forms against an fp64 reference, then us per launch
#   2. fused_kernels_test, bert_backend_test's CUDA cases (NEW)
#   3. BM_Embed fp16 1,024 x 16 BASE / NEW / BASE / NEW (median of $REPS each), then bf16
#   4. forward_profile BASE / NEW: Kineto traces split by profile_split.py (us per Embed)
#   5. BM_Embed fp16/bf16 at 32 x 16, 128 x 16, 32 x 128: BASE / NEW / BASE / NEW
#   6. served Similarity batch 32 at c64 and c16 (reqpath_ab.sh): BASE1 NEW1 BASE2 NEW2
#   7. graph_buckets_bench fp16 BASE / NEW (graph replay and eager per batch shape)
# Device call (the working tree travels): carry [".device/debs"], command
#   EMBEDSERVE_GIT_COMMIT=<commit> OUT=$OUT scripts/device/attn_mma_ab.sh 2>&1 | tee $OUT/run.log
# Env: REPS (5), DURATION (served seconds per point, 4), STEPS (the optional steps to run,
#      default "4 5 6 7").
# Back in $OUT: run.log, packed_attention_bench.txt, profile_*.txt, raw.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=ab_lib.sh
source scripts/device/ab_lib.sh attn_mma
REPS=${REPS:-5}
DURATION=${DURATION:-4}
STEPS=${STEPS:-4 5 6 7}
BASE_ENV="EMBEDSERVE_FUSED_KERNELS=ln,gelu_lt,attn_simt"
arm_env() { [ "$1" = BASE ] && echo "$BASE_ENV"; }
want() { [[ " $STEPS " == *" $1 "* ]]; }

step "1. build (background) and packed_attention_bench (nvcc alone)"
# env.sh unpacks the carried libraries once, here, before the build's own source of it.
# shellcheck source=env.sh
source scripts/device/env.sh || exit 1
ab_build >"$RAW/ab_build.out" 2>&1 &
build_pid=$!
nvcc -O3 -std=c++17 -arch=sm_90 -Isrc/model bench/model/packed_attention_bench.cu \
  src/model/fused_kernels.cu -o /tmp/packed_attention_bench 2>&1 | tail -20
/tmp/packed_attention_bench 2>&1 | tee "$OUT/packed_attention_bench.txt"
echo "packed_attention_bench exit ${PIPESTATUS[0]}"
wait "$build_pid" || { cat "$RAW/ab_build.out"; pack; exit 1; }
ab_machine

step "2. tests"
ab_kernel_tests
ab_backend_cuda_tests
pack

step "3. BM_Embed 1,024 x 16: BASE / NEW / BASE / NEW (median of $REPS each), fp16 then bf16"
for p in fp16 bf16; do
  for round in 1 2; do
    for arm in BASE NEW; do
      embed "${p}_${arm,,}$round" "$(arm_env $arm)" "BM_Embed/$p/batch:1024/tokens:16/" "$REPS" $arm
    done
  done
done
grep -hE "model .* loaded" "$RAW/embed_fp16_base1.log" "$RAW/embed_fp16_new1.log" | sed 's/^.*loaded from [^:]*: //'
pack

if want 4 && left 330; then
  step "4. forward_profile BASE / NEW (Kineto, 30 calls of fp16 1,024 x 16 each)"
  for arm in BASE NEW; do
    tag=${arm,,}
    # shellcheck disable=SC2046
    env $(arm_env $arm) "$B/bench/model/forward_profile" --precision=fp16 --batch=1024 \
      --tokens=16 --iters=30 --trace="$RAW/trace_$tag.json" >"$RAW/forward_profile_$tag.log" 2>&1
    echo "forward_profile $tag exit $?"
    grep -E "unprofiled" "$RAW/forward_profile_$tag.log"
    python3 scripts/device/profile_split.py "$RAW/trace_$tag.json" "$arm" |
      tee "$OUT/profile_$tag.txt" | head -14
  done
  gzip -f "$RAW"/trace_*.json
  pack
fi

if want 5 && left 380; then
  step "5. other shapes: BASE / NEW / BASE / NEW (median of $REPS each)"
  OTHER='BM_Embed/(fp16|bf16)/batch:(32|128)/tokens:16/|BM_Embed/(fp16|bf16)/batch:32/tokens:128/'
  for round in 1 2; do
    for arm in BASE NEW; do embed "other_${arm,,}$round" "$(arm_env $arm)" "$OTHER" "$REPS" $arm; done
  done
  pack
fi

if want 6 && left 440; then
  step "6. served batch 32 at c64 and c16: BASE1 NEW1 BASE2 NEW2 ($DURATION s per point)"
  P=32/64/1+32/16/1
  mkdir -p "$RAW/served"
  ROUNDS="BASE1:8:1024:$P:$BASE_ENV NEW1:8:1024:$P BASE2:8:1024:$P:$BASE_ENV NEW2:8:1024:$P" \
    DURATION=$DURATION BUILD_DIR=$B OUT="$RAW/served" scripts/device/reqpath_ab.sh 2>&1 |
    grep -vE "^\[bench\] waiting|^\[cpu\]"
  pack
fi

if want 7 && left 510; then
  step "7. graph_buckets_bench fp16: BASE / NEW"
  ab_synthetic_model
  model=$SYNTH_MODEL
  for arm in BASE NEW; do
    # shellcheck disable=SC2046
    env $(arm_env $arm) EMBEDSERVE_BENCH_MODEL=$model "$B/bench/model/graph_buckets_bench" fp16 5 \
      2>"$RAW/graph_buckets_$arm.err" | tee "$RAW/graph_buckets_$arm.txt" | tail -24
  done
fi
step "done"
pack
