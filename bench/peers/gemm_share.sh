#!/usr/bin/env bash
# One round of the GEMM share, like for like: the ceiling kernel (linear_kernels_bench's
# kernel 3, Fp32Linear n 1536 x k 384 at M 512, 2 threads, 1 s), embedserve fp32 in
# process at batch 32 (embedserve-bench-inprocess, Embed of 32 texts per call), the
# ceiling kernel again. The share is embedserve's linear-layer FLOP rate over the higher
# of the two ceiling readings just around it, so the VM's drift (up to ~20% between
# minutes) falls on both sides alike instead of comparing a ceiling read once with an
# embedserve rate read minutes later; the higher one, because a 1 s reading that another
# process disturbed (seen: 225 against 449 GF/s a minute apart) would otherwise inflate
# the share. bench/peers/run.sh runs one round per in-process
# round; several calls with different --round names make a standalone series.
# Usage: bench/peers/gemm_share.sh --round NAME --pairs FILE [--duration-s S]
#          [--config YAML] [--out DIR]
# Env: INPROCESS_BIN (default build/tools/bench/embedserve-bench-inprocess), e.g. to
# alternate two builds.
# Appends one row to OUT/rounds.txt (round, ceiling before, texts/s, tokens per text,
# GFLOP/s, ceiling after, share) and keeps the benches' files as OUT/<kind>_<round>.*.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUND=""
PAIRS=""
DURATION=5
CONFIG=experiments/minilm_batching.yaml
OUT=results/gemm-share/$(date -u +%Y%m%dT%H%M%SZ)
BIN=${INPROCESS_BIN:-build/tools/bench/embedserve-bench-inprocess}
while [ $# -gt 0 ]; do
  case $1 in
    --round) ROUND=$2; shift 2 ;;
    --pairs) PAIRS=$2; shift 2 ;;
    --duration-s) DURATION=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "gemm_share.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$ROUND" ] || [ -z "$PAIRS" ]; then
  echo "gemm_share.sh: --round and --pairs are required" >&2; exit 2
fi
# libgomp's wait policy as bench/peers/run.sh and the server binary pick it.
if [ -z "${OMP_WAIT_POLICY:-}" ] && [ -z "${GOMP_SPINCOUNT:-}" ]; then
  export GOMP_SPINCOUNT=10000
fi
mkdir -p "$OUT"

ceiling() {  # ceiling FILE: the ceiling kernel's GF/s (wall time) into FILE (json)
  EMBEDSERVE_BENCH_THREADS=2 build/bench/model/linear_kernels_bench \
    --benchmark_filter='BM_Linear/kernel:3/bits:32/n:1536/k:384' \
    --benchmark_format=json --benchmark_out="$1" --benchmark_out_format=json \
    --benchmark_min_time=1 >/dev/null 2>&1
}
ceiling "$OUT/ceiling_before_$ROUND.json"
"$BIN" --config "$CONFIG" --method embed --batch-sizes 32 --duration-s "$DURATION" \
  --warmup-s 2 --pairs-file "$PAIRS" --out-dir "$OUT/embedserve_fp32_$ROUND" \
  >"$OUT/embedserve_fp32_$ROUND.log" 2>&1
ceiling "$OUT/ceiling_after_$ROUND.json"

/usr/bin/python3 - "$OUT" "$ROUND" <<'EOF'
import json, os, sys
out, rnd = sys.argv[1], sys.argv[2]
FLOP_PER_TOKEN = 2 * 12 * 384 * 384 * 6  # all-MiniLM-L6-v2's linear layers (report.py)
def gf(path):
    b = [b for b in json.load(open(path))["benchmarks"] if b.get("run_type") != "aggregate"][0]
    return b["GF/s"] / 1e9 if b["GF/s"] > 1e6 else b["GF/s"]
before = gf(os.path.join(out, f"ceiling_before_{rnd}.json"))
after = gf(os.path.join(out, f"ceiling_after_{rnd}.json"))
p = json.load(open(os.path.join(out, f"embedserve_fp32_{rnd}", "inprocess.json")))["points"][0]
texts, tokens = p["items_per_s"], p["tokens_per_item"]
model = texts * tokens * FLOP_PER_TOKEN / 1e9
share = model / max(before, after)
path = os.path.join(out, "rounds.txt")
new = not os.path.exists(path)
with open(path, "a") as f:
    if new:
        f.write("| round | ceiling before GF/s | embedserve fp32 b32 texts/s | tokens/text | GFLOP/s | ceiling after GF/s | share |\n")
        f.write("|---|---|---|---|---|---|---|\n")
    row = f"| {rnd} | {before:.1f} | {texts:.1f} | {tokens:.2f} | {model:.1f} | {after:.1f} | {100 * share:.1f}% |"
    f.write(row + "\n")
print("[gemm_share]", row)
EOF
