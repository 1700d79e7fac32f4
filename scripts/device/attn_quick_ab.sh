#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14): a short A/B of the packed attention kernel's second
# form (Q loaded with K and V, shared memory sized by the batch), for a call with little
# device time left: build, fused_kernels_test, bert_backend_test's CUDA cases, BM_Embed
# fp16 1,024 x 16 BASE / NEW / BASE / NEW, the Kineto profile of NEW, other shapes and one
# served pair while time is left (BASE and NEW as in attn_tune_ab.sh).
# Device call: as attn_tune_ab.sh, then scripts/device/attn_quick_ab.sh.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=ab_lib.sh
source scripts/device/ab_lib.sh attn_quick
BASE="EMBEDSERVE_FUSED_KERNELS=ln,gelu_lt EMBEDSERVE_GEMM_TUNE=0"

step "1. build"
ab_build
ab_machine

step "2. tests"
ab_kernel_tests
ab_backend_cuda_tests

step "3. BM_Embed fp16 1,024 x 16: BASE / NEW / BASE / NEW (median of 5)"
T='BM_Embed/fp16/batch:1024/tokens:16/'
embed base1 "$BASE" "$T" 5; embed new1 "" "$T" 5; embed base2 "$BASE" "$T" 5; embed new2 "" "$T" 5
pack

step "4. forward_profile NEW"
"$B/bench/model/forward_profile" --precision=fp16 --batch=1024 --tokens=16 --iters=30 \
  --trace="$RAW/trace_new.json" >"$RAW/forward_profile_new.log" 2>&1
grep -E "unprofiled" "$RAW/forward_profile_new.log"
python3 scripts/device/profile_split.py "$RAW/trace_new.json" NEW | tee "$OUT/profile_new.txt" | head -16
gzip -f "$RAW"/trace_*.json
pack

if left 200; then
  step "5. served batch 32 at c64 and c16: BASE / NEW"
  P=32/64/1+32/16/1
  ROUNDS="BASE1:8:1024:$P:${BASE// /:} NEW1:8:1024:$P" DURATION=4 BUILD_DIR=$B \
    OUT="$RAW/served" scripts/device/reqpath_ab.sh 2>&1 | grep -E "^\[.*bench\] 1/1|=== round"
  pack
fi
if left 230; then
  step "6. other shapes: BASE / NEW (median of 3)"
  OTHER='BM_Embed/(fp16|bf16)/batch:(32|128)/tokens:(16|128)/|BM_Embed/(bf16|fp32)/batch:1024/tokens:16/'
  embed other_base "$BASE" "$OTHER" 3
  embed other_new "" "$OTHER" 3
fi
step "done"
pack
