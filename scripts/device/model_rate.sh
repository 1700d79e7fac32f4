#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14, the model-only rate): BM_Embed fp16 1,024 x 16
# (bench/model/model_bench, synthetic minilm-l6) with one caller as before, with CUDA
# graphs up to 1,024 sequences, and with 2 and 3 callers at once (as the server's
# batching.workers) on the default stream and on streams of their own; twice, alternated;
# then Hugging Face's BertModel fp16 sdpa and under torch.compile in the same call
# (hf_bert_bench.py), and, while time is left, the two-instance served run of issue 16 on
# this one GPU (two_gpus.sh with DEVICES_B="[cuda:0, cuda:0]").
# Device call: carry [".device/debs"]: scripts/device/model_rate.sh
# Env: REPS (repetitions per row, median printed; 5), BUILD_DIR (build-gpu).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=ab_lib.sh
source scripts/device/ab_lib.sh model_rate
REPS=${REPS:-5}
T='BM_Embed/fp16/batch:1024/tokens:16/'

step "1. build"
ab_build
ab_machine

step "2. BM_Embed fp16 1,024 x 16, one caller / graphs to 1,024 / 2 and 3 callers (median of $REPS)"
for r in 1 2; do
  embed "one$r" "" "$T" "$REPS" "1 caller (defaults)"
  embed "graph$r" "EMBEDSERVE_BENCH_GRAPH_MAX_BATCH=1024" "$T" "$REPS" "1 caller, graphs to 1024"
  embed "two$r" "EMBEDSERVE_BENCH_CALLERS=2" "$T" "$REPS" "2 callers, default stream"
  embed "twos$r" "EMBEDSERVE_BENCH_CALLERS=2 EMBEDSERVE_BENCH_STREAMS=1" "$T" "$REPS" \
    "2 callers, own streams"
  embed "threes$r" "EMBEDSERVE_BENCH_CALLERS=3 EMBEDSERVE_BENCH_STREAMS=1" "$T" "$REPS" \
    "3 callers, own streams"
done
pack

step "3. Hugging Face BertModel fp16 1,024 x 16: sdpa, torch.compile"
python3 scripts/device/hf_bert_bench.py --variants sdpa,compile --dtype fp16 2>&1 |
  grep -E "^card|^HF" | tee "$RAW/hf.txt"
step "4. BM_Embed one caller and 2 callers (own streams) again, after the peers"
embed one3 "" "$T" "$REPS" "1 caller (defaults)"
embed twos3 "EMBEDSERVE_BENCH_CALLERS=2 EMBEDSERVE_BENCH_STREAMS=1" "$T" "$REPS" "2 callers, own streams"
pack

if left 400; then
  step "5. issue 16 on one GPU: model.devices [cuda:0] vs [cuda:0, cuda:0]"
  SKIP_BUILD=1 DEVICES_B="[cuda:0, cuda:0]" RAW=$RAW/two_gpus START=$START \
    scripts/device/two_gpus.sh 2>&1 | grep -vE "^=== 1|^commit|^torch"
fi
step "done"
pack
