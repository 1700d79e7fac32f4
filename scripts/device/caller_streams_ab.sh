#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14): a stream per calling thread (the backend's default)
# against one shared stream (EMBEDSERVE_CUDA_CALLER_STREAMS=0): the CUDA tests of
# bert_backend_test (the concurrent-callers case among them), BM_Embed fp16 1,024 x 16 with
# 1 / 3 callers each way (model_rate.sh's rows, one round), and served Similarity over gRPC
# (reqpath_ab.sh, synthetic minilm-l6) with the server's 2 workers each way, alternated:
# batch 32 at c64 and c128, batch 1 at c256 and c1 (16 client channels).
# Device call: carry [".device/debs"]: scripts/device/caller_streams_ab.sh
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=ab_lib.sh
source scripts/device/ab_lib.sh caller_streams
step "1. build"
ab_build
ab_machine
step "2. CUDA tests"
ab_backend_cuda_tests
ab_kernel_tests | head -3
T='BM_Embed/fp16/batch:1024/tokens:16/'
step "3. BM_Embed fp16 1,024 x 16 (median of 5)"
embed one "" "$T" 5 "1 caller"
embed threed "EMBEDSERVE_BENCH_CALLERS=3 EMBEDSERVE_CUDA_CALLER_STREAMS=0" "$T" 5 "3 callers, default stream"
embed threes "EMBEDSERVE_BENCH_CALLERS=3" "$T" 5 "3 callers, own streams"
embed oned "EMBEDSERVE_CUDA_CALLER_STREAMS=0" "$T" 5 "1 caller, default stream"
pack
step "4. served: shared stream (SHARED) / own streams (OWN), alternated"
P=32/64/16+32/128/16+1/256/16+1/1/1
ROUNDS="SHARED1:8:1024:$P:EMBEDSERVE_CUDA_CALLER_STREAMS=0 OWN1:8:1024:$P SHARED2:8:1024:$P:EMBEDSERVE_CUDA_CALLER_STREAMS=0 OWN2:8:1024:$P" \
  DURATION=4 BUILD_DIR=$B OUT="$RAW/served" scripts/device/reqpath_ab.sh 2>&1 |
  grep -E "^\[.*(bench\] 1/1)|=== round" | sed -E 's/\| tokens.*//'
step "done"
pack
