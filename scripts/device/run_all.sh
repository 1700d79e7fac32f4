#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: everything docs/gpu.md reports, in one call.
#   1. build_and_test.sh: build against python3's LibTorch (CUDA) + carried gRPC, ctest
#   2. st_vs_embed.py: synthetic minilm-l6, sentence-transformers vs embedserve-embed
#   3. bench_gpu.sh: bench/model at fp16 1,024 x 16 + HF BertModel, same card, same run
#      (twice, to show the spread), then the whole CUDA grid of bench/model once
#   4. tokenizer_vs_hf.py: our tokenizer_bench and HF tokenizers, one thread each
# From this machine:  scripts/device/fetch_debs.sh && scripts/device/snapshot.sh
#   then device run, carry [".device"]: scripts/device/from_snapshot.sh scripts/device/run_all.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-$(pwd)/device-out}; export OUT
mkdir -p "$OUT"
scripts/device/build_and_test.sh > "$OUT/build_and_test.log" 2>&1
echo "build_and_test: exit $?"
grep -E "tests passed|Test +#.*(Failed|SEGFAULT|Exception|Timeout)|\[ +(OK|SKIPPED|FAILED) +\]|build FAILED|configure FAILED" \
  "$OUT/build_and_test.log" | head -30
source scripts/device/env.sh
python3 scripts/device/st_vs_embed.py --build build-gpu --device cuda > "$OUT/st_vs_embed.log" 2>&1
echo "st_vs_embed: exit $?"; tail -4 "$OUT/st_vs_embed.log"
for i in 1 2; do
  BENCH_TAG=target$i REPS=7 scripts/device/bench_gpu.sh 2>&1 | grep -E "card|median|HF"
done
BENCH_TAG=grid REPS=1 SKIP_HF=1 FILTER='BM_Embed/' scripts/device/bench_gpu.sh > /dev/null 2>&1
grep -E "^BM_Embed" "$OUT/grid.log" | awk '{printf "%-60s %10s\n", $1, $(NF-5)}' | head -40
echo "tokenizer on: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores"
python3 scripts/device/tokenizer_vs_hf.py --tokenizer tests/data/tokenizer/tokenizer.json \
  --sentences bench/data/english_sentences.txt \
  --ours build-gpu/bench/tokenizer/tokenizer_bench > "$OUT/tokenizer_vs_hf.log" 2>&1
echo "tokenizer_vs_hf: exit $?"; grep -E "HF encode each|ours encode each|ratio|fingerprint" "$OUT/tokenizer_vs_hf.log"
# The device tool brings back at most 8 files: pack every log into one.
(cd "$OUT" && tar -czf all_logs.tgz --exclude=all_logs.tgz ./*.log ./*.json ./*.jsonl 2>/dev/null; \
 find . -maxdepth 1 -type f ! -name all_logs.tgz ! -name build_and_test.log ! -name st_vs_embed.log \
   ! -name tokenizer_vs_hf.log ! -name grid.log -delete)
