#!/usr/bin/env bash
# The CPU kernels of two builds at each instruction set, alternated in one run: for ROUNDS
# rounds, OLD then NEW, each under EMBEDSERVE_CPU_ISA=avx512, avx2 and baseline (the
# variant the attention and fused kernels pick; oneDNN's GEMMs ignore it):
#   attention_bench   one layer's packed attention, fp32, one thread, 32 sequences of
#                     16, 10-32 and 128 tokens (ms per call)
#   forward_ops_bench BM_ForwardSteps: the batch-32 fp32 forward step by step, 2 threads
#   embedserve-bench-inprocess  the real model, Similarity batch 32 (pairs/s), fp32
#                     (experiments/minilm_batching.yaml) and int8 (minilm_quantized.yaml)
#                     under avx512 and avx2
# Usage: bench/model/isa_ab.sh OLD_BUILD_DIR NEW_BUILD_DIR [OUT_FILE]
# Env: ROUNDS (2), MODEL (models/all-MiniLM-L6-v2). Prints one line per measurement.
set -euo pipefail
cd "$(dirname "$0")/../.."
OLD=${1:?usage: bench/model/isa_ab.sh OLD_BUILD_DIR NEW_BUILD_DIR [OUT_FILE]}
NEW=${2:?usage: bench/model/isa_ab.sh OLD_BUILD_DIR NEW_BUILD_DIR [OUT_FILE]}
OUT=${3:-/dev/null}
ROUNDS=${ROUNDS:-2}
MODEL=${MODEL:-models/all-MiniLM-L6-v2}
echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;" \
  "flags: $(grep -m1 -o -w -E 'avx512f|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')" | tee "$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for side in old new; do
    b=$OLD
    [ "$side" = new ] && b=$NEW
    for isa in avx512 avx2 baseline; do
      EMBEDSERVE_CPU_ISA=$isa EMBEDSERVE_BENCH_THREADS=1 "$b/bench/model/attention_bench" \
        --benchmark_filter='packed:1/bf16:0' --benchmark_min_time=0.5 2>/dev/null | grep '^BM_' |
        awk -v r="$round" -v s="$side" -v i="$isa" '{split($1, a, "/");
          printf "%s %s %-8s attention %s/%s/%s: %s ms\n", r, s, i, a[4], a[5], a[6], $2}'
      EMBEDSERVE_CPU_ISA=$isa EMBEDSERVE_BENCH_THREADS=2 "$b/bench/model/forward_ops_bench" \
        --benchmark_filter='BM_ForwardSteps' --benchmark_min_time=1 2>/dev/null | grep '^BM_' |
        python3 -c '
import re, sys
line = sys.stdin.read()
def us(key):
    m = re.search(key + r" us=([0-9.]+)(k?)", line)
    return float(m.group(1)) * (1000 if m.group(2) else 1)
r, s, i = sys.argv[1:]
steps = ("forward", "embed", "ln1", "ln2", "attention", "ffn_in")
print(f"{r} {s} {i:8s} forward_steps (us):", ", ".join(f"{k} {us(k):.0f}" for k in steps))' \
          "$round" "$side" "$isa"
    done
    for isa in avx512 avx2; do
      for experiment in minilm_batching minilm_quantized; do
        EMBEDSERVE_CPU_ISA=$isa "$b/tools/bench/embedserve-bench-inprocess" \
          --config "experiments/$experiment.yaml" --model "$MODEL" --batch-sizes 32 \
          --duration-s 4 --warmup-s 1 2>&1 | grep 'pairs/s' | tail -1 |
          sed -E "s/^\[inprocess\] /$round $side $(printf '%-8s' $isa) inprocess /; s/ [0-9.]+ calls\/s.*//"
      done
    done
  done
done | tee -a "$OUT"
