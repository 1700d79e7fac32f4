#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14, the model-only rate): BM_Embed fp16 1,024 x 16
# (bench/model/model_bench, synthetic minilm-l6) with one caller as before and with 2, 3
# and 4 callers at once (as the server's batching.workers) on streams of their own and
# on the default stream (ROWS); twice, alternated;
# then Hugging Face's BertModel fp16 sdpa and under torch.compile in the same call
# (hf_bert_bench.py), and, while time is left, the two-instance served run of issue 16 on
# this one GPU (two_gpus.sh with DEVICES_B="[cuda:0, cuda:0]").
# Device call: carry [".device/debs"]: scripts/device/model_rate.sh
# Env: REPS (repetitions per row, median printed; 5), ROUNDS (2), ROWS (below),
# SKIP_TWO_GPUS=1 (no step 5), BUILD_DIR (build-gpu). sentences/s is the callers' total.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=ab_lib.sh
source scripts/device/ab_lib.sh model_rate
REPS=${REPS:-5}
ROUNDS=${ROUNDS:-2}
T='BM_Embed/fp16/batch:1024/tokens:16/'

step "1. build"
ab_build
ab_machine

# A row: TAG|ENV|LABEL; every row runs once per round, ROUNDS rounds, alternated.
ROWS=${ROWS:-"one||1 caller (defaults)
twos|EMBEDSERVE_BENCH_CALLERS=2|2 callers, own streams
threes|EMBEDSERVE_BENCH_CALLERS=3|3 callers, own streams
threed|EMBEDSERVE_BENCH_CALLERS=3 EMBEDSERVE_CUDA_CALLER_STREAMS=0|3 callers, default stream
fours|EMBEDSERVE_BENCH_CALLERS=4|4 callers, own streams"}
step "2. BM_Embed fp16 1,024 x 16 per row of ROWS, $ROUNDS rounds (median of $REPS)"
for r in $(seq 1 "$ROUNDS"); do
  while IFS='|' read -r tag env_set label; do
    [ -n "$tag" ] && embed "$tag$r" "$env_set" "$T" "$REPS" "$label"
  done <<<"$ROWS"
done
pack

step "3. Hugging Face BertModel fp16 1,024 x 16: sdpa, torch.compile"
python3 scripts/device/hf_bert_bench.py --variants sdpa,compile --dtype fp16 2>&1 |
  grep -E "^card|^HF" | tee "$RAW/hf.txt"
step "4. BM_Embed one caller and 3 callers (own streams) again, after the peers"
embed one_after "" "$T" "$REPS" "1 caller (defaults)"
embed threes_after "EMBEDSERVE_BENCH_CALLERS=3" "$T" "$REPS" \
  "3 callers, own streams"
pack

if [ "${SKIP_TWO_GPUS:-0}" != 1 ] && left 400; then
  step "5. issue 16 on one GPU: model.devices [cuda:0] vs [cuda:0, cuda:0]"
  SKIP_BUILD=1 DEVICES_B="[cuda:0, cuda:0]" RAW=$RAW/two_gpus START=$START \
    scripts/device/two_gpus.sh 2>&1 | grep -vE "^=== 1|^commit|^torch"
fi
step "done"
pack
