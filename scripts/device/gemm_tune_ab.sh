#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14, GEMM algorithms tuned at load): one build, the
# tuning switched per process by EMBEDSERVE_GEMM_TUNE (OFF: 0, ATen/cuBLAS's per-call
# choice, the path every earlier figure was measured on; ON: 1, src/model/tuned_gemm.h).
# In order, each step only while time is left in a 10-minute call:
#   1. build (build_and_test.sh, SKIP_TESTS=1)
#   2. BM_Embed fp16 1,024 x 16 (model only, synthetic minilm-l6), OFF / ON / OFF / ON,
#      median of $REPS each, one process per row
#   3. forward_profile OFF and ON: a Kineto (CUPTI) trace of 30 Embed calls each, split by
#      profile_split.py (GEMMs per shape, attention, LayerNorm, copies, gaps); the ON
#      process's log holds the tuning table (heuristic's first choice against the kept one)
#   4. fidelity: minilm_reference_test's CUDA case OFF and ON (needs models/all-MiniLM-L6-v2,
#      scripts/device/unpack_model.sh)
#   5. served Similarity over gRPC (reqpath_ab.sh, experiments/minilm_gpu_fp16.yaml),
#      batch 32 at c64 and c16, rounds OFF1 ON1 OFF2 ON2
#   6. bert_backend_test's CUDA cases with ON (graphs against the eager path, fixtures)
#   7. BM_Embed at other shapes and bf16, OFF / ON (median of 3)
# Device call: the commit packed as src.tgz (git archive | gzip) in an ignored folder of
# the session checkout, carried with .device/debs; unpacked to /tmp/es, then
#   scripts/device/gemm_tune_ab.sh
# Env: REPS (5), DURATION (served seconds per point, 4), BUILD_DIR (build-gpu).
# Logs to $OUT: run.log (the caller tees), profile_*.txt, raw.tgz (JSON, traces, logs).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=ab_lib.sh
source scripts/device/ab_lib.sh gemm_tune
REPS=${REPS:-5}
DURATION=${DURATION:-4}

step "1. build"
ab_build
ab_machine

# tune VALUE: BM_Embed's environment for EMBEDSERVE_GEMM_TUNE=VALUE (embed's ENV).
tune() { echo "EMBEDSERVE_GEMM_TUNE=$1"; }
T1024='BM_Embed/fp16/batch:1024/tokens:16/'
step "2. BM_Embed fp16 1,024 x 16: OFF / ON / OFF / ON (median of $REPS each)"
embed off1 "$(tune 0)" "$T1024" "$REPS" tune=0
embed on1 "$(tune 1)" "$T1024" "$REPS" tune=1
embed off2 "$(tune 0)" "$T1024" "$REPS" tune=0
embed on2 "$(tune 1)" "$T1024" "$REPS" tune=1
grep -hE "tuned .* GEMM|^\[.*gemm " "$RAW/embed_on1.log" | head -3
pack

step "3. forward_profile OFF / ON (Kineto, 30 calls each)"
for tune in 0 1; do
  tag=$([ $tune = 0 ] && echo off || echo on)
  EMBEDSERVE_GEMM_TUNE=$tune "$B/bench/model/forward_profile" --precision=fp16 --batch=1024 \
    --tokens=16 --iters=30 --trace="$RAW/trace_$tag.json" >"$RAW/forward_profile_$tag.log" 2>&1
  echo "forward_profile $tag exit $?"
  grep -E "unprofiled|profiled" "$RAW/forward_profile_$tag.log"
  python3 scripts/device/profile_split.py "$RAW/trace_$tag.json" "EMBEDSERVE_GEMM_TUNE=$tune" |
    tee "$OUT/profile_$tag.txt"
done
grep -E "gemm [0-9]+ x" "$RAW/forward_profile_on.log" | sed 's/^.*\] //' | tee "$OUT/tuning.txt"
gzip -f "$RAW"/trace_*.json
pack

if left 400 && [ -f models/all-MiniLM-L6-v2/model.safetensors ]; then
  for tune in 0 1; do
    step "4. fidelity: minilm_reference_test *Cuda* with EMBEDSERVE_GEMM_TUNE=$tune"
    EMBEDSERVE_GEMM_TUNE=$tune "$B/tests/model/minilm_reference_test" --gtest_color=no \
      --gtest_filter='*Cuda*' >"$RAW/fidelity_$tune.log" 2>&1
    echo "exit $?"
    grep -E "min cosine|^\[ +(OK|FAILED) +\]" "$RAW/fidelity_$tune.log"
  done
else
  echo "gemm_tune_ab: no fidelity run (models/all-MiniLM-L6-v2 missing or no time)"
fi

if left 380; then
  step "5. served A/B (DURATION $DURATION s per point)"
  P=32/64/1+32/16/1
  mkdir -p "$RAW/served"
  ROUNDS="OFF1:8:1024:$P:EMBEDSERVE_GEMM_TUNE=0 ON1:8:1024:$P:EMBEDSERVE_GEMM_TUNE=1 OFF2:8:1024:$P:EMBEDSERVE_GEMM_TUNE=0 ON2:8:1024:$P:EMBEDSERVE_GEMM_TUNE=1" \
    DURATION=$DURATION BUILD_DIR=$B OUT="$RAW/served" scripts/device/reqpath_ab.sh 2>&1 |
    grep -vE "^\[bench\] waiting"
  pack
fi

if left 480; then
  step "6. bert_backend_test CUDA cases with EMBEDSERVE_GEMM_TUNE=1"
  EMBEDSERVE_GEMM_TUNE=1 timeout 60 "$B/tests/model/bert_backend_test" --gtest_color=no \
    --gtest_filter='*Cuda*' >"$RAW/bert_backend_cuda_on.log" 2>&1
  echo "exit $?"
  grep -E "^\[ +(OK|FAILED|SKIPPED) +\]" "$RAW/bert_backend_cuda_on.log"
fi

if left 500; then
  step "7. other shapes: OFF / ON (median of 3)"
  OTHER='BM_Embed/(fp16|bf16)/batch:(32|128)/tokens:(16|128)/|BM_Embed/bf16/batch:1024/tokens:16/'
  embed other_off "$(tune 0)" "$OTHER" 3 tune=0
  embed other_on "$(tune 1)" "$OTHER" 3 tune=1
fi
step "done"
pack
